"""One report over independent repetitions of a run's method side: `bash run_pipeline.sh` with REPEATS=N runs the
full model, pruning, the unlearning subsets and seeds and the baselines N times (RUN/rep0, RUN/rep1, ...) against one
ground truth (the preset's bank, or retrained once per repetition), then this. Every LDS is the mean over the
repetitions, and its interval and tests resample the repetitions with the held-out subsets (stats.bootstrap_repeated),
so that they carry the run-to-run noise that one run cannot show; the declared comparisons (the preset's COMPARE)
get their Holm and TOST p-values and minimum detectable differences from those resamples.

    python combine.py --run runs/default            # reads runs/default/rep*/, writes runs/default/report.md

numpy and scipy only, as eval_lds.py.
"""
import json
import os

import numpy as np

import report
import runfolder
from data import ArgumentParser, DataError, atomic_write, comma_list_type, positive_float, run
from stats import BOOTSTRAP, bootstrap_repeated, declared_family, interval, mean_lds, prediction_pair, resolved_comparison


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--run", required=True, help="the folder of the repetitions (RUN/rep0, RUN/rep1, ...)")
    p.add_argument("--compare", type=comma_list_type(), default=None, help="the declared comparisons (default: the "
                   "ones the repetitions' own reports declared)")
    p.add_argument("--margin", type=positive_float, default=None, help="the equivalence margin (default: theirs)")
    p.add_argument("--alpha", type=positive_float, default=None, help="the family's error rate (default: theirs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    return p.parse_args(argv)


def repetitions(run_dir):
    """[(folder, results, predictions)] of every finished repetition RUN/repN, in order; all of one ground truth."""
    folders = sorted((f for f in os.listdir(run_dir) if f.startswith("rep") and f[3:].isdigit()), key=lambda f: int(f[3:]))
    found = []
    for f in folders:
        path = os.path.join(run_dir, f)
        if os.path.exists(runfolder.predictions(path)) and os.path.exists(runfolder.results(path)):
            with open(runfolder.results(path)) as fh:
                found.append((path, json.load(fh), dict(np.load(runfolder.predictions(path)))))
    if len(found) < 2:
        raise DataError(f"{run_dir}: {len(found)} finished repetitions (rep*/predictions.npz); combining needs two")
    y0, rows0 = found[0][2]["y"], found[0][2]["rows"]
    for path, _, p in found[1:]:
        if not (np.array_equal(p["rows"], rows0) and np.allclose(p["y"], y0)):
            raise DataError(f"{path} was judged against another ground truth than {found[0][0]}")
    return found


def combine(found, compare, margin, alpha, seed):
    """results: each method's LDS (mean over repetitions, interval, per repetition) and the declared family."""
    y = found[0][2]["y"]
    keys = [k for k in found[0][2] if k.startswith(("method:", "budget:")) and all(k in p for _, _, p in found)]
    boot = bootstrap_repeated([[p[k] for k in keys] for _, _, p in found], y, seed)
    per_rep = {k: [mean_lds(p[k], y) for _, _, p in found] for k in keys}
    lds = {k: dict(lds=float(np.mean(per_rep[k])), ci=interval(boot[i]), per_repetition=per_rep[k])
           for i, k in enumerate(keys)}
    index = {k: i for i, k in enumerate(keys)}
    have = {k[7:] for k in keys if k.startswith("method:")}
    fitted = [float(k.split(":")[1]) for k in keys if k.startswith("budget:") and k.endswith(":retrain")]
    resolved = {key: resolved_comparison(key, have, fitted) for key in compare}  # as each repetition's eval_lds did
    diffs = {}
    for key, to in resolved.items():
        a, b = prediction_pair(to)
        if a in index and b in index:
            diffs[key] = (lds[a]["lds"] - lds[b]["lds"], boot[index[a]] - boot[index[b]])
    family = declared_family(diffs, alpha, margin)
    return dict(repetitions=[path for path, _, _ in found], k_heldout=len(y), bootstrap=BOOTSTRAP, lds=lds,
                declared={k: family.get(k) for k in compare},
                declaration=dict(compare=compare, margin=margin, alpha=alpha,
                                 resolved={k: r for k, r in resolved.items() if r != k}))


def render(run_dir, combined, found):
    first = found[0][1]
    headline, n = first["headline"], len(found)
    names = {c["key"]: c["name"] for c in first["comparison"] if "key" in c}
    with open(runfolder.report(found[0][0])) as f:
        data = [line for line in f.read().splitlines() if line.startswith("Data:")]
    lines = [f"# Data attribution over {n} repetitions: {os.path.basename(os.path.abspath(run_dir))}", ""] + data + [
        "", f"Each repetition trained its own full model, pruned it, drew its own unlearning subsets and seeds and ran "
        f"the baselines; all were judged on the same {combined['k_heldout']} held-out subsets. Every LDS below is the "
        f"mean over the repetitions; each interval and test resamples the repetitions and the held-out subsets together "
        f"({combined['bootstrap']} resamples), so it holds the run-to-run noise (with {n} repetitions, somewhat less of "
        f"it than there is). Headline behaviour: **{headline}**.", ""]
    lines += report.declared_section(dict(combined, headline=headline), first["comparison"])
    # a gradient method against the model's own samples linearises the samples' loss, which no model is measured on:
    # its LDS on the headline in a table of its own, as each repetition's report shows it (report.apart_section)
    apart = {"method:" + c["key"] for c in first["comparison"] if c.get("linearises", "").startswith("samples-")}
    for title, keys in ((f"| method | LDS {headline}, mean over repetitions [95%] | per repetition |",
                         [k for k in combined["lds"] if k not in apart]),
                        (f"| judged on a behaviour it does not compute (the model's own samples' loss; no test) | LDS "
                         f"{headline} [95%] | per repetition |", [k for k in combined["lds"] if k in apart])):
        if not keys:
            continue
        lines += ["", title, "| --- | --- | --- |"]
        for key in keys:
            e = combined["lds"][key]
            kind, name = key.split(":", 1)
            label = names.get(name, name) if kind == "method" else f"budget {name.replace(':', ': ')}"
            lines.append(f"| {label} | {e['lds']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] | "
                         f"{', '.join(f'{v:.3f}' for v in e['per_repetition'])} |")
    lines += ["", "The repetitions' own reports (one full model each; their intervals hold one run's noise only): "
              + ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)}/report.md)" for p, _, _ in found) + ".", ""]
    return "\n".join(lines)


def main(args):
    found = repetitions(args.run)
    how = found[0][1].get("declaration", {})
    compare = args.compare or how.get("compare", ["retraining"])
    combined = combine(found, compare, args.margin or how.get("margin", 0.10), args.alpha or how.get("alpha", 0.05),
                       args.seed)
    atomic_write(runfolder.results(args.run), lambda f: f.write(json.dumps(combined, indent=1).encode()))
    atomic_write(runfolder.report(args.run), lambda f: f.write(render(args.run, combined, found).encode()))
    primary = next(iter(combined["declared"]))
    e = combined["declared"][primary]
    said = (f"unlearning minus {primary}: {e['diff']:+.3f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}], Holm p = "
            f"{e['p']:.3g}: {e['verdict']}" if e else f"{primary}: not in these runs")
    print(f"{len(found)} repetitions, {combined['k_heldout']} held-out subsets; {said}")
    print(f"wrote {runfolder.report(args.run)}")


if __name__ == "__main__":
    run(main, parse_args())
