#!/usr/bin/env bash
# The numerical tests under every CPU kernel set this machine can run and at 1 and 2 threads, each alone in one
# process (pytest -n 0): a recorded value or tolerance that holds on one CPU's rounding only fails here. CI runs
# the portable kernels inside the suite's two workers (.ci/run); this is the rest of the matrix, by hand:
#
#   bash tools/numerics_matrix.sh                 # every capability x {1, 2} threads; one line per cell
#   bash tools/numerics_matrix.sh tests/test_fid.py
#
# Capabilities: torch's own pick for this CPU, AVX2 where the CPU has it and it is not already the pick, and
# `default` (the portable kernels any x86 or ARM CPU runs). ATEN_CPU_CAPABILITY can only lower the pick.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
FILES=("$@")
[ ${#FILES[@]} -gt 0 ] || FILES=(tests/test_ddpm.py tests/test_fid.py tests/test_import.py tests/test_attribution.py
                                 tests/test_behaviors.py tests/test_ekfac.py)
own=$($PY -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
caps=("$own")
[ "$own" != AVX512 ] || caps+=(AVX2)
caps+=(default)
status=0
for cap in "${caps[@]}"; do
  for threads in 1 2; do
    start=$(date +%s)
    out=$(ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$threads TQDM_DISABLE=1 $PY -m pytest -q -n 0 -p no:cacheprovider -rf \
            "${FILES[@]}" 2>&1) || status=1
    echo "capability $cap (this CPU's: $own), $threads thread(s), alone: $(tail -n 1 <<< "$out") [$(( $(date +%s) - start )) s]"
    grep '^FAILED' <<< "$out"
  done
done
exit $status
