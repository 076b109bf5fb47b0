#!/usr/bin/env bash
# This workplace's lent GPU machine (the `device` tool): train gliomamtl_adult_gpu there with
# training/gpu_train.sh and bring the run back through $OUT. That machine has CUDA torch, numpy,
# scipy and scikit-learn but not SimpleITK, MONAI or nibabel, and cannot download: they travel in
# .devcarry/ (ignored by git; made here by scripts/device_carry.sh), with the phantom generator's
# prepared MNI152 anatomy, so that nilearn need not travel.
#
#   device run, carry [".devcarry"], command "bash scripts/device_gpu_train.sh"
#
# $OUT receives device.log, run.tar (weights, recipe, log), bundle.tar (exported without evaluation) and, when
# the training did not finish, the checkpoint in 15 MB parts (cat ckpt.part* > checkpoint.pt).
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device_out}
mkdir -p "$OUT" /tmp/site
carry=.devcarry
tar -xJf "$carry/sitk.tar.xz" -C /tmp/site || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$carry"/*.whl || exit 1
export PYTHONPATH=/tmp/site
export GLIOMAMTL_CACHE=/tmp/gliomamtl-cache
# where the generator looks for its prepared anatomy (the name carries nilearn's version, "unknown" there)
anatomy=$(python3 -c "from GliomaMTLLib.synth.anatomy import _cache_file; print(_cache_file())") || exit 1
mkdir -p "$(dirname "$anatomy")"
xz -dc "$carry/anatomy.npz.xz" > "$anatomy" || exit 1
# DataLoader workers hand batches over through /dev/shm (about 1 GB in flight here)
shm=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1 || echo 0)
if [ "${shm:-0}" -lt 8000000 ]; then
  mount -o remount,size=32G /dev/shm 2>/dev/null || echo "warning: /dev/shm has ${shm} kB free and could not be enlarged"
fi
df -h /dev/shm | tail -1
recipe=${RECIPE:-gliomamtl_adult_gpu}
run=runs/$recipe
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-450} bash training/gpu_train.sh "$recipe" "$run" 2>&1 | tee "$OUT/device.log"
rc=${PIPESTATUS[0]}
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$OUT/device.log" 2>&1
files=()
for f in weights run.json recipe.yaml train_log.jsonl; do
  [ -e "$run/$f" ] && files+=("$recipe/$f")
done
[ ${#files[@]} -gt 0 ] && tar -cf "$OUT/run.tar" -C runs "${files[@]}"
[ -d "$run/bundle" ] && tar -cf "$OUT/bundle.tar" -C "$run" bundle
if [ "$rc" -ne 0 ] && [ -f "$run/checkpoint.pt" ]; then
  split -b 15M "$run/checkpoint.pt" "$OUT/ckpt.part"
fi
exit "$rc"
