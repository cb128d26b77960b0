"""Export the classic He et al. CIFAR-10 ResNet-20/56 (option-A shortcuts) to ONNX.

The input is RGB 32x32 in [0, 1] normalised with the ImageNet mean and std; normalisation is
not part of the graph.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

if __package__:  # imported as tools.export_cifar_resnet
    from tools.torch_export import export_and_check
else:  # run as a script: tools/ is first on sys.path
    from torch_export import export_and_check

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BLOCKS_PER_STAGE = {20: 3, 56: 9}


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn plus shortcut, then ReLU.

    Where the shape changes, the shortcut is "option A": subsample by 2 and zero-pad the
    channel axis. It has no parameters and exports as Slice + Pad, which is kept on purpose.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = planes // 4

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """conv1-bn1-relu, three stages of n BasicBlocks (16/32/64), global average pool, linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_stage(16, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(32, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def load_model(depth: int, weights: Path) -> CifarResNet:
    model = CifarResNet(BLOCKS_PER_STAGE[depth])
    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    # Saved from nn.DataParallel, hence the "module." prefix.
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    # Strict load still passes without num_batches_tracked (an old checkpoint): BatchNorm
    # fills that buffer in itself when the state dict carries no version metadata.
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(path: Path) -> np.ndarray:
    """32x32 image file -> float32 (3, 32, 32), ImageNet-normalised."""
    image = Image.open(path).convert("RGB")
    if image.size != (32, 32):
        raise ValueError(f"{path}: expected a 32x32 image, got {image.size}")
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    return ((rgb - MEAN) / STD).transpose(2, 0, 1)


def check_images(onnx_path: Path, image_dir: Path, per_class: int) -> float:
    """Top-1 accuracy of the ONNX model on the first per_class images of each class folder."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for label, name in enumerate(CLASSES):
        files = sorted((image_dir / name).iterdir())[:per_class]
        batch = np.stack([preprocess(f) for f in files])
        predicted = session.run(["logits"], {"input": batch})[0].argmax(1)
        hits = int((predicted == label).sum())
        print(f"  {name:<10} {hits}/{len(files)}")
        correct += hits
        total += len(files)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, choices=sorted(BLOCKS_PER_STAGE), required=True)
    parser.add_argument("--weights", type=Path, required=True, help="checkpoint (.th)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument(
        "--check-images", type=Path, help="CIFAR-10 test folder with one sub-folder per class"
    )
    parser.add_argument("--per-class", type=int, default=100, help="images per class to check")
    args = parser.parse_args()

    model = load_model(args.depth, args.weights)
    print(f"ResNet-{args.depth}: {sum(p.numel() for p in model.parameters()):,} parameters")
    probe = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    export_and_check(model, probe, args.out)

    if args.check_images:
        accuracy = check_images(args.out, args.check_images, args.per_class)
        print(f"onnxruntime accuracy on {args.per_class} images per class: {accuracy:.2%}")


if __name__ == "__main__":
    main()
