#!/usr/bin/env bash
# One check of chainx on a fresh GPU machine, in under 8 minutes: install, run the tests
# that touch the device, and time a ResNet-50 extract, the scored step against a plain
# forward+backward, and a 4-trial sweep with one worker per GPU. Prints one summary table.
# The extract keeps 5 % of the filters (--keep-ratio 0.05), as chainx's chains do.
#
#   bash tools/gpu_check.sh                       # on the GPU machine
#   bash tools/gpu_check.sh --device cpu --short  # the same steps, small, on a CPU (CI)
#   PYTHONPATH=$PWD:/tmp/site bash tools/gpu_check.sh --python python3  # no package index
#
# --short: ResNet-18 at 64 px on 4 images with 60 + 20 steps, the step at batch 4 and a
# 2-trial sweep of the MNIST sample; --no-install: use the existing .venv; --python PATH:
# use this interpreter and install nothing, for a machine that cannot reach a package
# index but whose python has torch (chainx's other packages carried as wheels onto
# PYTHONPATH, as docs/performance.md section 5 did on the H200).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
short=0
install=1
py=.venv/bin/python
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --short) short=1; shift ;;
        --no-install) install=0; shift ;;
        --python) py="$2"; install=0; shift 2 ;;
        *) echo "gpu_check.sh: unknown option $1 (--device cpu|cuda, --short, --no-install, --python PATH)" >&2; exit 2 ;;
    esac
done

if [[ $install == 1 ]]; then
    bash tools/setup.sh
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -a rows

since() { # whole seconds since a `date +%s%N` mark
    echo $(( ($(date +%s%N) - $1) / 1000000000 ))
}

if [[ $short == 1 ]]; then
    arch=resnet18 size=64 images=4 steps=60 finetune=20 batch=4 trials=2
else
    arch=resnet50 size=224 images=20 steps=300 finetune=100 batch=20 trials=4
fi
workers=1
if [[ $device == cuda ]]; then
    workers=$($py -c "import torch; print(max(1, torch.cuda.device_count()))")
fi

echo "== tests that touch the device ($device)"
CHAINX_TEST_DEVICE=$device $py -m pytest -q tests/test_device.py
rows+=("device tests|passed")

echo "== $arch, random weights, $size px"
$py - "$arch" "$size" "$work/model.onnx" <<'EOF'
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, "tools")
from torch_export import export_classifier

arch, size, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
torch.manual_seed(0)
export_classifier(getattr(torchvision.models, arch)(weights=None), (1, 3, size, size), out)
EOF
mkdir -p "$work/region/a" "$work/region/b"
half=$((images / 2))
for class in 3 8; do
    ls sample_models/mnist_holdout/$class | sort | head -n $half |
        while read -r file; do cp "sample_models/mnist_holdout/$class/$file" "$work/region/$([[ $class == 3 ]] && echo a || echo b)/"; done
done

echo "== extract: $images images, $steps + $finetune steps"
mark=$(date +%s%N)
$py -m chainx extract "$work/model.onnx" "$work/region" --size "$size" --resize "$size" \
    --steps "$steps" --finetune-steps "$finetune" --keep-ratio 0.05 --filter-images 0 --device "$device" \
    --out "$work/chain" >"$work/extract.log" 2>&1 || { cat "$work/extract.log"; exit 1; }
extract_s=$(since "$mark")
optimise_s=$($py -c "import json; print(round(json.load(open('$work/chain/chain.json'))['timings']['optimise_s'], 1))")
rows+=("extract $arch ($size px, $images images, $steps + $finetune steps)|$extract_s s wall, optimisation $optimise_s s")

echo "== scored step against a plain forward+backward, batch $batch"
$py tools/bench_step.py --model "$work/model.onnx" --batch "$batch" --repeats 6 --device "$device" | tee "$work/step.log"
ratio=$(awk '/^ratio/ {print $2}' "$work/step.log")
step_ms=$(awk '/^scored step/ {print $(NF-1)}' "$work/step.log")
rows+=("scored step / plain step, batch $batch|$ratio ($step_ms ms a step)")

echo "== sweep: $trials trials of the MNIST sample, $workers worker(s)"
mark=$(date +%s%N)
$py -m chainx sweep sample_models/mnist_resnet.onnx sample_models/mnist_holdout \
    --trials "$trials" --workers "$workers" --per-class 5 --resize 28 --steps 100 \
    --finetune-steps 20 --device "$device" --out "$work/sweep" >"$work/sweep.log" 2>&1 ||
    { cat "$work/sweep.log"; exit 1; }
rows+=("sweep, $trials trials, $workers worker(s)|$(since "$mark") s wall")

echo
echo "| chainx on $device ($($py -c "import torch; print(torch.cuda.get_device_name(0) if '$device' == 'cuda' else 'CPU')")) | result |"
echo "| --- | --- |"
for row in "${rows[@]}"; do
    echo "| ${row%%|*} | ${row#*|} |"
done
