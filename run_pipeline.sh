#!/usr/bin/env bash
# The whole method, stage by stage, for one preset (presets/NAME.sh); resumable (finished outputs are skipped,
# so a killed run continues where it stopped):
#
#   bash run_pipeline.sh            # default: 20 contributors of digits, three of them faulty (~35 min)
#   bash run_pipeline.sh quick      # the whole chain in a couple of minutes (used by the tests)
#   bash run_pipeline.sh images     # or small, cifar16, cifar10 (the paper's settings): docs/presets.md
#   RUN=runs/mine K=48 bash run_pipeline.sh        # any setting (presets/*.sh) can be overridden
#   FULL=x.pt K=0 R=0 bash run_pipeline.sh         # attribute a model you have (tools/import_model.py)
#   SCHEDULER=slurm bash run_pipeline.sh quick     # every stage a Slurm job (pipeline/slurm.sh)
#   CHECK_ONLY=1 bash run_pipeline.sh              # check every setting (a run checks them first too), write nothing
#
# Stages: train, prune, masks, unlearn, retrain baseline, LDS models (and leave-one-out retrainings), behaviours,
# baselines, fit, evaluate. How they run here (processes, skipping what exists): pipeline/rows.sh.
set -euo pipefail
cd "$(dirname "$0")"
PRESET=${1:-default}
PY=${PYTHON:-python}

# Settings: the environment's, then the preset's, then presets/defaults.sh; the first that sets a NAME wins (an
# empty value counts as unset).
settings() {
  local line name
  while IFS= read -r line; do
    [[ $line =~ ^([A-Z][A-Z0-9_]*)= ]] || continue
    name=${BASH_REMATCH[1]}
    [ -n "${!name:-}" ] || eval "$line"
  done < "$1"
}
[[ "$PRESET" =~ ^[a-z0-9]+$ ]] && [ "$PRESET" != defaults ] && [ -f "presets/$PRESET.sh" ] || {
  echo "error: unknown preset '$PRESET' ($(ls presets | sed -n 's/\.sh$//p' | grep -vx defaults | paste -sd ' '))" >&2
  exit 2; }
GRID_GIVEN=${GRID:-} DATA_GIVEN=${DATA:-} CORRUPT_GIVEN=${CORRUPT:-}
settings "presets/$PRESET.sh"
settings presets/defaults.sh
# A user's data (DATA= other than the preset's own) is trained on as given: a preset's planted faults (CORRUPT) are
# an experiment on its own data, and alter another's only where CORRUPT is set explicitly.
USERS_DATA=0
if [ -n "$DATA_GIVEN" ] && [ "$DATA_GIVEN" != "$(sed -n 's/^DATA=\([^ ]*\).*/\1/p' "presets/$PRESET.sh")" ]; then
  USERS_DATA=1
  [ -n "$CORRUPT_GIVEN" ] || CORRUPT=0
fi

# One recipe: the full model (stage 1), the retraining baseline (stage 5) and the ground truth (stage 6) are all
# trained by train_ddpm.py with TRAIN_STEPS, BATCH and TRAIN_FLAGS, as the paper retrains from scratch with the
# full training procedure that unlearning approximates.
[[ "$GT_SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GT_SEEDS must be a positive integer, got '$GT_SEEDS'" >&2; exit 2; }
[ -z "${RETRAIN_STEPS:-}" ] || { echo "error: RETRAIN_STEPS is gone: one recipe (TRAIN_STEPS) trains the full model, the baseline and the ground truth" >&2; exit 2; }
# Every setting is checked here, before anything is written: the numbers and switches this file reads, then every
# value a script owns, asked of that script (check_settings below). A bad one ends in one error line and exit 2.
for v in DRAWS CEILING K R M GT_SEEDS SEED_PAIRS JOBS QUALITY_DDIM GPUS SEED BANK_K BANK_R; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "error: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
for v in M ROWS_PER_TASK CPUS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "error: $v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
[[ "$ARRAY_MAX" =~ ^([1-9][0-9]*)?$ ]] || { echo "error: ARRAY_MAX must be empty or a positive integer, got '$ARRAY_MAX'" >&2; exit 2; }
[ "$DRAWS" -ge 1 ] && [ "$JOBS" -ge 1 ] || { echo "error: DRAWS and JOBS must be at least 1" >&2; exit 2; }
case "$SCHEDULER" in local|slurm) ;; *) echo "error: unknown SCHEDULER '$SCHEDULER' (local or slurm)" >&2; exit 2 ;; esac
[[ "$DEVICE" =~ ^(auto|cpu|cuda(:[0-9]+)?|mps)$ ]] || { echo "error: DEVICE must be auto, cpu, cuda, cuda:N or mps, got '$DEVICE'" >&2; exit 2; }
[ ! -e "$RUN" ] || [ -d "$RUN" ] || { echo "error: RUN=$RUN exists and is not a folder" >&2; exit 2; }
[ "$CEILING" -le "$K" ] || { echo "error: CEILING=$CEILING: at most K=$K held-out subsets can get another seed" >&2; exit 2; }
[[ "$REPEATS" =~ ^(auto|[1-9][0-9]*)$ ]] || { echo "error: REPEATS must be auto or a positive integer, got '$REPEATS'" >&2; exit 2; }
[[ "$BANK" =~ ^(0|auto|[a-z0-9]+)$ ]] || { echo "error: BANK must be 0, auto or a bank's name, got '$BANK'" >&2; exit 2; }
[[ "$BANK" =~ ^(0|auto)$ ]] || [ -f "${BANK_DIR:-bank}/$BANK/plan.json" ] ||
  { echo "error: no bank '$BANK' ($(cd "${BANK_DIR:-bank}" && ls -d */plan.json 2>/dev/null | cut -d/ -f1 | paste -sd ' '))" >&2; exit 2; }
case "$LOO" in 0|1|auto) ;; *) echo "error: LOO must be 0, 1 or auto, got '$LOO'" >&2; exit 2 ;; esac
case "$GUDA" in 0|1) ;; *) echo "error: GUDA must be 0 or 1, got '$GUDA'" >&2; exit 2 ;; esac
[ "$BEHAVIORS" = all ] || [ "$HEADLINE" = auto ] || [[ ",$BEHAVIORS," == *",${HEADLINE%%[:@]*},"* ]] ||
  { echo "error: HEADLINE=$HEADLINE is not among BEHAVIORS=$BEHAVIORS: the report cannot lead with a behaviour no model has" >&2; exit 2; }
[ "$GUDA" = 0 ] || [ -n "$CONTRIBUTORS" ] || { echo "error: GUDA=1 unlearns each contributor once: set CONTRIBUTORS" >&2; exit 2; }
[[ "$GUDA_STEPS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GUDA_STEPS must be a positive integer, got '$GUDA_STEPS'" >&2; exit 2; }
[[ "$PROXY" =~ ^[0-9]+$ ]] || { echo "error: PROXY must be a whole number (coalitions), got '$PROXY'" >&2; exit 2; }
[ "$PROXY" = 0 ] || [ -n "$CONTRIBUTORS" ] || { echo "error: PROXY=$PROXY values coalitions of contributors: set CONTRIBUTORS" >&2; exit 2; }
[ "$PROXY" = 0 ] || [[ ! "$HEADLINE" =~ ^(loss|elbo)$ ]] || { echo "error: PROXY=$PROXY values coalitions by their samples, and HEADLINE=$HEADLINE is measured on the reference images: set HEADLINE=fid (or another sampled behaviour) or PROXY=0" >&2; exit 2; }
case "$METHOD" in datamodel|banzhaf|shapley) ;; *) echo "error: METHOD must be datamodel, banzhaf or shapley, got '$METHOD'" >&2; exit 2 ;; esac
[ -z "$FULL" ] || [ -f "$FULL" ] || { echo "error: FULL=$FULL: no such checkpoint" >&2; exit 2; }
[ "$R" -gt 0 ] || SEED_PAIRS=0  # the second-seed pairs retrain the baseline's first rows
[ "$K" != 0 ] || { BASELINES=none; GUDA=0; }  # no held-out retrainings: nothing to compare them on
[ "$ALSO" != none ] || ALSO=
if [ "$LOO" = auto ]; then [ -n "$CONTRIBUTORS" ] && [ "$BASELINES" != none ] && LOO=1 || LOO=0; fi
SAMPLED=1; [[ ",$BEHAVIORS," =~ ^(,(loss|elbo))+,$ ]] && SAMPLED=0  # loss and elbo only: no sample is ever drawn
[ "$SAMPLED" = 1 ] && : "${GRID:=100}" || GRID=${GRID_GIVEN:-0}  # the sample grids beside checkpoints
RECIPE_FLAGS=(); [ -z "$FULL" ] || RECIPE_FLAGS=(--recipe-from "$RUN/full.pt")  # a given model's recipe
UNLEARN_START=$RUN/pruned.pt; [ "$UNLEARN_METHOD" != gd-full ] || UNLEARN_START=$RUN/full.pt
GROUP_FLAGS=(); [ -z "$CONTRIBUTORS" ] || GROUP_FLAGS=(--groups "$CONTRIBUTORS")
POOL_ALPHA=$ALPHA; [ "$METHOD" != shapley ] || POOL_ALPHA=shapley  # Shapley values: Shapley-kernel subsets
# Single-process stages use every core; per-row stages run JOBS processes at a time, each with an equal share of
# the cores (torch reads OMP_NUM_THREADS).
CORES=${OMP_NUM_THREADS:-$(nproc)}
THREADS=$(( CORES / JOBS )); [ "$THREADS" -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$CORES

DATA_FLAGS=(--data "$DATA" --corrupt "$CORRUPT" --fault "$FAULT")
COMMON_TRAIN=(--arch "$ARCH" --batch-size "$BATCH" --device "$DEVICE" $TRAIN_FLAGS)
FID_SETTINGS=(--data "$DATA" --n-samples "$N_SAMPLES" --ddim-steps "$DDIM_STEPS" --features "$FEATURES"
              --behaviors "$BEHAVIORS" --loss-draws "$LOSS_DRAWS")
[ "$N_REF" != 0 ] && FID_SETTINGS+=(--n-ref "$N_REF")
[ -n "$REF_DATA" ] && FID_SETTINGS+=(--ref-data "$REF_DATA")
[ -n "$INCEPTION_WEIGHTS" ] && FID_SETTINGS+=(--inception-weights "$INCEPTION_WEIGHTS")
FID_FLAGS=("${FID_SETTINGS[@]}" --device "$DEVICE")
# What a ground-truth bank (bank.py) must have been made with for this run to take its retrainings: the data, the
# contributors, the recipe and the behaviours' settings (not the device).
BANK_FLAGS=(--data-flags "${DATA_FLAGS[*]}" --groups "$CONTRIBUTORS" --train-flags "--arch $ARCH --batch-size $BATCH
            $TRAIN_FLAGS --steps $TRAIN_STEPS" --fid-flags "${FID_SETTINGS[*]}")
BANK_SIZES=(--k "$BANK_K" --r "$(( BANK_R > R ? BANK_R : R ))")  # what a run takes of a bank, and needs it to hold
START=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }
source pipeline/rows.sh

# ---- the stages: each per-row one is a function of a row range A:B of its mask file -------------------------
stage_train() {
  if [ -n "$FULL" ]; then  # the model to attribute is given: a copy of it is the run's full model
    [ -f "$RUN/full.pt" ] || { cp "$FULL" "$RUN/.full.pt.tmp" && mv "$RUN/.full.pt.tmp" "$RUN/full.pt"; }
    echo "full model: $FULL"
  else
    $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$TRAIN_STEPS" --seed "$SEED" --out "$RUN/full.pt" \
      --grid "$GRID" --ddim-steps "$DDIM_STEPS"
  fi
  if [ "$METHOD" = shapley ]; then  # v(empty): the model that saw no data
    $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" "${RECIPE_FLAGS[@]}" --init-only --seed "$SEED" \
      --out "$RUN/untrained.pt" --grid 0
  fi
}
stage_prune() {
  $PY prune.py --ckpt "$RUN/full.pt" --out "$RUN/pruned.pt" --ratio "$RATIO" --mode structured \
    "${DATA_FLAGS[@]}" --steps "$PRUNE_STEPS" --batch-size "$BATCH" --device "$DEVICE" --grid "$GRID" \
    --ddim-steps "$DDIM_STEPS" --seed "$SEED"
}
stage_masks() {
  $PY make_subsets.py "${DATA_FLAGS[@]}" "${GROUP_FLAGS[@]}" --count "$M" --alpha "$POOL_ALPHA" --seed $(( 1 + 100 * SEED )) \
    --out "$RUN/masks/unlearn.npy" --corrupted-out "$RUN/corrupted.npy"
  if [ "$BANKED" = 1 ]; then  # the held-out, retraining and leave-one-out masks and behaviours: the bank's
    $PY bank.py use "$BANK_NAME" --run "$RUN" "${BANK_FLAGS[@]}" "${BANK_SIZES[@]}" \
      $([ "$LOO" = 0 ] && [ "$GUDA" = 0 ] || echo --loo)
    return
  fi
  [ "$R" = 0 ] || $PY make_subsets.py --count "$R" --first-of "$RUN/masks/unlearn.npy" --out "$RUN/masks/retrain.npy"
  [ "$K" = 0 ] || $PY make_subsets.py "${DATA_FLAGS[@]}" "${GROUP_FLAGS[@]}" --count "$K" --alpha "$ALPHA" --seed 2 \
    --out "$RUN/masks/lds.npy"
  [ "$LOO" = 0 ] && [ "$GUDA" = 0 ] || $PY make_subsets.py "${DATA_FLAGS[@]}" "${GROUP_FLAGS[@]}" --alpha loo \
                                         --out "$RUN/masks/loo.npy"
}
loo_rows() {  # loo_rows SWITCH: one row per contributor (or image) of masks/loo.npy, or 0 when the switch is 0
  if [ "$1" = 0 ]; then echo 0
  elif [ -f "$RUN/masks/loo.npy" ]; then $PY -c "import numpy; print(len(numpy.load('$RUN/masks/loo.npy')))"
  elif [[ "$CONTRIBUTORS" =~ ^random:([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"
  else echo unknown  # e.g. LOO=1 at the image level before the masks stage: known once masks/loo.npy exists
  fi
}
rows_unlearn() {
  $PY unlearn.py --ckpt "$UNLEARN_START" "${DATA_FLAGS[@]}" --masks "$RUN/masks/unlearn.npy" --indices "$1" \
    --out "$RUN/models/unlearn" --method "$UNLEARN_METHOD" --steps "$UNLEARN_STEPS" --batch-size "$BATCH" \
    --device "$DEVICE" --seed "$SEED" $UNLEARN_FLAGS
}
retrain() {  # retrain MASKS SEED FOLDER SUFFIX A:B: from scratch on rows A..B-1, with the full model's recipe
  $PY train_ddpm.py "${DATA_FLAGS[@]}" "${COMMON_TRAIN[@]}" --steps "$TRAIN_STEPS" "${RECIPE_FLAGS[@]}" --seed "$2" \
    --grid 0 --masks "$1" --indices "$5" --out "$3" --suffix="$4"
}
rows_guda() {  # GUDA: each contributor unlearned once from the full model (unlearn.py --method guda)
  $PY unlearn.py --ckpt "$RUN/full.pt" "${DATA_FLAGS[@]}" --masks "$RUN/masks/loo.npy" --indices "$1" \
    --out "$RUN/models/guda" --method guda --steps "$GUDA_STEPS" --batch-size "$BATCH" --device "$DEVICE" --seed "$SEED" \
    $GUDA_FLAGS
}
rows_retrain() { retrain "$RUN/masks/retrain.npy" 0 "$RUN/models/retrain" "" "$1"; }
rows_seed1() { retrain "$RUN/masks/retrain.npy" 1 "$RUN/models/retrain_seed1" "" "$1"; }
rows_loo() { retrain "$RUN/masks/loo.npy" "$SEED" "$RUN/models/loo" "" "$1"; }  # the full model's seed: only the data differ
rows_ceiling() { retrain "$RUN/masks/lds.npy" "$GT_SEEDS" "$RUN/models/lds_ceiling" "" "$1"; }  # one seed more
rows_lds() {  # every held-out subset with GT_SEEDS training seeds; its behaviour is their mean
  local seed
  for (( seed = 0; seed < GT_SEEDS; seed++ )); do retrain "$RUN/masks/lds.npy" "$seed" "$RUN/models/lds" "-s$seed" "$1"; done
}
source pipeline/behaviours.sh  # stage_behaviours: every model's behaviours, in two lanes
stage_baselines() {  # the field's baselines, from the full model (and the leave-one-out retrainings)
  local only=(); [ "$BASELINES" = all ] || only=(--only "$BASELINES")
  [ "$BASELINES" = none ] || $PY baselines.py --run "$RUN" "${DATA_FLAGS[@]}" --headline "$HEADLINE" --device "$DEVICE" \
    "${only[@]}" ${INCEPTION_WEIGHTS:+--inception-weights "$INCEPTION_WEIGHTS"} $BASELINE_FLAGS
}
fits() {
  local pool ends
  for pool in unlearn $([ "$R" = 0 ] || echo retrain); do
    # Shapley values: v(all) is the pruned model fine-tuned on all data for unlearning, the full model for retraining
    ends=(); [ "$METHOD" != shapley ] || ends=(--v-empty "$RUN/behaviors/untrained.npz"
                                               --v-full "$RUN/behaviors/$([ $pool = unlearn ] && echo pruned || echo full).npz")
    $PY fit_datamodel.py --masks "$RUN/masks/$pool.npy" --behaviors "$RUN/behaviors/$pool.npz" --method "$METHOD" \
      --behavior "$HEADLINE" "${ends[@]}" --out "$RUN/attributions/$pool.npz"
  done
}
evaluate() {
  $PY eval_lds.py --run "$RUN" "${DATA_FLAGS[@]}" --method "$METHOD" --headline "$HEADLINE" --draws "$DRAWS" \
    ${ALSO:+--also "$ALSO"} --compare "$COMPARE" --margin "$MARGIN" --seed "$SEED"
}
stage_report() {
  stage "9/10 attributions ($METHOD on every model of each pool)"
  batched fits
  stage "10/10 LDS, budget curve, comparison and report"
  evaluate
}

# Every value a script owns (a dataset, a contributors file, a reference set, a behaviour, a baseline, an
# estimator, a flag of TRAIN_FLAGS...), asked of that script before the first stage: the calls the stages will
# make, collected as `batched` collects them (PY=queue) and parsed and checked by tools/one_process.py --check,
# which reads no file of the run and writes nothing. A row stage's call is checked on its first row.
check_settings() {
  local CALLS=() py=$PY
  PY=queue
  [ -n "$FULL" ] || stage_train  # (a given FULL is copied, not trained: its file is checked above)
  stage_prune; stage_masks; rows_unlearn 0:1
  [ "$GUDA" = 0 ] || rows_guda 0:1
  [ "$R" = 0 ] || rows_retrain 0:1
  [ "$K" = 0 ] || rows_lds 0:1
  lane_a; proxy; stage_baselines; fits; evaluate
  PY=$py
  $PY -m tools.one_process --check "${CALLS[@]:1}"
}

# What the run trains on, and the extras that multiply its cost (each the user's to turn off)
announce() {
  local extras=() unit=image
  [ -z "$CONTRIBUTORS" ] || unit=contributor
  if [ "$CORRUPT" = 0 ] || [ "$CORRUPT" = 0.0 ]; then
    echo "data: $DATA, used as given (no fault planted$([ "$USERS_DATA" = 0 ] || echo "; CORRUPT=F FAULT=KINDS would plant some"))"
  else
    echo "data: $DATA with planted faults: $FAULT on a fraction $CORRUPT of the images (CORRUPT=0: none)"
  fi
  [ "$LOO" = 0 ] || extras+=("LOO=1: a retraining per $unit (leave-one-out)")
  [ "$GUDA" = 0 ] || extras+=("GUDA=1: a fine-tune of the full model per contributor, $GUDA_STEPS steps each")
  [ -z "$ALSO" ] || extras+=("ALSO=$ALSO: more estimators of the unlearned models (seconds to minutes)")
  [ "$PROXY" = 0 ] || extras+=("PROXY=$PROXY: a contributor-conditioned model and $PROXY coalitions sampled")
  [ -z "$BANK_LINE" ] || echo "$BANK_LINE"
  [ ${#extras[@]} = 0 ] || echo "extras (0 or none turns each off): $(IFS=';'; echo "${extras[*]}" | sed 's/;/; /g')"
}

# The ground truth from a bank (bank.py: retrainings measured once, committed as data) where BANK allows and this
# run's data, contributors, recipe and behaviours are the bank's; it says in one line which, and why.
BANKED=0 BANK_NAME= BANK_LINE=
decide_bank() {
  [ "$BANK" != 0 ] && [ "$K" != 0 ] && [ -z "$FULL" ] || return 0
  BANK_NAME=$BANK; [ "$BANK_NAME" != auto ] || BANK_NAME=$PRESET
  if [ "$BANK" = auto ] && [ ! -f "${BANK_DIR:-bank}/$BANK_NAME/plan.json" ]; then return 0; fi  # (no bank)
  local py=$PY; [ "$py" != echo ] || py=python  # (a dry run, PYTHON=echo, decides it as the run would)
  if BANK_LINE=$($py bank.py use "$BANK_NAME" --run "$RUN" "${BANK_FLAGS[@]}" "${BANK_SIZES[@]}" --check \
                 $([ "$LOO" = 0 ] && [ "$GUDA" = 0 ] || echo --loo)); then BANKED=1; fi
}

run_local() {
  echo "preset $PRESET -> $RUN (JOBS=$JOBS parallel jobs of $THREADS threads)"
  announce
  if [ -n "$FULL" ]; then stage "1/10 the full model: $FULL"; else stage "1/10 train on all data ($TRAIN_STEPS steps)"; fi
  unless_done train -- batched stage_train
  stage "2/10 prune (structured, ratio $RATIO) and fine-tune ($PRUNE_STEPS steps)"
  unless_done prune -- stage_prune
  if [ "$BANKED" = 1 ]; then stage "3/10 masks: $M unlearning subsets; the held-out and retraining subsets of bank/$BANK_NAME"
  else stage "3/10 masks: $M unlearning subsets, the first $R of them for retraining, $K held-out LDS subsets"; fi
  unless_done masks -- batched stage_masks
  N_LOO=$(loo_rows "$LOO") N_GUDA=$(loo_rows "$GUDA")
  stage "4/10 sparsified unlearning ($UNLEARN_METHOD): $M models, $UNLEARN_STEPS steps each; $N_GUDA by GUDA"
  unless_done unlearn guda -- chunks "rows_unlearn:$M" "rows_guda:$N_GUDA"
  if [ "$BANKED" = 1 ]; then
    stage "5-6/10 retraining baseline and ground truth: bank/$BANK_NAME's retrainings (none here; BANK=0 retrains them)"
  else
    stage "5/10 retraining baseline: $R models from scratch (the same $TRAIN_STEPS steps), and $SEED_PAIRS with a second seed"
    unless_done retrain seed1 -- chunks "rows_retrain:$R" "rows_seed1:$SEED_PAIRS"
    stage "6/10 ground truth for LDS: $K held-out subsets retrained from scratch ($TRAIN_STEPS steps), $GT_SEEDS seeds each; $N_LOO leave-one-out retrainings; $CEILING with one more seed (the ceiling)"
    unless_done lds loo ceiling -- chunks "rows_lds:$K" "rows_loo:$N_LOO" "rows_ceiling:$CEILING"
  fi
  if [ "$SAMPLED" = 1 ]; then
    stage "7/10 behaviours $BEHAVIORS ($FEATURES features, $N_SAMPLES DDIM-$DDIM_STEPS samples per model)"
  else
    stage "7/10 behaviours $BEHAVIORS ($LOSS_DRAWS draws per reference image; no sampling)"
  fi
  stage_behaviours
  stage "8/10 baselines: $BASELINES"
  stage_baselines
  stage_report
  echo
  echo "done in $(( $(date +%s) - START ))s: $RUN/report.md"
}

# REPEATS independent repetitions of the method's side (SEED, SEED + 1, ...: the full model, pruning, the unlearning
# subsets and seeds, the baselines), each a run of its own in RUN/repN against the one ground truth, then one report
# over them all (combine.py): its intervals and tests carry the run-to-run noise that one run cannot show.
repeat_all() {
  local r
  echo "preset $PRESET -> $RUN: $REPEATS repetitions of the method's side (RUN/rep0 ... rep$(( REPEATS - 1 )))"
  [ -z "$BANK_LINE" ] || echo "$BANK_LINE"
  for (( r = 0; r < REPEATS; r++ )); do
    echo; echo "##### repetition $(( r + 1 ))/$REPEATS (SEED=$(( SEED + r ))): $RUN/rep$r"
    REPEATS=1 SEED=$(( SEED + r )) RUN=$RUN/rep$r bash run_pipeline.sh "$PRESET" || return $?
  done
  if [ "$SCHEDULER" = slurm ]; then
    echo; echo "when every repetition's jobs have finished: $PY combine.py --run $RUN"
  else
    echo; $PY combine.py --run "$RUN"; echo "done in $(( $(date +%s) - START ))s: $RUN/report.md"
  fi
}

# One compound command, read whole before it runs, to its exit: bash reads a script as it runs it, and an edit of
# this file during a run (from the settings' check on) must not make it read on from a shifted offset (it ran the
# whole pipeline again).
{
  [ -n "${PIPELINE_STAGE:-}" ] || check_settings  # (a Slurm job's settings were checked when it was submitted)
  [ "${CHECK_ONLY:-0}" = 0 ] || { echo "settings of preset $PRESET checked: nothing written"; exit 0; }
  decide_bank
  # REPEATS=auto: the time a bank frees goes to repetitions of the method's side (3); a run that retrains its own
  # ground truth runs once
  if [ "$REPEATS" = auto ]; then [ "$BANKED" = 1 ] && REPEATS=3 || REPEATS=1; fi
  if [ "$REPEATS" -gt 1 ]; then repeat_all; exit; fi
  mkdir -p "$RUN/masks" "$RUN/models" "$RUN/behaviors" "$RUN/attributions" "$RUN/logs"
  N_LOO=$(loo_rows "$LOO") N_GUDA=$(loo_rows "$GUDA")
  [ "$SCHEDULER" = local ] || [ -n "${PIPELINE_STAGE:-}" ] || [ -z "$BANK_LINE" ] || echo "$BANK_LINE"
  case "$SCHEDULER" in
    local) run_local ;;
    slurm) source pipeline/slurm.sh; if [ -n "${PIPELINE_STAGE:-}" ]; then run_task; else submit_all; fi ;;
  esac
  exit
}
