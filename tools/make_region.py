"""Copy a region (first N images of some classes) and a holdout (the next M) into folders.

`--skip K` starts after the first K images of each class (tools/train_vit.py trains on the
first 800 of each CIFAR-10 class).

Example, the CIFAR-10 acceptance region:
    python tools/make_region.py --source ../shared/data/cifar10/test --classes airplane,ship \
        --count 10 --holdout-count 100 --out build/cifar_airplane_ship
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def make_region(
    source: Path, classes: list[str], count: int, holdout_count: int, out: Path, skip: int = 0
) -> None:
    for name in classes:
        files = sorted(p for p in (source / name).iterdir() if p.is_file())[skip:]
        if len(files) < count + holdout_count:
            raise SystemExit(f"{source / name}: only {len(files)} images")
        for part, chosen in (
            ("region", files[:count]),
            ("holdout", files[count : count + holdout_count]),
        ):
            folder = out / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy2(path, folder / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="one sub-folder per class")
    parser.add_argument("--classes", required=True, help="comma-separated class folder names")
    parser.add_argument("--count", type=int, default=10, help="region images per class")
    parser.add_argument("--holdout-count", type=int, default=100, help="holdout per class")
    parser.add_argument("--skip", type=int, default=0, help="images per class to pass over")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    make_region(
        args.source, args.classes.split(","), args.count, args.holdout_count, args.out, args.skip
    )


if __name__ == "__main__":
    main()
