#!/usr/bin/env bash
# Retrain the shipped models (Resources/Models/gliomamtl_adult, gliomamtl_pediatric) from scratch
# and check the result against the metrics their model cards report.
#
#   bash training/reproduce.sh                 # both models
#   bash training/reproduce.sh gliomamtl_adult # one
#
# Environment: PYTHON (default .venv/bin/python), TOLERANCE (allowed absolute difference of each
# held-out Dice / AUC / accuracy, default 0.05), RUNS (default runs/reproduce).
#
# Each model: train (an interrupted run is resumed: rerun this script) -> export a bundle to
# $RUNS/bundles/<name> (held-out evaluation on the synthetic test split, temperatures fitted on
# the validation split) -> compare its metrics with the shipped bundle's -> fit the
# radiological-feature genotype path to the new weights' own segmentations (phantoms generated and
# predicted into $RUNS/genotype/<name>/cache, resumable; GENOTYPE_COUNTS, default as each card:
# adult train=720,val=100,test=600,transfer=100,texture_shift=100 (since 0.4.4: 820 development and
# 600 test phantoms), pediatric train=720,val=100,test=600,transfer=30,texture_shift=100
# (since 0.3.3: 820 development and 600 test phantoms); only those cached phantoms are used; the fit uses the shipped path's features (--features-of); WORKERS processes,
# default 2) and compare its test AUC and ECE with the shipped bundle's. Exit status 1 if any metric differs by more than TOLERANCE. Same seeds, same recipe: on the same hardware and thread
# count the weights come out bit-identical; elsewhere floating-point order differs, hence the
# tolerance. On a GPU add e.g. TRAIN_ARGS="--set train.device=cuda".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TOLERANCE=${TOLERANCE:-0.05}
GENOTYPE_COUNTS=${GENOTYPE_COUNTS:-}  # default per model: the counts its card was measured on
WORKERS=${WORKERS:-2}
RUNS=${RUNS:-runs/reproduce}
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(gliomamtl_adult gliomamtl_pediatric)
status=0
# The recipe each shipped model is trained with: the adult network is the segmentation-only
# cascade since 0.3.1 (its genotype comes from the feature path fitted below),
# on 480 phantoms since 0.4.0 (0.4.1: same weights, the unsure-ET rule in the recipe); the pediatric one likewise without its BRAF head since 0.3.0.
recipe_of() { case "$1" in gliomamtl_adult) echo gliomamtl_adult_large ;;
  gliomamtl_pediatric) echo gliomamtl_pediatric_large ;; *) echo "$1" ;; esac; }
for name in "${MODELS[@]}"; do
  run="$RUNS/$name"
  recipe=$(recipe_of "$name")
  resume=()
  [ -f "$run/checkpoint.pt" ] && resume=(--resume)
  if [ ! -f "$run/run.json" ] || ! grep -q '"status": "finished"' "$run/run.json"; then
    echo "== training $name (recipe $recipe) -> $run"
    # shellcheck disable=SC2086
    "$PY" -m GliomaMTLLib.train.train --config "training/configs/$recipe.yaml" --out "$run" "${resume[@]}" ${TRAIN_ARGS:-}
  fi
  echo "== exporting and checking $name"
  if ! "$PY" -m GliomaMTLLib.train.export --run "$run" --out "$RUNS/bundles/$name" --overwrite \
      --check-against "Resources/Models/$name" --tolerance "$TOLERANCE"; then
    status=1
  fi
  cohort=adult
  [[ "$name" == *pediatric* ]] && cohort=pediatric
  version=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "Resources/Models/$name/model.json")
  default_counts=train=120,val=100,test=100,transfer=30
  case "$name" in gliomamtl_adult) default_counts=train=720,val=100,test=600,transfer=100,texture_shift=100 ;;
    gliomamtl_pediatric) default_counts=train=720,val=100,test=600,transfer=30,texture_shift=100 ;; esac
  counts=${GENOTYPE_COUNTS:-$default_counts}
  echo "== genotype path of $name"
  if ! "$PY" -m GliomaMTLLib.train.genotype_fit --model "$RUNS/bundles/$name" --cohort "$cohort" \
      --cache "$RUNS/genotype/$name/cache" --counts "$counts" --collect --workers "$WORKERS" \
      --out "$RUNS/genotype/$name" --update-bundle --version "$version" --features-of "Resources/Models/$name" \
      --check-against "Resources/Models/$name" --tolerance "$TOLERANCE"; then
    status=1
  fi
done
exit $status
