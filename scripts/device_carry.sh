#!/usr/bin/env bash
# Fill .devcarry/ (ignored by git) with what scripts/device_gpu_train.sh needs on the lent GPU
# machine: SimpleITK (xz-compressed, 29 MB instead of its 53 MB wheel, to stay under the 64 MiB a
# call may carry), the MONAI and nibabel wheels for its Python 3.12, and the phantom generator's
# prepared anatomy (made here by any phantom run; 4.5 MB compressed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
mkdir -p .devcarry
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ver() { "$PY" -c "from importlib.metadata import version; print(version('$1'))"; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp" "simpleitk==$(ver SimpleITK)" "monai==$(ver monai)" "nibabel==$(ver nibabel)"
cp "$tmp"/monai-*.whl "$tmp"/nibabel-*.whl .devcarry/
mkdir -p "$tmp/sitk"
(cd "$tmp/sitk" && unzip -q "$tmp"/simpleitk-*.whl && tar -cJf "$OLDPWD/.devcarry/sitk.tar.xz" SimpleITK simpleitk-*.dist-info)
anatomy=$("$PY" -c "from GliomaMTLLib.synth.anatomy import load_anatomy, _cache_file; load_anatomy(); print(_cache_file())")
xz -6 -c "$anatomy" > .devcarry/anatomy.npz.xz
du -ch .devcarry/* | tail -1
