#!/usr/bin/env bash
# Train a recipe on this machine's GPU and export its bundle (without the held-out evaluation,
# which any machine can add later from the run folder).
#
#   bash training/gpu_train.sh [RECIPE] [RUN_DIR]       # default: gliomamtl_adult_gpu runs/<recipe>
#
# 1. a smoke run of the recipe (3 tiny phantoms, 2 iterations per phase, on the GPU), so a broken
#    environment fails in seconds, not after the phantoms are made;
# 2. training: the phantoms are made by one process per core (data.workers), batches are drawn by
#    worker processes (train.loader_workers: cores - 2), bf16 on the GPU; an interrupted run resumes;
# 3. export to RUN_DIR/bundle with --no-evaluate. Afterwards, on any machine with the repository:
#      python -m GliomaMTLLib.train.export --run RUN_DIR --out runs/bundles/<name>   (adds the test Dice)
#
# Environment: PYTHON (default python3), DEVICE (default cuda; cpu only to test this script), TRAIN_TIMEOUT (seconds for step 2, default none: when it
# runs out the checkpoint of the last 500 iterations stays in RUN_DIR and a rerun resumes), EXTRA
# (more --set overrides, e.g. EXTRA="stages.main.phases.0.iterations=3000").
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-gliomamtl_adult_gpu}
run=${2:-runs/$recipe}
PY=${PYTHON:-python3}
cores=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
loaders=$(( cores > 3 ? cores - 2 : 1 ))
device=${DEVICE:-cuda}
if [ "$device" = cuda ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_train.sh: torch sees no CUDA device; train on the CPU with python -m GliomaMTLLib.train.train")'
fi
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
start=$(date +%s)
echo "== smoke run of $recipe on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -m GliomaMTLLib.train.train --config "$recipe" --smoke --out "$smoke/run" --quiet \
  --set train.device="$device" train.loader_workers=2 data.cache_dir="$smoke/cache"
echo "== training $recipe -> $run ($cores cores: $cores phantom workers, $loaders batch workers)"
resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume)
# shellcheck disable=SC2086
# no progress bar, but the prepare summary and the final line
TQDM_DISABLE=1 ${TRAIN_TIMEOUT:+timeout "$TRAIN_TIMEOUT"} "$PY" -m GliomaMTLLib.train.train --config "$recipe" --out "$run" "${resume[@]}" \
  --set train.device="$device" data.workers="$cores" train.loader_workers="$loaders" ${EXTRA:-}
echo "== exporting $run/bundle"
"$PY" -m GliomaMTLLib.train.export --run "$run" --out "$run/bundle" --no-evaluate --overwrite
echo "== done in $(( $(date +%s) - start )) s"
