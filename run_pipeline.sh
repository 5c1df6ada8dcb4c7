#!/usr/bin/env bash
# The whole method, stage by stage, for one preset; resumable (finished outputs are skipped, so a
# killed run continues where it stopped):
#
#   bash run_pipeline.sh            # default: digits with 5% corrupted images, LDS for both methods
#   bash run_pipeline.sh quick      # the whole chain in a couple of minutes (used by the tests)
#   bash run_pipeline.sh contributors   # 20 contributors (2 gave corrupted images), Shapley values
#   bash run_pipeline.sh cifar10    # the paper's settings (GPU / cluster)
#   RUN=runs/mine JOBS=4 K=48 bash run_pipeline.sh     # any setting below can be overridden
#   REF_DATA=npz:curated.npz bash run_pipeline.sh       # FID against a chosen reference set
#   SCHEDULER=slurm bash run_pipeline.sh quick         # every stage a Slurm job (arrays for per-row
#                                                      # stages); prints the job ids and returns at once
#
# Stages: train, prune, masks, unlearn, retrain baseline, LDS models, behaviours, fit, evaluate.
set -euo pipefail
cd "$(dirname "$0")"
PRESET=${1:-default}
PY=${PYTHON:-python}

case "$PRESET" in
  quick)
    # the whole chain at the smallest sizes that exercise every stage (the tests run it three times); its
    # numbers are noise
    : "${RUN:=runs/quick}" "${DATA:=digits}" "${ARCH:=digits-small}" "${CORRUPT:=0.05}"
    : "${TRAIN_STEPS:=40}" "${PRUNE_STEPS:=20}" "${UNLEARN_STEPS:=15}" "${BATCH:=32}"
    : "${M:=8}" "${R:=3}" "${K:=4}" "${GT_SEEDS:=1}" "${SEED_PAIRS:=1}" "${N_SAMPLES:=64}" "${DDIM_STEPS:=5}" "${GRID:=16}"
    : "${ROWS_PER_TASK:=4}" ;;
  default)
    # One recipe of 500 steps for the full model, the baseline and the ground truth (a retraining: ~40 s on
    # one core of a slow day); unlearning 25 steps (5%) from the pruned model, ~1.4 s: >= 20x cheaper.
    # The 40 minutes of 2 cores (~4,700 core-seconds), as measured on a slow day: ground truth 24 x 2 seeds
    # x ~38 s = 1,820; baseline 16 + 4 second seeds = 760; unlearning 224 x 1.4 = 310; behaviours ~320
    # models x 2.8 s = 900; full model, pruning, fits and report ~200 s of wall time. Measured: 1,980 s.
    # Unlearning lr 1e-4 without warm-up: on these 24 subsets, lr 3e-4 (warm-up 10) gave FID2 1.9x that of
    # two retraining seeds and lr 1e-3 3.0x, lr 1e-4 1.3x; none of them (nor 50 steps, batch 32, or Adam
    # moments carried over from a fine-tune on all data) tracked the retrained FID better than Pearson 0.27.
    # 1000 DDIM-10 samples per model, and this is where the default is weakest (bench/fid_noise.py on 16
    # unlearned models): FID's sampling noise (std over noise seeds) 13.6 / 14.7 / 11.9 at 500 / 1000 / 2000
    # samples against a spread across models of 14.8 / 17.4 / 16.2: 1.1x / 1.2x / 1.4x. At FID ~170 a
    # model's FID moves with how many of its samples come out as noise images. Measured after the run, not yet
    # tried in it: 4000 DDIM-5 samples gave 3.1x (noise 7.1, spread 21.8) at ~2.3x the sampling cost of 1000
    # DDIM-10 (~+600 s here, to be paid with fewer unlearned models or held-out subsets). The ceiling at this
    # size (bench/attribution_ceiling.py, a planted game): from 224 models even a noiseless behaviour finds the
    # corrupted images with AUC 0.8 and an LDS near 0; at the unlearned FID's measured correlation with their
    # count (0.26), AUC 0.54-0.58.
    : "${RUN:=runs/default}" "${DATA:=digits}" "${ARCH:=digits-small}" "${CORRUPT:=0.1}"
    : "${TRAIN_STEPS:=500}" "${PRUNE_STEPS:=200}" "${UNLEARN_STEPS:=25}" "${BATCH:=64}"
    : "${UNLEARN_FLAGS:=--lr 1e-4 --warmup 0}"
    : "${M:=224}" "${R:=16}" "${K:=24}" "${GT_SEEDS:=2}" "${SEED_PAIRS:=4}" "${N_SAMPLES:=1000}" "${DDIM_STEPS:=10}" ;;
  contributors)
    # contributor-level attribution with Shapley values (Lin, Lu et al., ICLR 2025): 20 contributors of
    # ~90 digits each, two of whom gave only corrupted images (10% of the data); unlearned and retrained
    # models on subsets of contributors whose sizes follow the Shapley kernel, LDS on half-subsets.
    # Sized for 20 minutes of 2 cores. Measured (slow day, nothing else running): 1,007 s; unlearning 64 x
    # 5.4 s, retraining 42 x 22.7 s (half of the run), behaviours 2000 DDIM-5 samples, 3.8 / 2.5 s per model.
    # LDS at budget 16: unlearning 0.91 vs retraining 0.22 (p < 0.001), bad-contributor AUC 1.0 (retraining
    # 0.67). The 300-step recipe makes poor digits (full model FID 268 with DDIM-5) but the bad contributors'
    # noise images dominate FID. 400 steps and 2000 DDIM-10 samples took 1,402 s (LDS 0.80 vs 0.41, p = 0.05).
    : "${RUN:=runs/contributors}" "${DATA:=digits}" "${ARCH:=digits-small}" "${CORRUPT:=0.1}"
    : "${CONTRIBUTORS:=random:20}" "${METHOD:=shapley}"
    : "${TRAIN_STEPS:=300}" "${PRUNE_STEPS:=300}" "${UNLEARN_STEPS:=80}" "${BATCH:=64}"
    : "${M:=64}" "${R:=16}" "${K:=24}" "${GT_SEEDS:=1}" "${SEED_PAIRS:=2}" "${N_SAMPLES:=2000}" "${DDIM_STEPS:=5}" ;;
  cifar10)
    # the paper: Ho et al.'s 35.7M UNet, 200k steps, prune ratio 0.3, 4k unlearning steps (2%), DDIM 100,
    # Inception FID, alpha 0.5
    : "${RUN:=runs/cifar10}" "${DATA:=cifar10}" "${ARCH:=cifar10}" "${CORRUPT:=0}"
    : "${TRAIN_STEPS:=200000}" "${PRUNE_STEPS:=0}" "${UNLEARN_STEPS:=4000}" "${BATCH:=128}"
    : "${M:=256}" "${R:=16}" "${K:=50}" "${GT_SEEDS:=2}" "${SEED_PAIRS:=2}" "${N_SAMPLES:=10000}" "${DDIM_STEPS:=100}"
    : "${TRAIN_FLAGS:=--lr 2e-4 --warmup 5000 --lr-schedule constant --ema-decay 0.9999 --hflip --ckpt-every 5000}"
    : "${UNLEARN_FLAGS:=--lr 2e-4 --ema-decay 0.9999}" "${FEATURES:=inception}"
    # Slurm: one GPU per task, one retraining (~20 GPU-hours at the paper's size) per task
    : "${ROWS_PER_TASK:=1}" "${GPUS:=1}" "${CPUS:=8}"; task_time=2-00:00:00 task_mem=32G ;;
  *) echo "error: unknown preset '$PRESET' (quick, default, contributors, cifar10)" >&2; exit 2 ;;
esac
# One recipe: the full model (stage 1), the retraining baseline (stage 5) and the ground truth (stage 6) are
# all trained by train_ddpm.py with TRAIN_STEPS, BATCH and TRAIN_FLAGS, as the paper retrains from scratch
# with the full training procedure that unlearning approximates.
[[ "$GT_SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GT_SEEDS must be a positive integer, got '$GT_SEEDS'" >&2; exit 2; }
[ -z "${RETRAIN_STEPS:-}" ] || { echo "error: RETRAIN_STEPS is gone: one recipe (TRAIN_STEPS) trains the full model, the baseline and the ground truth" >&2; exit 2; }
# Slurm (SCHEDULER=slurm): what each job asks for: CPUS per task, MEM, WALLTIME, PARTITION, GPUS=N
# (--gres=gpu:N). One left unset whose sbatch variable is set (SBATCH_PARTITION, SBATCH_TIMELIMIT,
# SBATCH_MEM_PER_NODE, SBATCH_GRES) leaves it to that default. SBATCH_FLAGS is added to every sbatch call
# (e.g. "--account=lab --qos=short"); ARRAY_MAX=N runs at most N tasks of an array at once.
: "${SCHEDULER:=local}" "${ROWS_PER_TASK:=8}" "${CPUS:=2}" "${GPUS:=0}" "${PARTITION:=}" "${SBATCH_FLAGS:=}"
: "${ARRAY_MAX:=}"
[ -n "${SBATCH_TIMELIMIT:-}" ] && : "${WALLTIME:=}" || : "${WALLTIME:=${task_time:-12:00:00}}"
[ -n "${SBATCH_MEM_PER_NODE:-}${SBATCH_MEM_PER_CPU:-}" ] && : "${MEM:=}" || : "${MEM:=${task_mem:-8G}}"
: "${JOBS:=2}" "${ALPHA:=0.5}" "${RATIO:=0.3}" "${FEATURES:=auto}" "${N_REF:=0}" "${INCEPTION_WEIGHTS:=}" "${REF_DATA:=}"
: "${TRAIN_FLAGS:=}" "${UNLEARN_FLAGS:=}" "${DEVICE:=auto}" "${GRID:=100}"
# CONTRIBUTORS=SPEC makes the run contributor-level (make_subsets.py --groups: classes, random:G or FILE.npy);
# METHOD=shapley fits Shapley values (the unlearning and retraining masks then follow the Shapley kernel,
# and an untrained model gives v(empty)) instead of datamodels.
: "${CONTRIBUTORS:=}" "${METHOD:=datamodel}"
case "$METHOD" in datamodel|shapley) ;; *) echo "error: METHOD must be datamodel or shapley, got '$METHOD'" >&2; exit 2 ;; esac
GROUP_FLAGS=(); [ -z "$CONTRIBUTORS" ] || GROUP_FLAGS=(--groups "$CONTRIBUTORS")
POOL_ALPHA=$ALPHA; [ "$METHOD" != shapley ] || POOL_ALPHA=shapley
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
mkdir -p "$RUN/masks" "$RUN/models" "$RUN/behaviors" "$RUN/attributions" "$RUN/logs"

# ---- the stages ------------------------------------------------------------------------------------
# `batched FN ARGS...` runs the shell function FN with its $PY calls collected, then makes them one Python
# process (tools/one_process.py): every interpreter start imports torch, 3-4 s on a 2-core machine, more
# than the work of a tiny preset's row range or a small pool. FN must run its calls one after another
# (nothing in the background) and must not look at their outputs in between.
queue() { CALLS+=(:: "$@"); }
batched() {
  local CALLS=() py=$PY
  PY=queue "$@"
  [ ${#CALLS[@]} = 0 ] || $py tools/one_process.py "${CALLS[@]:1}"
}

# Each per-row stage is a function of one row range A:B of its mask file; the local path runs JOBS
# ranges side by side, the Slurm path gives each array task one range. Both call the same functions.
stage_train() {
  $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$TRAIN_STEPS" --seed 0 --out "$RUN/full.pt" \
    --grid "$GRID" --ddim-steps "$DDIM_STEPS"
  if [ "$METHOD" = shapley ]; then  # v(empty): the model that saw no data
    $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --init-only --seed 0 --out "$RUN/untrained.pt" --grid 0
  fi
}
stage_prune() {
  $PY prune.py --ckpt "$RUN/full.pt" --out "$RUN/pruned.pt" --ratio "$RATIO" --mode structured \
    "${DATA_FLAGS[@]}" --steps "$PRUNE_STEPS" --batch-size "$BATCH" --device "$DEVICE" --grid "$GRID" \
    --ddim-steps "$DDIM_STEPS"
}
stage_masks() {
  $PY make_subsets.py "${DATA_FLAGS[@]}" "${GROUP_FLAGS[@]}" --count "$M" --alpha "$POOL_ALPHA" --seed 1 \
    --out "$RUN/masks/unlearn.npy" --corrupted-out "$RUN/corrupted.npy"
  $PY make_subsets.py --count "$R" --first-of "$RUN/masks/unlearn.npy" --out "$RUN/masks/retrain.npy"
  $PY make_subsets.py "${DATA_FLAGS[@]}" "${GROUP_FLAGS[@]}" --count "$K" --alpha "$ALPHA" --seed 2 \
    --out "$RUN/masks/lds.npy"
}
rows_unlearn() {
  $PY unlearn.py --ckpt "$RUN/pruned.pt" "${DATA_FLAGS[@]}" --masks "$RUN/masks/unlearn.npy" --indices "$1" \
    --out "$RUN/models/unlearn" --steps "$UNLEARN_STEPS" --batch-size "$BATCH" --device "$DEVICE" $UNLEARN_FLAGS
}
# train_ddpm.py from scratch on a row range of a mask file, with the recipe of the full model:
# retrain MASKS SEED FOLDER SUFFIX A:B
retrain() {
  $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$TRAIN_STEPS" --seed "$2" --grid 0 \
    --masks "$1" --indices "$5" --out "$3" --suffix="$4"
}
rows_retrain() { retrain "$RUN/masks/retrain.npy" 0 "$RUN/models/retrain" "" "$1"; }
rows_seed1() { retrain "$RUN/masks/retrain.npy" 1 "$RUN/models/retrain_seed1" "" "$1"; }
rows_lds() {  # every held-out subset with GT_SEEDS training seeds; its behaviour is their mean
  local seed
  for (( seed = 0; seed < GT_SEEDS; seed++ )); do retrain "$RUN/masks/lds.npy" "$seed" "$RUN/models/lds" "-s$seed" "$1"; done
}

# Behaviours: two lanes of THREADS threads each when JOBS >= 2 (small pools are dominated by start-up,
# not arithmetic), sharing the largest pool (unlearn), each lane one process; FID2 and the seed pairs come
# last: they reuse the pools' cached per-model statistics.
fid() { $PY compute_fid.py "${FID_FLAGS[@]}" "$@"; }
pool() { fid --models "$RUN/models/$1" --masks "$RUN/masks/$1.npy" --out "$RUN/behaviors/$1.npz"; }
fid2() { fid --models "$RUN/models/unlearn" --ref-models "$RUN/models/retrain" --masks "$RUN/masks/unlearn.npy" \
           --out "$RUN/behaviors/fid2.npz"; }
fid_seeds() { fid --models "$RUN/models/retrain_seed1" --ref-models "$RUN/models/retrain" \
                --masks "$RUN/masks/retrain.npy" --out "$RUN/behaviors/fid_seeds.npz"; }
untrained() { [ "$METHOD" != shapley ] || fid --models "$RUN/untrained.pt" --out "$RUN/behaviors/untrained.npz"; }
lane_a() { fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"; pool unlearn; }
lane_b() {
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"; pool retrain; pool lds; untrained
  # then, when the unlearned pool outweighs this lane's pools twice (the default preset: 224 vs 64), this
  # lane samples the unlearned models from the last one down until it meets the other lane
  if [ "$M" -gt $(( 2 * (R + K * GT_SEEDS) )) ]; then
    fid --models "$RUN/models/unlearn" --masks "$RUN/masks/unlearn.npy" --out "$RUN/behaviors/unlearn.npz" --stats-only
  fi
}
fid_pairs() { fid2; fid_seeds; }
stage_behaviours() {
  if [ "$JOBS" -ge 2 ]; then
    local lane
    OMP_NUM_THREADS=$THREADS batched lane_a & lane=$!
    OMP_NUM_THREADS=$THREADS batched lane_b
    wait "$lane"
    OMP_NUM_THREADS=$THREADS batched fid_pairs  # sampled with the lanes' thread count, as every other model
  else
    batched all_behaviours
  fi
}
all_behaviours() {
  fid --models "$RUN/full.pt" --out "$RUN/behaviors/full.npz"
  fid --models "$RUN/pruned.pt" --out "$RUN/behaviors/pruned.npz"
  pool unlearn; pool retrain; pool lds; untrained; fid2; fid_seeds
}
fits() {
  local pool ends
  for pool in unlearn retrain; do
    # Shapley values: v(all) is the pruned model fine-tuned on all data for unlearning, the full model for retraining
    ends=(); [ "$METHOD" != shapley ] || ends=(--v-empty "$RUN/behaviors/untrained.npz"
                                               --v-full "$RUN/behaviors/$([ $pool = unlearn ] && echo pruned || echo full).npz")
    $PY fit_datamodel.py --masks "$RUN/masks/$pool.npy" --behaviors "$RUN/behaviors/$pool.npz" --method "$METHOD" \
      "${ends[@]}" --out "$RUN/attributions/$pool.npz"
  done
}
stage_report() {
  stage "8/9 attributions ($METHOD on every model of each pool)"
  batched fits
  stage "9/9 LDS, budget curve and report"
  $PY eval_lds.py --run "$RUN" --data "$DATA" --corrupt "$CORRUPT" --method "$METHOD"
}

# ---- on this machine -------------------------------------------------------------------------------
# Run per-row stages as JOBS processes of THREADS threads: `chunks FN:N [FN:N ...]` takes the rows of the
# given stages one after another (rows 0..N-1 of each), splits them into JOBS contiguous ranges, and each
# process runs its share of every stage (FN A:B) in one interpreter; fails when any of them fails.
chunks() {
  local spec total=0 size a b pids=() status=0
  for spec; do total=$(( total + ${spec##*:} )); done
  [ "$total" -gt 0 ] || return 0
  size=$(( (total + JOBS - 1) / JOBS ))
  for (( a = 0; a < total; a += size )); do
    b=$(( a + size < total ? a + size : total ))
    ( export OMP_NUM_THREADS=$THREADS; batched share "$a" "$b" "$@" ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}
share() {  # share A B FN:N...: rows A..B-1 of the stages' rows taken one after another
  local a=$1 b=$2 offset=0 spec n lo hi
  shift 2
  for spec; do
    n=${spec##*:} lo=$(( a > offset ? a - offset : 0 )) hi=$(( b - offset < n ? b - offset : n ))
    [ "$hi" -le "$lo" ] || "${spec%%:*}" "$lo:$hi"
    offset=$(( offset + n ))
  done
}

# A stage whose outputs all exist is not run (or submitted) again: its interpreter would start only to find
# them (3-4 s each here; at cluster scale a job would also wait in the queue). Fitting and the report always
# run. A partly done stage runs, and its scripts skip the finished rows.
rows_done() {  # rows_done FOLDER N SUFFIX...: every row 0..N-1 has its checkpoint, for every suffix
  local i suffix
  for (( i = 0; i < $2; i++ )); do
    for suffix in "${@:3}"; do [ -f "$(printf '%s/%05d%s.pt' "$1" "$i" "$suffix")" ] || return 1; done
  done
}
stage_done() {
  local suffixes=() seed
  case "$1" in
    train) [ -f "$RUN/full.pt" ] && { [ "$METHOD" != shapley ] || [ -f "$RUN/untrained.pt" ]; } ;;
    prune) [ -f "$RUN/pruned.pt" ] ;;
    masks) [ -f "$RUN/masks/unlearn.npy" ] && [ -f "$RUN/masks/retrain.npy" ] && [ -f "$RUN/masks/lds.npy" ] ;;
    unlearn) rows_done "$RUN/models/unlearn" "$M" "" ;;
    retrain) rows_done "$RUN/models/retrain" "$R" "" ;;
    seed1) rows_done "$RUN/models/retrain_seed1" "$SEED_PAIRS" "" ;;
    lds) for (( seed = 0; seed < GT_SEEDS; seed++ )); do suffixes+=("-s$seed"); done
         rows_done "$RUN/models/lds" "$K" "${suffixes[@]}" ;;
    *) return 1 ;;
  esac
}

unless_done() {  # unless_done STAGE... -- CMD...: CMD unless every output of every STAGE exists
  local stages=() stage done=1
  while [ "$1" != -- ]; do stages+=("$1"); shift; done
  shift
  for stage in "${stages[@]}"; do stage_done "$stage" || done=0; done
  if [ "$done" = 1 ]; then echo "skip: every output of this stage exists"; else "$@"; fi
}

run_local() {
  echo "preset $PRESET -> $RUN (JOBS=$JOBS parallel jobs of $THREADS threads)"
  stage "1/9 train on all data ($TRAIN_STEPS steps)"
  unless_done train -- batched stage_train
  stage "2/9 prune (structured, ratio $RATIO) and fine-tune ($PRUNE_STEPS steps)"
  unless_done prune -- stage_prune
  stage "3/9 masks: $M unlearning subsets, the first $R of them for retraining, $K held-out LDS subsets"
  unless_done masks -- batched stage_masks
  stage "4/9 sparsified unlearning: $M models, $UNLEARN_STEPS steps each"
  unless_done unlearn -- chunks "rows_unlearn:$M"
  stage "5/9 retraining baseline: $R models from scratch (the same $TRAIN_STEPS steps), and $SEED_PAIRS with a second seed"
  unless_done retrain seed1 -- chunks "rows_retrain:$R" "rows_seed1:$SEED_PAIRS"
  stage "6/9 ground truth for LDS: $K held-out subsets retrained from scratch ($TRAIN_STEPS steps), $GT_SEEDS seeds each"
  unless_done lds -- chunks "rows_lds:$K"
  stage "7/9 behaviours: FID ($FEATURES features, $N_SAMPLES DDIM-$DDIM_STEPS samples per model)"
  stage_behaviours
  stage_report
  echo
  echo "done in $(( $(date +%s) - START ))s: $RUN/report.md"
}

# ---- on a Slurm cluster ----------------------------------------------------------------------------
# Every stage is one job, every per-row stage one job array whose tasks take ROWS_PER_TASK rows each;
# jobs wait for the stages they read (--dependency=afterok) and are cancelled when one of those fails
# (--kill-on-invalid-dep). Each job runs this same script with PIPELINE_STAGE set (sbatch passes the
# environment on), so both paths run the same commands with the same settings. A task that is
# requeued or run twice skips the rows already finished (the scripts do), so --requeue is safe.
JOBS_FILE=$RUN/logs/jobs.txt FAILED=$RUN/logs/failed.txt
ROW_STAGES="unlearn:$M retrain:$R seed1:$SEED_PAIRS lds:$K"

rows_of() { local s; for s in $ROW_STAGES; do [ "${s%%:*}" != "$1" ] || echo "${s#*:}"; done; }

run_task() {  # inside a Slurm job: one stage, or one array task's rows of a per-row stage
  name=$PIPELINE_STAGE n="" log="" where="" why=""  # globals: the EXIT trap reads them
  CORES=${SLURM_CPUS_PER_TASK:-$CORES}; export OMP_NUM_THREADS=$CORES
  JOBS=$(( JOBS < CORES ? JOBS : CORES )); THREADS=$(( CORES / JOBS ))
  if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    log=$RUN/logs/$name-${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID.out where="task $SLURM_ARRAY_TASK_ID of "
  else
    log=$RUN/logs/$name-${SLURM_JOB_ID:-0}.out
  fi
  # a failure or a cancellation leaves one line naming this task's log in failed.txt (what WAIT=1 prints)
  trap 'rc=$?; [ "$rc" = 0 ] || echo "${where}stage $name (job ${SLURM_JOB_ID:-?}) ${why:-failed with exit $rc}: $log" >> "$FAILED"' EXIT
  trap 'why="was cancelled or ran out of time"; exit 143' TERM
  n=$(rows_of "$name")
  if [ -n "$n" ]; then
    local a=$(( SLURM_ARRAY_TASK_ID * ROWS_PER_TASK )) b
    b=$(( a + ROWS_PER_TASK < n ? a + ROWS_PER_TASK : n ))
    echo "stage $name: rows $a:$b of $n ($CORES threads)"
    batched "rows_$name" "$a:$b"
  else
    echo "stage $name ($CORES threads)"
    case $name in behaviours|report) "stage_$name" ;; *) batched "stage_$name" ;; esac
  fi
}

submit_all() {
  command -v sbatch >/dev/null || { echo "error: SCHEDULER=slurm but sbatch is not on PATH" >&2; exit 2; }
  # resubmitting while jobs of this run are still queued would run rows twice at once
  if [ -s "$JOBS_FILE" ]; then
    local queued
    queued=$(squeue -h -o %F 2>/dev/null | sort -u | grep -xF -f <(awk '{print $2}' "$JOBS_FILE") | paste -sd, || true)
    [ -z "$queued" ] || { echo "error: jobs of $RUN are still queued ($queued): wait for them or scancel them" >&2; exit 2; }
  fi
  rm -f "$FAILED" "$JOBS_FILE.new"
  local opts=(--parsable --requeue --kill-on-invalid-dep=yes --chdir "$PWD" --cpus-per-task "$CPUS")
  [ -z "$PARTITION" ] || opts+=(--partition "$PARTITION")
  [ -z "$WALLTIME" ] || opts+=(--time "$WALLTIME")
  [ -z "$MEM" ] || opts+=(--mem "$MEM")
  [ "$GPUS" = 0 ] || opts+=(--gres "gpu:$GPUS")
  opts+=($SBATCH_FLAGS)
  declare -A id
  local skipped=()
  submit() {  # submit NAME DEPENDENCY... : one job, or one array when NAME is a per-row stage
    local name=$1 n dep deps=() args
    shift
    if stage_done "$name"; then skipped+=("$name"); return 0; fi
    for dep in "$@"; do [ -z "${id[$dep]:-}" ] || deps+=("${id[$dep]}"); done
    args=(--job-name "dm-$name")
    [ ${#deps[@]} = 0 ] || args+=(--dependency "afterok:$(IFS=:; echo "${deps[*]}")")
    n=$(rows_of "$name")
    if [ -n "$n" ]; then
      [ "$n" -gt 0 ] || return 0
      args+=(--array "0-$(( (n + ROWS_PER_TASK - 1) / ROWS_PER_TASK - 1 ))${ARRAY_MAX:+%$ARRAY_MAX}"
             --output "$RUN/logs/$name-%A_%a.out")
    else
      args+=(--output "$RUN/logs/$name-%j.out")
    fi
    if ! id[$name]=$(sbatch "${opts[@]}" "${args[@]}" --export "ALL,PIPELINE_STAGE=$name" \
                      --wrap "exec bash '$PWD/run_pipeline.sh' '$PRESET'" 2>&1); then
      [ ! -s "$JOBS_FILE.new" ] || scancel $(awk '{print $2}' "$JOBS_FILE.new")  # none half-submitted
      echo "error: sbatch refused stage $name: $(echo "${id[$name]}" | tail -1)" >&2; exit 2
    fi
    id[$name]=${id[$name]%%;*}  # --parsable prints "id;cluster" on a multi-cluster setup
    echo "$name ${id[$name]}" >> "$JOBS_FILE.new"
  }
  submit train
  submit prune train
  submit masks
  submit unlearn prune masks
  submit retrain masks
  submit seed1 masks
  submit lds masks
  submit behaviours prune unlearn retrain seed1 lds
  submit report behaviours
  mv "$JOBS_FILE.new" "$JOBS_FILE"
  local all
  all=$(awk '{print $2}' "$JOBS_FILE" | paste -sd,)
  echo "preset $PRESET -> $RUN: submitted $(wc -l < "$JOBS_FILE") Slurm jobs ($(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$JOBS_FILE"))"
  [ ${#skipped[@]} = 0 ] || echo "  not submitted, their outputs exist: ${skipped[*]}"
  echo "  progress: squeue -j $all    logs: $RUN/logs/    failures: $FAILED    report: $RUN/report.md"
  [ "${WAIT:-0}" = 1 ] || return 0
  # WAIT=1: block until the jobs have left the queue, then say how it ended
  local queue
  while sleep 2; do
    queue=$(squeue -h -o %F) || continue  # the controller may be busy for a moment
    grep -qxF -f <(tr , '\n' <<< "$all") <<< "$queue" || break
  done
  if [ -s "$FAILED" ]; then
    echo "error: the run did not finish:" >&2; cat "$FAILED" >&2; exit 1
  fi
  [ "$RUN/report.md" -nt "$JOBS_FILE" ] || { echo "error: the jobs ended without a report (cancelled?): see $RUN/logs/" >&2; exit 1; }
  echo "done in $(( $(date +%s) - START ))s: $RUN/report.md"
}

case "$SCHEDULER" in
  local) run_local ;;
  slurm) if [ -n "${PIPELINE_STAGE:-}" ]; then run_task; else submit_all; fi ;;
  *) echo "error: unknown SCHEDULER '$SCHEDULER' (local or slurm)" >&2; exit 2 ;;
esac
