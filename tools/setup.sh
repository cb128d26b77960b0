#!/usr/bin/env bash
# Set up chainx on a fresh Debian/Ubuntu machine: graphviz (and chromium, which the report
# test renders report.html in) from apt, then a virtualenv in .venv with chainx, its test
# tools, Ray (for `chainx sweep --ray`) and the packages the tools/ scripts use.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq graphviz >/dev/null
    # Chromium is only for the headless report test, which skips without it.
    $sudo apt-get install -y -qq chromium >/dev/null \
        || echo "setup: chromium could not be installed; the report test will be skipped" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev,tools,ray]"
# TensorFlow for tools/export_keras.py (Keras models through tf2onnx), in its own virtualenv:
# TensorFlow and torch in one process can crash. The Keras zoo tests skip without it.
if [ ! -x .venv-tf/bin/python ]; then
    python3 -m venv .venv-tf
    .venv-tf/bin/pip install -q tensorflow-cpu tf2onnx || {
        rm -rf .venv-tf
        echo "setup: TensorFlow could not be installed; the Keras zoo tests will be skipped" >&2
    }
fi
