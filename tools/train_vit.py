"""Train a small vision transformer on the CIFAR-10 test-set JPEGs and export it to ONNX.

timm's VisionTransformer at 32 px: patch 4 (64 patches and a class token), width 64,
4 blocks of 4 heads, MLP 128. It trains on the first `--train-per-class` images of each
class (sorted by file name) and reports top-1 accuracy on the rest; the input is RGB in
[0, 1] normalised with the ImageNet mean and std (chainx's default preprocessing at 32 px),
which is not part of the graph.

    .venv/bin/python tools/train_vit.py ../shared/data/cifar10/test \\
        --out sample_models/cifar_vit.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

if __package__:  # imported as tools.train_vit
    from tools.export_cifar_resnet import CLASSES, MEAN, STD
    from tools.torch_export import export_and_check
else:  # run as a script: tools/ is first on sys.path
    from export_cifar_resnet import CLASSES, MEAN, STD
    from torch_export import export_and_check

ARCHITECTURE = {
    "img_size": 32,
    "patch_size": 4,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "num_classes": len(CLASSES),
}


def load(folder: Path, per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, test x, test y): the first `per_class` files of each class train."""
    splits: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(CLASSES):
        for index, path in enumerate(sorted((folder / name).glob("*.jpg"))):
            pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
            images, labels = splits["train" if index < per_class else "test"]
            images.append(((pixels - MEAN) / STD).transpose(2, 0, 1))
            labels.append(label)
    arrays = [
        np.stack(images) if images else np.zeros((0, 3, 32, 32), np.float32)
        for images, _ in splits.values()
    ]
    labels = [np.array(found, np.int64) for _, found in splits.values()]
    return arrays[0], labels[0], arrays[1], labels[1]


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 4 pixels (reflection padding)."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    padded = F.pad(batch, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + 32, dx : dx + 32]


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i : i + 500])) for i in range(0, len(x), 500)])
    return float((logits.argmax(1).numpy() == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="cifar10/test, one folder of JPEGs per class")
    parser.add_argument("--out", type=Path, default=Path("sample_models/cifar_vit.onnx"))
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x, y, x_test, y_test = load(args.data, args.train_per_class)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCHITECTURE)
    steps = args.epochs * -(-len(x) // args.batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=steps)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), args.batch):
            index = order[start : start + args.batch]
            batch = augment(torch.from_numpy(x[index.numpy()]), generator)
            loss = F.cross_entropy(
                model(batch), torch.from_numpy(y[index.numpy()]), label_smoothing=0.1
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(
                f"epoch {epoch + 1}: loss {loss.item():.3f}, "
                f"test accuracy {accuracy(model, x_test, y_test):.1%} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    model.eval()
    print(
        f"train accuracy {accuracy(model, x, y):.1%}, test accuracy "
        f"{accuracy(model, x_test, y_test):.1%} on {len(x_test)} images"
    )
    export_and_check(model, torch.from_numpy(x_test[:4]), args.out)


if __name__ == "__main__":
    main()
