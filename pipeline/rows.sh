# How run_pipeline.sh runs its stages on this machine: many script calls in one interpreter, per-row stages split
# into JOBS processes, and finished stages skipped. Sourced by run_pipeline.sh; reads its settings.

# `batched FN ARGS...` runs the shell function FN with its $PY calls collected, then makes them one Python
# process (tools/one_process.py): every interpreter start imports torch, 3-4 s on a 2-core machine, more
# than the work of a tiny preset's row range or a small pool. FN must run its calls one after another
# (nothing in the background) and must not look at their outputs in between.
queue() { CALLS+=(:: "$@"); }
batched() {
  local CALLS=() py=$PY
  PY=queue "$@"
  [ ${#CALLS[@]} = 0 ] || $py -m tools.one_process "${CALLS[@]:1}"
}

# Run per-row stages as JOBS processes of THREADS threads: `chunks FN:N [FN:N ...]` gives process j of JOBS
# the j-th contiguous share of every stage's rows 0..N-1 (FN A:B), all in one interpreter; fails when any of
# them fails. Each stage split on its own: rows of one stage cost alike, rows of two stages need not (a GUDA
# unlearning costs ~17 of sparsified unlearning's), and a resumed stage's rows stay spread over the processes.
chunks() {
  local spec total=0 j pids=() status=0
  for spec; do total=$(( total + ${spec##*:} )); done
  [ "$total" -gt 0 ] || return 0
  for (( j = 0; j < JOBS; j++ )); do  # (a process without rows starts no interpreter)
    ( export OMP_NUM_THREADS=$THREADS; batched share "$j" "$@" ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}
share() {  # share J FN:N...: process J's rows of each stage, [J N / JOBS, (J + 1) N / JOBS)
  local j=$1 spec lo hi
  shift
  for spec; do
    lo=$(( j * ${spec##*:} / JOBS )) hi=$(( (j + 1) * ${spec##*:} / JOBS ))
    [ "$hi" -le "$lo" ] || "${spec%%:*}" "$lo:$hi"
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
    masks) [ -f "$RUN/masks/unlearn.npy" ] && { [ "$R" = 0 ] || [ -f "$RUN/masks/retrain.npy" ]; } &&
           { [ "$K" = 0 ] || [ -f "$RUN/masks/lds.npy" ]; } ;;
    unlearn) rows_done "$RUN/models/unlearn" "$M" "" ;;
    retrain) rows_done "$RUN/models/retrain" "$R" "" ;;
    seed1) rows_done "$RUN/models/retrain_seed1" "$SEED_PAIRS" "" ;;
    lds) for (( seed = 0; seed < GT_SEEDS; seed++ )); do suffixes+=("-s$seed"); done
         rows_done "$RUN/models/lds" "$K" "${suffixes[@]}" ;;
    loo) rows_done "$RUN/models/loo" "$N_LOO" "" ;;
    guda) rows_done "$RUN/models/guda" "$N_GUDA" "" ;;
    ceiling) rows_done "$RUN/models/lds_ceiling" "$CEILING" "" ;;
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
