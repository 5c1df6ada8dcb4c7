#!/usr/bin/env bash
# The whole method, stage by stage, for one preset; resumable (finished outputs are skipped, so a
# killed run continues where it stopped):
#
#   bash run_pipeline.sh            # default: digits with 5% corrupted images, LDS for both methods
#   bash run_pipeline.sh quick      # the whole chain in a couple of minutes (used by the tests)
#   bash run_pipeline.sh cifar10    # the paper's settings (GPU / cluster)
#   RUN=runs/mine JOBS=4 K=48 bash run_pipeline.sh     # any setting below can be overridden
#   REF_DATA=npz:curated.npz bash run_pipeline.sh       # FID against a chosen reference set
#
# Stages: train, prune, masks, unlearn, retrain baseline, LDS models, behaviours, fit, evaluate.
set -euo pipefail
cd "$(dirname "$0")"
PRESET=${1:-default}
PY=${PYTHON:-python}

case "$PRESET" in
  quick)
    : "${RUN:=runs/quick}" "${DATA:=digits}" "${ARCH:=digits-small}" "${CORRUPT:=0.05}"
    : "${TRAIN_STEPS:=80}" "${RETRAIN_STEPS:=80}" "${PRUNE_STEPS:=20}" "${UNLEARN_STEPS:=15}" "${BATCH:=32}"
    : "${M:=8}" "${R:=3}" "${K:=4}" "${SEED_PAIRS:=1}" "${N_SAMPLES:=64}" "${DDIM_STEPS:=5}" "${GRID:=16}" ;;
  default)
    : "${RUN:=runs/default}" "${DATA:=digits}" "${ARCH:=digits-small}" "${CORRUPT:=0.05}"
    : "${TRAIN_STEPS:=2000}" "${RETRAIN_STEPS:=500}" "${PRUNE_STEPS:=400}" "${UNLEARN_STEPS:=100}" "${BATCH:=64}"
    # 6000 DDIM-10 samples: FID noise 2.4 against a spread of 10.3 across unlearned models (4.2x);
    # 1000 DDIM-25 samples cost less than half as much but gave only 1.7x (bench/fid_noise.py)
    : "${M:=96}" "${R:=16}" "${K:=72}" "${SEED_PAIRS:=4}" "${N_SAMPLES:=6000}" "${DDIM_STEPS:=10}" ;;
  cifar10)
    # the paper: Ho et al.'s 35.7M UNet, 200k steps, prune ratio 0.3, 4k unlearning steps (2%), DDIM 100,
    # Inception FID, alpha 0.5
    : "${RUN:=runs/cifar10}" "${DATA:=cifar10}" "${ARCH:=cifar10}" "${CORRUPT:=0}"
    : "${TRAIN_STEPS:=200000}" "${RETRAIN_STEPS:=200000}" "${PRUNE_STEPS:=0}" "${UNLEARN_STEPS:=4000}" "${BATCH:=128}"
    : "${M:=256}" "${R:=16}" "${K:=50}" "${SEED_PAIRS:=2}" "${N_SAMPLES:=10000}" "${DDIM_STEPS:=100}"
    : "${TRAIN_FLAGS:=--lr 2e-4 --warmup 5000 --lr-schedule constant --ema-decay 0.9999 --hflip --ckpt-every 5000}"
    : "${UNLEARN_FLAGS:=--lr 2e-4 --ema-decay 0.9999}" "${FEATURES:=inception}" ;;
  *) echo "error: unknown preset '$PRESET' (quick, default, cifar10)" >&2; exit 2 ;;
esac
: "${JOBS:=2}" "${ALPHA:=0.5}" "${RATIO:=0.3}" "${FEATURES:=auto}" "${N_REF:=0}" "${INCEPTION_WEIGHTS:=}" "${REF_DATA:=}"
: "${TRAIN_FLAGS:=}" "${UNLEARN_FLAGS:=}" "${DEVICE:=auto}" "${GRID:=100}"
# Single-process stages use every core; per-row stages run JOBS processes at a time, each with an
# equal share of the cores (torch reads OMP_NUM_THREADS).
CORES=${OMP_NUM_THREADS:-$(nproc)}
THREADS=$(( CORES / JOBS )); [ "$THREADS" -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$CORES

DATA_FLAGS=(--data "$DATA" --corrupt "$CORRUPT")
COMMON_TRAIN=(--arch "$ARCH" --batch-size "$BATCH" --device "$DEVICE" $TRAIN_FLAGS)
FID_FLAGS=(--data "$DATA" --n-samples "$N_SAMPLES" --ddim-steps "$DDIM_STEPS" --features "$FEATURES" --device "$DEVICE")
[ "$N_REF" != 0 ] && FID_FLAGS+=(--n-ref "$N_REF")
[ -n "$REF_DATA" ] && FID_FLAGS+=(--ref-data "$REF_DATA")
[ -n "$INCEPTION_WEIGHTS" ] && FID_FLAGS+=(--inception-weights "$INCEPTION_WEIGHTS")

START=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }
mkdir -p "$RUN/masks" "$RUN/models" "$RUN/behaviors" "$RUN/attributions"
echo "preset $PRESET -> $RUN (JOBS=$JOBS parallel jobs of $THREADS threads)"

# Run a per-row script over mask rows FROM..TO-1 as JOBS processes of THREADS threads, each given one
# contiguous range in place of the word ROWS; fails when any of them fails.
chunks() {
  local from=$1 to=$2 size a b pids=() status=0
  shift 2
  [ "$to" -gt "$from" ] || return 0
  size=$(( (to - from + JOBS - 1) / JOBS ))
  for (( a = from; a < to; a += size )); do
    b=$(( a + size < to ? a + size : to ))
    OMP_NUM_THREADS=$THREADS "${@//ROWS/$a:$b}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}

# train_ddpm.py from scratch on rows FROM..TO-1 of a mask file: retrain MASKS FROM TO SEED FOLDER [SUFFIX]
retrain() {
  chunks "$2" "$3" $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$RETRAIN_STEPS" --seed "$4" \
    --grid 0 --masks "$1" --indices ROWS --out "$5" --suffix="${6:-}"
}

stage "1/9 train on all data ($TRAIN_STEPS steps)"
$PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$TRAIN_STEPS" --seed 0 --out "$RUN/full.pt" \
  --grid "$GRID" --ddim-steps "$DDIM_STEPS"

stage "2/9 prune (structured, ratio $RATIO) and fine-tune ($PRUNE_STEPS steps)"
$PY prune.py --ckpt "$RUN/full.pt" --out "$RUN/pruned.pt" --ratio "$RATIO" --mode structured \
  "${DATA_FLAGS[@]}" --steps "$PRUNE_STEPS" --batch-size "$BATCH" --device "$DEVICE" --grid "$GRID" \
  --ddim-steps "$DDIM_STEPS"

stage "3/9 masks: $M unlearning subsets, the first $R of them for retraining, $K held-out LDS subsets"
$PY make_subsets.py "${DATA_FLAGS[@]}" --count "$M" --alpha "$ALPHA" --seed 1 --out "$RUN/masks/unlearn.npy" \
  --corrupted-out "$RUN/corrupted.npy"
$PY make_subsets.py --count "$R" --first-of "$RUN/masks/unlearn.npy" --out "$RUN/masks/retrain.npy"
$PY make_subsets.py "${DATA_FLAGS[@]}" --count "$K" --alpha "$ALPHA" --seed 2 --out "$RUN/masks/lds.npy"

stage "4/9 sparsified unlearning: $M models, $UNLEARN_STEPS steps each"
chunks 0 "$M" $PY unlearn.py --ckpt "$RUN/pruned.pt" "${DATA_FLAGS[@]}" --masks "$RUN/masks/unlearn.npy" \
  --indices ROWS --out "$RUN/models/unlearn" --steps "$UNLEARN_STEPS" --batch-size "$BATCH" --device "$DEVICE" $UNLEARN_FLAGS

stage "5/9 retraining baseline: $R models from scratch ($RETRAIN_STEPS steps), and $SEED_PAIRS with a second seed"
retrain "$RUN/masks/retrain.npy" 0 "$R" 0 "$RUN/models/retrain"
retrain "$RUN/masks/retrain.npy" 0 "$SEED_PAIRS" 1 "$RUN/models/retrain_seed1"

stage "6/9 ground truth for LDS: $K models retrained from scratch on held-out subsets"
retrain "$RUN/masks/lds.npy" 0 "$K" 0 "$RUN/models/lds" -s0

stage "7/9 behaviours: FID ($FEATURES features, $N_SAMPLES DDIM-$DDIM_STEPS samples per model)"
# Two lanes of THREADS threads each when JOBS >= 2 (small pools are dominated by start-up, not arithmetic);
# FID2 and the seed pairs come last: they reuse the pools' cached per-model statistics.
fid() { OMP_NUM_THREADS=$THREADS $PY compute_fid.py "${FID_FLAGS[@]}" "$@"; }
pool() { fid --models "$RUN/models/$1" --masks "$RUN/masks/$1.npy" --out "$RUN/behaviors/$1.npz"; }
fid2() { fid --models "$RUN/models/unlearn" --ref-models "$RUN/models/retrain" --masks "$RUN/masks/unlearn.npy" \
           --out "$RUN/behaviors/fid2.npz"; }
fid_seeds() { fid --models "$RUN/models/retrain_seed1" --ref-models "$RUN/models/retrain" \
                --masks "$RUN/masks/retrain.npy" --out "$RUN/behaviors/fid_seeds.npz"; }
if [ "$JOBS" -ge 2 ]; then
  { fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"; pool unlearn; } & lane=$!
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"; pool retrain; pool lds
  wait "$lane"
  fid2 & lane=$!
  fid_seeds
  wait "$lane"
else
  THREADS=$CORES
  fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"
  pool unlearn; pool retrain; pool lds; fid2; fid_seeds
fi

stage "8/9 attributions (datamodel on every model of each pool)"
for pool in unlearn retrain; do
  $PY fit_datamodel.py --masks "$RUN/masks/$pool.npy" --behaviors "$RUN/behaviors/$pool.npz" \
    --out "$RUN/attributions/$pool.npz"
done

stage "9/9 LDS, budget curve and report"
$PY eval_lds.py --run "$RUN" --data "$DATA" --corrupt "$CORRUPT"

echo
echo "done in $(( $(date +%s) - START ))s: $RUN/report.md"
