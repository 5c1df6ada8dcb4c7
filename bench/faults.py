"""Method x fault: the default's contributors and estimator (`bash run_pipeline.sh small`, the `small` preset: the
default's short recipe of before issue 28, 12 minutes a run; --preset default for the main job itself, ~30 min) on the
digits with one planted fault at a
time (data.FAULTS: 2 of 20 contributors give faulty images, CORRUPT 0.1), and on the default's own mix; one table of
every method of the report's comparison (sparsified unlearning, retraining at equal compute, each baseline): the
headline LDS and the bad-contributor AUC per fault, and each method's compute in retrainings; then the default's
declared comparisons per fault, each with its interval, verdict and minimum detectable difference.

    python -m bench.faults                                   # every fault, then the table (about 12 min a fault)
    python -m bench.faults --faults blur,duplicate           # some of them
    python -m bench.faults --table-only                      # the table of the runs already made
    python -m bench.faults --env "K=48 GT_SEEDS=2"           # any setting of the preset, for every run (this replaces
                                                             # what the runs take from presets/default.sh: its GUDA,
                                                             # ALSO, COMPARE and BASELINE_FLAGS)

Runs land in runs/faults/<fault>/ (a rerun resumes them, as any run of the pipeline); the mix column reads
runs/small (made by `bash run_pipeline.sh small` when missing). No seed is chosen per fault: every run uses the
preset's seeds.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

import runfolder
from data import FAULTS, HELD_OUT_FAULTS, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what each fault's run takes from the default preset (presets/default.sh), so that it reports the default's rows and
# declared family, the gradient baselines at the default's settings
FROM_DEFAULT = ("GUDA", "ALSO", "COMPARE", "BASELINE_FLAGS")


def default_env():
    """The default preset's FROM_DEFAULT settings, as VAR=VALUE words (read by bash, as run_pipeline.sh reads it)."""
    out = subprocess.run(["bash", "-c", ". presets/default.sh && printf '%s\\n' " + " ".join(f'"${v}"' for v in FROM_DEFAULT)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    return " ".join(shlex.quote(f"{k}={v}") for k, v in zip(FROM_DEFAULT, out))

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated faults (data.FAULTS), each its own run")
    p.add_argument("--corrupt", default="0.1", help="share of faulty images in each single-fault run")
    p.add_argument("--preset", default="small", help="the preset of every run (run_pipeline.sh)")
    p.add_argument("--mix", default="runs/small", help="comma-separated runs of the preset on fault mixes, one column "
                   "each (the preset's own run folder: its own mix, made when missing); '' for none")
    p.add_argument("--out", default="runs/faults", help="folder of the single-fault runs")
    p.add_argument("--env", default=None, help="settings for every run, as VAR=VALUE words (default: the "
                   "default preset's rows and declared comparisons: GUDA, SurrogateSHAP's estimator, the hybrid, paired "
                   "and unpaired sampling; EK-FAC influence is one of the baselines)")
    p.add_argument("--table-only", action="store_true", help="print the table of the runs that exist, run nothing")
    return p.parse_args(argv)


def run_preset(preset, run, env):
    """`bash run_pipeline.sh PRESET` into `run` with the given settings; its log beside it."""
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "pipeline.log"), "a") as log:
        r = subprocess.run(["bash", "run_pipeline.sh", preset], cwd=ROOT, env=dict(os.environ, RUN=run, **env), stdout=log,
                           stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"error: the run {run} failed (exit {r.returncode}): see {run}/pipeline.log")


def table(columns):
    """Markdown: one row per method, per fault its headline LDS / AUC, then its compute in retrainings."""
    results = {name: json.load(open(runfolder.results(run))) for name, run in columns.items()
               if os.path.exists(runfolder.results(run))}
    if not results:
        return "no finished run yet"
    methods = list(dict.fromkeys(c["name"] for r in results.values() for c in r.get("comparison", [])))
    headline = next(iter(results.values()))["headline"]
    lines = [f"LDS ({headline}, K held-out subsets as the preset) / bad-contributor AUC, per planted fault ('held out': "
             f"a fault added after every setting was chosen, data.HELD_OUT_FAULTS):", "",
             "| method | " + " | ".join(f"{f} (held out)" if f in HELD_OUT_FAULTS else f for f in results)
             + " | compute (retrainings): training / with behaviours |",
             "| --- " * (len(results) + 2) + "|"]
    for m in methods:
        cells, compute = [], "-"
        for r in results.values():
            c = next((c for c in r["comparison"] if c["name"] == m), None)
            if c is None or headline not in c["lds"]:
                cells.append("-")
                continue
            compute = f"{c['compute']:.2f} / {c.get('compute_all', c['compute']):.2f}"
            auc = f" / {c['auc']:.2f}" if "auc" in c else ""
            cells.append(f"{c['lds'][headline]['lds']:.2f}{auc}")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {compute} |")
    return "\n".join(lines + declared_table(results))


def declared_table(results):
    """The declared comparisons of every run (the preset's COMPARE, fixed before the runs), per fault: unlearning's
    LDS minus the method's (A/B: row A minus row B), Holm- and TOST-tested within its run, and the verdict word."""
    keys = list(dict.fromkeys(k for r in results.values() for k in (r.get("declared") or {})))
    if not keys:
        return []
    lines = ["", "Declared comparisons, per fault (difference [95%], verdict; Holm over each run's family, TOST within "
             "its margin; the minimum detectable difference in brackets):", "",
             "| unlearning minus (or A minus B) | " + " | ".join(
                 f"{f} (held out)" if f in HELD_OUT_FAULTS else f for f in results) + " |",
             "| --- " * (len(results) + 1) + "|"]
    for key in keys:
        cells = []
        for r in results.values():
            e = (r.get("declared") or {}).get(key)
            cells.append(f"{e['diff']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}] {e['verdict']} ({e['mdd']:.2f})"
                         if e else "-")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def main(args):
    env = dict(w.split("=", 1) for w in shlex.split(default_env() if args.env is None else args.env))
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        sys.exit(f"error: unknown fault {', '.join(unknown)}: use some of {', '.join(FAULTS)}")
    columns = {f: os.path.join(args.out, f) for f in faults}
    mixes = [m for m in args.mix.split(",") if m]
    for m in mixes:
        columns["default mix" if os.path.normpath(m) == os.path.join("runs", args.preset) else os.path.basename(m)] = m
    if not args.table_only:
        for fault, folder in columns.items():
            if not os.path.exists(runfolder.results(folder)):
                print(f"running {fault} -> {folder}", flush=True)
                extra = {} if folder in mixes else dict(FAULT=fault, CORRUPT=args.corrupt)
                run_preset(args.preset, folder, dict(env, **extra))
    print(table(columns))


if __name__ == "__main__":
    run(main, parse_args())
