# run_pipeline.sh on a Slurm cluster (SCHEDULER=slurm): every stage is one job, every per-row stage one job array
# whose tasks take ROWS_PER_TASK rows each; jobs wait for the stages they read (--dependency=afterok) and are
# cancelled when one of those fails (--kill-on-invalid-dep). Each job runs run_pipeline.sh again with
# PIPELINE_STAGE set (sbatch passes the environment on), so both paths run the same stage functions with the same
# settings. A task that is requeued or run twice skips the rows already finished (the scripts do), so --requeue is
# safe. What each job asks for: CPUS per task, MEM, WALLTIME, PARTITION, GPUS=N (--gres=gpu:N); one left unset whose
# sbatch variable is set (SBATCH_PARTITION, SBATCH_TIMELIMIT, SBATCH_MEM_PER_NODE, SBATCH_GRES) leaves it to that
# default. Sourced by run_pipeline.sh.
[ -n "${SBATCH_TIMELIMIT:-}" ] && : "${WALLTIME:=}" || : "${WALLTIME:=${TASK_TIME:-12:00:00}}"
[ -n "${SBATCH_MEM_PER_NODE:-}${SBATCH_MEM_PER_CPU:-}" ] && : "${MEM:=}" || : "${MEM:=${TASK_MEM:-8G}}"
JOBS_FILE=$RUN/logs/jobs.txt FAILED=$RUN/logs/failed.txt
ROW_STAGES="unlearn:$M guda:$N_GUDA retrain:$R seed1:$SEED_PAIRS lds:$K loo:$N_LOO ceiling:$CEILING"
[ "$BANKED" = 0 ] || ROW_STAGES="unlearn:$M guda:$N_GUDA retrain:0 seed1:0 lds:0 loo:0 ceiling:0"  # the bank's

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
  [ "$N_LOO" != unknown ] && [ "$N_GUDA" != unknown ] || { echo "error: LOO=1 or GUDA=1 with CONTRIBUTORS='$CONTRIBUTORS': how many leave-one-out retrainings is known once masks/loo.npy exists; run the masks stage first (PIPELINE_STAGE=masks bash run_pipeline.sh ...)" >&2; exit 2; }
  # resubmitting while jobs of this run are still queued would run rows twice at once
  if [ -s "$JOBS_FILE" ]; then
    local queued
    queued=$(squeue -h -o %F 2>/dev/null | sort -u | grep -xF -f <(awk '{print $2}' "$JOBS_FILE") | paste -sd, || true)
    [ -z "$queued" ] || { echo "error: jobs of $RUN are still queued ($queued): wait for them or scancel them" >&2; exit 2; }
  fi
  local opts=(--parsable --requeue --kill-on-invalid-dep=yes --chdir "$PWD" --cpus-per-task "$CPUS")
  [ -z "$PARTITION" ] || opts+=(--partition "$PARTITION")
  [ -z "$WALLTIME" ] || opts+=(--time "$WALLTIME")
  [ -z "$MEM" ] || opts+=(--mem "$MEM")
  [ "$GPUS" = 0 ] || opts+=(--gres "gpu:$GPUS")
  opts+=($SBATCH_FLAGS)
  # what every job asks for (partition, time, memory, GPUs, SBATCH_FLAGS), put to the cluster before any is submitted
  local refusal
  refusal=$(sbatch --test-only "${opts[@]}" --wrap true 2>&1) ||
    { echo "error: sbatch refuses this run's job settings: $(echo "$refusal" | tail -1)" >&2; exit 2; }
  rm -f "$FAILED" "$JOBS_FILE.new"
  declare -A id
  local skipped=()
  submit() {  # submit NAME DEPENDENCY... : one job, or one array when NAME is a per-row stage
    local name=$1 n dep deps=() args
    shift
    n=$(rows_of "$name")
    [ "$n" != 0 ] || return 0  # a per-row stage without rows (no second seed, no leave-one-out)
    if stage_done "$name"; then skipped+=("$name"); return 0; fi
    for dep in "$@"; do [ -z "${id[$dep]:-}" ] || deps+=("${id[$dep]}"); done
    args=(--job-name "dm-$name")
    [ ${#deps[@]} = 0 ] || args+=(--dependency "afterok:$(IFS=:; echo "${deps[*]}")")
    if [ -n "$n" ]; then
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
  submit guda train masks
  submit retrain masks
  submit seed1 masks
  submit lds masks
  submit loo masks
  submit ceiling masks
  submit behaviours prune unlearn guda retrain seed1 lds loo ceiling
  submit baselines behaviours
  submit report behaviours baselines
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
