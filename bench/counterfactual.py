"""Acting on the attributions: remove the most harmful contributors (or images) by each method, retrain from scratch
with the full model's recipe, and measure the headline behaviour against the model trained on everything. For each
method of the run's comparison (sparsified unlearning's attributions, retraining's, every baseline's), remove its k
most harmful units for k = 10% and 20% of them, and keep its 60% most helpful (the authors' "remove the top 40%");
beside them, the same numbers of units removed at random (--random draws). Every removal set is retrained with
--seeds seeds, and each model is compared with the model of the same seed trained on everything (common random
numbers). Rankings break ties at random (seeded), so a constant score removes a random set.

The test fits the design: a method's improvement over random removal is the mean over seeds of (its model's
improvement minus the mean improvement of the random draws with the same seed), paired by seed; its interval and
one-sided p come from a cluster bootstrap that resamples the seeds and the random draws (a draw's models are one
cluster). One comparison is primary, declared before any run: sparsified unlearning's top 10% against random
removal; every other cell's p is Holm-adjusted over the whole table. Seeds (4) and draws (6) are the defaults fixed
before the table in the README was run.

    bash run_pipeline.sh small                                  # makes runs/small
    python -m bench.counterfactual                              # runs/small: ~25 min on 2 cores
    python -m bench.counterfactual --run runs/images --data-flags ""   # the image level: the top images

The removal sets are rows of <run>/masks/counterfactual.npy (identical sets of several methods share a row; a new
method's sets are appended, so finished models stay valid), the models <run>/models/counterfactual/NNNNN-sS.pt,
their behaviours <run>/behaviors/counterfactual.npz, what each row removes <run>/counterfactual.json, the table
<run>/counterfactual.md. A rerun resumes: finished models are kept (train_ddpm.py and compute_fid.py skip them).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

import runfolder
from data import run, atomic_write, save_npy
from fit_datamodel import largest_first
from runfolder import behavior_values, better, finished_run, load_behaviors, load_groups, load_npz
from stats import holm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/small", help="a finished run with its report (results.json) and attributions")
    p.add_argument("--fractions", default="0.1,0.2", help="shares of the units removed, most harmful first")
    p.add_argument("--keep", type=float, default=0.6, help="also keep only this share, the most helpful (0: skip)")
    p.add_argument("--random", type=int, default=6, help="random removal sets of each size")
    # 4, not 2: on the default, one recipe trained on everything with different seeds lands 182-243 FID apart, and
    # with 2 seeds unlearning's top 10% beat random removal by +28 FID at p = 0.11; with 4, p = 0.005
    p.add_argument("--seeds", type=int, default=4, help="training seeds of every removal set (and of the full data)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every one of the comparison "
                   "that has attributions in the run)")
    p.add_argument("--jobs", type=int, default=2, help="retraining processes side by side, one thread each")
    p.add_argument("--seed", type=int, default=0, help="seed of the random removals")
    p.add_argument("--plan", default=None, help="run a committed confirmatory plan (bench/plans/NAME.json) seed by "
                   "seed, each seed's result committed as it finishes (bench/results/NAME/), then its declared test")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The removal sets

def method_scores(run):
    """{method: (scores, behaviour)} from the run's attribution files: unlearning's and retraining's (all their
    models), then each baseline's in the report's order."""
    folder = runfolder.attributions_dir(run)
    found = {}
    for pool, name in (("unlearn", "sparsified unlearning"), ("retrain", "retraining, all models")):
        if os.path.exists(runfolder.attributions(run, pool)):
            a = load_npz(runfolder.attributions(run, pool), "attributions file", ("scores", "behavior"))
            found[name] = (a["scores"], str(a["behavior"]))
    baselines = []
    for f in os.listdir(folder):
        if runfolder.baseline_name(f):
            a = load_npz(os.path.join(folder, f), "attributions file", ("scores", "behavior"))
            baselines.append((int(a.get("order", 0)), runfolder.baseline_name(f), a))
    for _, name, a in sorted(baselines):
        found[name] = (a["scores"], str(a["behavior"]))
    return found


def removal_sets(scores, direction, sizes, n_random, n_units, seed):
    """[(label, method, size, draw, removed units)]: each method's `size` most harmful units, and n_random random sets
    of each size (seeded by seed, size and draw)."""
    sets = []
    for name, s in scores.items():
        harm = s if direction == "lower" else -s
        order = largest_first(harm, seed)  # ties in a seeded random order, never by unit id
        for label, size in sizes:
            sets.append((label, name, size, 0, np.sort(order[:size])))
    for label, size in sizes:
        for d in range(n_random):  # each draw seeded on its own: more draws keep the first ones (and their models)
            rng = np.random.default_rng([seed, size, d])
            sets.append((label, "random", size, d, np.sort(rng.choice(n_units, size, replace=False))))
    return sets


def rows_of(run, sets, n_units):
    """The row of masks/counterfactual.npy that keeps everything but each set's units (row 0: everything), appending
    the sets that have none yet; returns (masks, [row of each set])."""
    path = runfolder.masks(run, "counterfactual")
    masks = np.load(path) if os.path.exists(path) else np.ones((1, n_units), dtype=bool)
    index = {m.tobytes(): i for i, m in enumerate(masks)}
    rows, new = [], []
    for *_, removed in sets:
        keep = np.ones(n_units, dtype=bool)
        keep[removed] = False
        if keep.tobytes() not in index:
            index[keep.tobytes()] = len(masks) + len(new)
            new.append(keep)
        rows.append(index[keep.tobytes()])
    if new or not os.path.exists(path):  # groups.npy beside it makes its rows choose contributors
        masks = np.concatenate([masks, np.array(new, dtype=bool).reshape(-1, n_units)])
        save_npy(path, masks)
    return masks, rows


# ----------------------------------------------------------------------------------------------
# Retraining and behaviours, through the pipeline's own scripts

def data_flags(run):
    """--data, --corrupt, --corrupt-seed and --fault as the full model was trained (its recorded arguments)."""
    a = json.loads(str(load_behaviors(runfolder.behaviors(run, "full"))["args"][0]))
    return ["--data", str(a["data"]), "--corrupt", str(a["corrupt"]), "--corrupt-seed", str(a.get("corrupt_seed", 0)),
            "--fault", str(a.get("fault", "noise"))]


def retrain(run, n_rows, seeds, jobs):
    """Every row of masks/counterfactual.npy with every seed (a count: 0..seeds-1, or a list), by train_ddpm.py
    --recipe-from full.pt, in `jobs` processes of one thread (tools/one_process.py: one interpreter a lane)."""
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    calls = [["train_ddpm.py", *data_flags(run), "--recipe-from", runfolder.checkpoint(run, "full"), "--masks",
              runfolder.masks(run, "counterfactual"), "--index", str(r), "--seed", str(s), "--grid", "0",
              "--out", os.path.join(runfolder.models(run, "counterfactual"), f"{r:05d}-s{s}.pt")]
             for s in seeds for r in range(n_rows)
             if not os.path.exists(os.path.join(runfolder.models(run, "counterfactual"), f"{r:05d}-s{s}.pt"))]
    lanes = [calls[i::jobs] for i in range(jobs)]
    procs = []
    for lane in lanes:
        if lane:
            argv = [a for c in lane for a in ["::", *c]][1:]
            procs.append(subprocess.Popen([sys.executable, "-m", "tools.one_process", *argv],
                                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1")))
    if any(p.wait() != 0 for p in procs):
        sys.exit("error: a counterfactual retraining failed (its output is above)")
    print(f"retrained {len(calls)} models ({n_rows} removal sets x {len(seeds)} seeds, the rest were done)", flush=True)


def behaviours(run, headline):
    """The headline of every counterfactual model, as the run's behaviours were measured (its sampling settings)."""
    from tools.one_process import call
    full = load_behaviors(runfolder.behaviors(run, "full"))
    key = "class" if headline.startswith("class:") else headline
    call("compute_fid", [*data_flags(run)[:2], "--models", runfolder.models(run, "counterfactual"), "--masks",
                         runfolder.masks(run, "counterfactual"), "--out",
                         runfolder.behaviors(run, "counterfactual"), "--n-samples", str(int(full["n_samples"])),
                         "--ddim-steps", str(int(full["ddim_steps"])), "--features", str(full["features"]) if
                         str(full["features"]) in ("cnn", "inception") else "auto", "--behaviors", key, "--cache", run,
                         "--loss-draws", str(int(full["loss_draws"]))])


# ----------------------------------------------------------------------------------------------
# The table

def changes(beh, headline, rows, seeds, direction):
    """improvement[row] (seeds,): how much better the headline of each seed's model of the row is than the model of
    the same seed trained on everything (row 0); positive is better. seeds: a count (0..seeds-1) or a list."""
    values, index, seed = behavior_values(beh, headline), beh["index"].astype(int), beh["seed"].astype(int)
    at = {(int(r), int(s)): v for r, s, v in zip(index, seed, values)}
    sign = -1.0 if direction == "lower" else 1.0
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    return {r: np.array([sign * (at[r, s] - at[0, s]) for s in seeds]) for r in set(rows)}


PRIMARY = ("sparsified unlearning", "remove 10%")  # the comparison that decides, declared before any run
BOOTSTRAP = 10000


def cluster_test(mine, random, n_boot=BOOTSTRAP, seed=0):
    """A method's improvement over random removal, paired by seed, with random draws as clusters.

    mine (S,): the method's improvement with each training seed; random (D, S): each random draw's, same seeds.
    Returns (difference, 95% interval, one-sided p that the method improves more than random removal, resamples):
    difference = mean_s (mine_s - mean_d random_ds); the bootstrap resamples seeds and draws with replacement."""
    mine, random = np.asarray(mine, np.float64), np.asarray(random, np.float64)
    diff = float(np.mean(mine - random.mean(0)))
    rng = np.random.default_rng(seed)
    s = rng.integers(0, len(mine), (n_boot, len(mine)))  # seeds: (B, S)
    d = rng.integers(0, len(random), (n_boot, len(random)))  # draws: (B, D)
    boot = mine[s].mean(1) - random[d[:, :, None], s[:, None, :]].mean((1, 2))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, (float(lo), float(hi)), float(np.mean(boot <= 0)), n_boot


def fmt_p(p, n_boot):
    """A bootstrap p: '< 1/B' where no resample crosses (the resolution of B resamples), else '= value'."""
    return f"< {1 / n_boot:.1g}" if p == 0 else f"= {p:.3f}"


def tests(sets, rows, improvement, seeds):
    """{(method, size label): cluster_test(...)} of every method's removal against random removal of as many units,
    with Holm-adjusted p for every cell but the primary one."""
    sizes = list(dict.fromkeys(label for label, *_ in sets))
    random = {label: np.stack([improvement[r] for (lab, m, *_), r in zip(sets, rows) if m == "random" and lab == label])
              for label in sizes}
    out = {}
    for (label, m, *_), r in zip(sets, rows):
        if m != "random":
            out[m, label] = dict(zip(("diff", "ci", "p", "n_boot"), cluster_test(improvement[r], random[label])))
    rest = [k for k in out if k != PRIMARY]
    for k, p in zip(rest, holm([out[k]["p"] for k in rest])):
        out[k]["p_holm"] = float(p)
    return out


def render(run, sets, rows, improvement, headline, direction, bad, unit, seeds):
    sizes = list(dict.fromkeys((label, size) for label, _, size, _, _ in sets))
    n_random = len({d for _, m, _, d, _ in sets if m == "random"})
    better_word = "lower" if direction == "lower" else "higher"
    results = tests(sets, rows, improvement, seeds)
    lines = [f"# Acting on the attributions: {os.path.basename(os.path.abspath(run))}", "",
             f"Change of {headline} ({better_word} is better; shown as improvement, positive = better) of models retrained "
             f"without each method's most harmful {unit}s, against the model of the same seed trained on everything: "
             f"mean over {seeds} seeds. Against random removal of as many {unit}s ({n_random} draws): the difference, "
             f"paired by seed [95% cluster bootstrap over seeds and draws] and its one-sided p. **Primary** (declared "
             f"before the run): {PRIMARY[0]}, {PRIMARY[1]}, raw p; every other p is Holm-adjusted over the "
             f"{len(results) - 1} other cells. Seeds and draws are the bench's defaults, fixed before its README run.", "",
             "| method | " + " | ".join(f"{label}: improvement; vs random [95%], p | bad among removed" for label, _ in sizes)
             + " |", "| --- " * (1 + 2 * len(sizes)) + "|"]
    for name in dict.fromkeys(m for _, m, _, _, _ in sets):
        cells = []
        for label, size in sizes:
            mine = [(r, removed) for (lab, m, _, _, removed), r in zip(sets, rows) if m == name and lab == label]
            values = np.stack([improvement[r] for r, _ in mine])
            cell = f"{values.mean():+.2f}"
            if name != "random":
                t = results[name, label]
                primary = (name, label) == PRIMARY
                # Holm multiplies the smallest p by the number of tests: a zero's bound grows with it
                p = fmt_p(t["p"], t["n_boot"]) if primary else fmt_p(t["p_holm"], t["n_boot"] / (len(results) - 1))
                cell += (f"; {t['diff']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}], "
                         + (f"**primary p {p}**" if primary else f"p (Holm) {p}"))
                n_bad = int(np.isin(mine[0][1], bad).sum()) if bad is not None else 0
                cells += [cell, f"{n_bad} of {size}"]
            else:
                n_bad = np.mean([np.isin(removed, bad).sum() for _, removed in mine]) if bad is not None else 0
                cells += [cell, f"{n_bad:.1f} of {size} (mean)"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# The confirmatory run: a plan committed before it (bench/plans/), one committed result file per seed

def plan_sets(scores, direction, n_units, plan, seed):
    """The plan's removal sets for one seed: the method's own top units for the primary and each secondary size,
    and plan["random_sets_per_seed"] random sets of each size, seeded by (seed, size, draw)."""
    sizes = [("primary", max(1, round(plan["fraction"] * n_units)))] + \
        [(f"secondary {f:.0%}", max(1, round(f * n_units))) for f in plan.get("secondary_fractions", [])]
    return removal_sets({"method": scores}, direction, sizes, plan["random_sets_per_seed"], n_units, seed)


def confirmatory_seed(plan, seed, folder, jobs):
    """One seed of the plan: an independent repetition of the method's side (run_pipeline.sh on the plan's preset with
    SEED=seed and no ground truth), its own removal sets retrained with training seed `seed` beside the model trained
    on everything, and the improvements written to folder/seed-SEED.json (small: committed as each seed finishes)."""
    run = os.path.join(ROOT, "runs", f"counterfactual-{plan['name']}", f"seed{seed}")
    env = dict(os.environ, SEED=str(seed), RUN=run, K="0", R="0", BASELINES="none", LOO="0", GUDA="0", ALSO="none",
               REPEATS="1", BANK="0", PROXY="0")
    if subprocess.run(["bash", "run_pipeline.sh", plan["preset"]], cwd=ROOT, env=env).returncode != 0:
        sys.exit(f"error: the repetition of seed {seed} failed (its output is above)")
    a = load_npz(runfolder.attributions(run, "unlearn"), "attributions file", ("scores", "behavior"))
    headline = str(a["behavior"])
    direction = better(load_behaviors(runfolder.behaviors(run, "unlearn")), headline)
    n_units = len(a["scores"])
    sets = plan_sets(a["scores"], direction, n_units, plan, seed)
    masks, rows = rows_of(run, sets, n_units)
    retrain(run, len(masks), [seed], jobs)
    behaviours(run, headline)
    improvement = changes(load_behaviors(runfolder.behaviors(run, "counterfactual")), headline, [0] + rows, [seed],
                          direction)
    out = dict(seed=seed, headline=headline, units=n_units, sets=[
        dict(label=label, method=m, size=size, draw=d, removed=removed.tolist(), improvement=float(improvement[r][0]))
        for (label, m, size, d, removed), r in zip(sets, rows)])
    path = os.path.join(folder, f"seed-{seed}.json")
    atomic_write(path, lambda f: f.write(json.dumps(out, indent=1).encode()))
    print(f"wrote {path}", flush=True)


def confirmatory_test(results, alpha):
    """{size label: (rank-sum p, mean improvement over random)} over the seeds' results: the primary's raw p, every
    secondary's Holm-adjusted over the secondaries (stats.rank_sum_p: the method's rank among its seed's random sets)."""
    from stats import rank_sum_p
    labels = list(dict.fromkeys(s["label"] for s in results[0]["sets"]))
    out = {}
    for label in labels:
        mine = np.array([next(s["improvement"] for s in r["sets"] if s["label"] == label and s["method"] == "method")
                         for r in results])
        random = np.array([[s["improvement"] for s in r["sets"] if s["label"] == label and s["method"] == "random"]
                           for r in results])
        out[label] = dict(p=rank_sum_p(mine, random), diff=float(np.mean(mine - random.mean(1))), seeds=len(results))
    secondary = [k for k in out if k != "primary"]
    for k, p in zip(secondary, holm([out[k]["p"] for k in secondary]) if secondary else []):
        out[k]["p_holm"] = float(p)
    out["primary"]["verdict"] = "found" if out["primary"]["p"] <= alpha else "not found"
    return out


def confirmatory(plan_path, jobs):
    """Run the committed plan seed by seed (finished seeds are skipped: their files are the chunks), then its test."""
    with open(plan_path) as f:
        plan = json.load(f)
    plan.setdefault("name", os.path.splitext(os.path.basename(plan_path))[0])
    folder = os.path.join(ROOT, "bench", "results", plan["name"])
    os.makedirs(folder, exist_ok=True)
    for seed in plan["seeds"]:
        if not os.path.exists(os.path.join(folder, f"seed-{seed}.json")):
            confirmatory_seed(plan, seed, folder, jobs)
    results = [json.load(open(os.path.join(folder, f"seed-{seed}.json"))) for seed in plan["seeds"]]
    test = confirmatory_test(results, plan["alpha"])
    atomic_write(os.path.join(folder, "test.json"), lambda f: f.write(json.dumps(test, indent=1).encode()))
    p = test["primary"]
    print(f"primary (the method's top {plan['fraction']:.0%} against {plan['random_sets_per_seed']} random sets, "
          f"{p['seeds']} seeds): mean improvement over random {p['diff']:+.2f}, exact rank-sum p = {p['p']:.4f}: "
          f"{p['verdict']} at alpha {plan['alpha']}")


def main(args):
    if args.plan:
        return confirmatory(args.plan, args.jobs)
    finished_run(args.run, runfolder.results(args.run), os.path.dirname(runfolder.attributions(args.run, "unlearn")))
    run = args.run
    results = json.load(open(runfolder.results(run)))
    headline = results["headline"]
    direction = results["behaviors"][headline]["better"]
    scores = {k: s for k, (s, b) in method_scores(run).items() if b == headline}
    if args.methods:
        scores = {k: v for k, v in scores.items() if k in args.methods.split(",")}
    groups = load_groups(runfolder.masks(run, "unlearn"))
    n_units = len(next(iter(scores.values())))
    unit = "contributor" if groups is not None else "image"
    sizes = [(f"remove {float(f):.0%}", max(1, round(float(f) * n_units))) for f in args.fractions.split(",")]
    if args.keep:
        sizes.append((f"keep top {args.keep:.0%}", n_units - round(args.keep * n_units)))
    sets = removal_sets(scores, direction, sizes, args.random, n_units, args.seed)
    masks, rows = rows_of(run, sets, n_units)
    atomic_write(runfolder.bench_file(run, "counterfactual.json"), lambda f: f.write(json.dumps(
        [dict(label=label, method=m, size=size, draw=d, removed=removed.tolist(), row=r)
         for (label, m, size, d, removed), r in zip(sets, rows)], indent=1).encode()))
    retrain(run, len(masks), args.seeds, args.jobs)
    behaviours(run, headline)
    beh = load_behaviors(runfolder.behaviors(run, "counterfactual"))
    improvement = changes(beh, headline, [0] + rows, args.seeds, direction or better(beh, headline))
    bad = None
    if os.path.exists(runfolder.corrupted(run)):
        corrupted = np.load(runfolder.corrupted(run))
        bad = corrupted if groups is None else np.flatnonzero(
            np.bincount(groups[corrupted], minlength=n_units) > 0.5 * np.bincount(groups, minlength=n_units))
    text = render(run, sets, rows, improvement, headline, direction, bad, unit, args.seeds)
    atomic_write(os.path.join(run, "counterfactual.md"), lambda f: f.write(text.encode()))
    print(text)


if __name__ == "__main__":
    run(main, parse_args())
