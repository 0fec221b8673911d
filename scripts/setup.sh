#!/usr/bin/env bash
# Create .venv and install flexmdm with its test tools. torch goes first and pinned, so that no
# dependency pulls another build: on the project's machines torch==2.13.0 is the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "flexmdm installed in $(pwd)/.venv"
