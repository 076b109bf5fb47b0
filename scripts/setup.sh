#!/usr/bin/env bash
# Create .venv with the CPU build of torch first (so nothing pulls CUDA wheels), then GliomaMTLLib.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all]"
.venv/bin/python -c "import torch, monai, SimpleITK; print(f'torch {torch.__version__}, monai {monai.__version__}, SimpleITK {SimpleITK.Version_VersionString()}')"
