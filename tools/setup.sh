#!/usr/bin/env bash
# Set up chainx on a fresh Debian/Ubuntu machine: graphviz from apt, then a virtualenv in
# .venv with chainx, its test tools and the packages the tools/ scripts use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq graphviz >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev,tools]"
