"""run_pipeline.sh: the quick preset end to end, and a kill mid-stage and a resume."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, copy_stages_1_to_5, dry_run_calls, pipeline
import runfolder



def artifacts(run):
    """Every file the quick preset leaves (DESIGN.md's artifacts), through the run-folder module."""
    f = runfolder
    return ([f.checkpoint(run, "full"), f.checkpoint(run, "pruned"), f.corrupted(run), f.report(run), f.results(run)]
            + [f.masks(run, pool) for pool in ("unlearn", "retrain", "lds")]
            + [f.models(run, "unlearn") / "00000.pt", f.models(run, "retrain") / "00000.pt",
               f.models(run, "lds") / "00000-s0.pt"]
            + [f.behaviors(run, name) for name in ("unlearn", "retrain", "lds", "full", "pruned", "fid2", "fid_seeds")]
            + [f.attributions(run, pool) for pool in ("unlearn", "retrain")]
            + [f.figures(run, name + ".png") for name in ("lds_vs_budget", "predicted_vs_actual", "most_harmful",
                                                          "most_helpful", "real")]
            + [f.baseline(run, name) for name in ("loss", "pixel-nn", "feature-sim")])


def test_quick_preset_leaves_every_artifact(quick_run):
    run, out = quick_run
    missing = [a for a in artifacts(run) if not a.exists()]
    assert not missing
    assert "LDS fid" in out and str(runfolder.report(run)) in out.splitlines()[-1]
    # the log shows each finished model of the per-row stages, with the time left
    for stage in ("unlearn unlearn.npy: row 0 done", "train retrain.npy: row 0 done", "train lds.npy: row 0 done",
                  "behaviours unlearn.npz: 00000.pt done"):
        assert any(line.startswith(stage) and line.endswith("left]") for line in out.splitlines()), stage
    with np.load(runfolder.behaviors(run, "unlearn")) as f:
        assert len(f["fid"]) == len(np.load(runfolder.masks(run, "unlearn")))
    assert np.array_equal(np.load(runfolder.masks(run, "retrain")), np.load(runfolder.masks(run, "unlearn"))[:3])
    report = (runfolder.report(run)).read_text()
    assert "positive score means including that training image raises FID" in report and "AUC" in report
    # the recipe as the checkpoints recorded it: the same for the three stages that train from scratch
    assert "40 steps, batch 32" in report and "one recipe for the full model, retraining baseline, ground truth" in report
    assert "| FID2 ratio: unlearned vs retrained / two retraining seeds |" in report
    # the data's own floor beside the full model's FID and IS; the ratio at matched sizes (the model's first m samples
    # and m real images of half A, each against half B), and real images beside its samples
    with np.load(runfolder.behaviors(run, "full")) as f:
        floor, fid, m = float(f["floor_fid"]), float(f["fid"][0]), int(f["matched_m"])
        floor_m, fid_m, n_b = float(f["floor_matched"]), float(f["fid_matched"][0]), int(f["matched_n_b"])
    assert 0 < floor < floor_m < fid_m and fid > floor and m == 64 and n_b == 256  # 64 samples against half of the 512 reference digits (N_REF)
    assert f"{floor:.2f}" in report and f"at matched sizes, 64 vs 256: {fid_m:.2f} vs the floor's {floor_m:.2f}, " \
        f"**{fid_m / floor_m:.1f}x**" in report
    # and once more with the quality sampler (QUALITY_DDIM=10; the behaviours' sampler is DDIM-5)
    with np.load(runfolder.behaviors(run, "quality")) as f:
        assert int(f["ddim_steps"]) == 10 and int(f["n_samples"]) == 64
        quality, quality_m = float(f["fid"][0]), float(f["fid_matched"][0])
    assert "full model with DDIM-5, the behaviours' sampler; its IS" in report
    assert f"| FID vs real data, full model with DDIM-10; its IS | **{quality:.2f}** (at matched sizes, 64 vs 256: " \
        f"{quality_m:.2f} vs the floor's {floor_m:.2f}, **{quality_m / floor_m:.1f}x**)" in report
    assert "![real](figures/real.png) | ![generated](full.png)" in report
    # the quick preset's baselines (the cheap ones) beside the method, in the report's first table
    assert report.index("## How the method compares (fid)") < report.index("## Table 1 analogue")
    assert all(f"| {name} | - |" in report for name in ("loss", "pixel-nn", "feature-sim"))


def dry_run_commands(tmp_path, preset="default", script="train_ddpm.py", **env):
    """The training commands (or another script's) `bash run_pipeline.sh PRESET` runs, printed instead of run
    (PYTHON=echo); the calls that tools/one_process.py runs in one process (separated by ::) one by one."""
    p = pipeline(preset, tmp_path / "dry", PYTHON="echo", **env)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    return [c for c in dry_run_calls(out) if c[0] == script and "--init-only" not in c]


def test_full_model_baseline_and_ground_truth_read_one_recipe(tmp_path):
    """Stages 1, 5 and 6 (and leave-one-out) train with the same recipe, so unlearning approximates what it is judged against;
    changing the recipe in one place (TRAIN_STEPS, BATCH, TRAIN_FLAGS) changes it for all three."""
    per_model = {"--seed", "--out", "--masks", "--indices", "--suffix", "--grid", "--ddim-steps"}

    def recipes(**env):
        found = {}
        for cmd in dry_run_commands(tmp_path, **env):
            out = cmd[cmd.index("--out") + 1]
            stage = "full" if out.endswith(runfolder.checkpoint("", "full")) else os.path.basename(out)
            pairs = [a.split("=")[0] for a in cmd[1:]]
            recipe = tuple(a for i, a in enumerate(cmd[1:]) if pairs[i] not in per_model
                           and (i == 0 or pairs[i - 1] not in per_model))
            found.setdefault(stage, set()).add(recipe)
        return found

    for env in (dict(LOO=1, SEED_PAIRS=1), dict(LOO=1, SEED_PAIRS=1, TRAIN_STEPS=123, BATCH=17,
                                                 TRAIN_FLAGS="--lr 1e-3 --warmup 7")):
        found = recipes(**env)
        assert set(found) == {"full", "retrain", "retrain_seed1", "lds", "loo"}  # leave-one-out: the same recipe
        (recipe,) = set.union(*found.values())  # one recipe, whichever stage trains
        steps = recipe[recipe.index("--steps") + 1]
        assert steps == str(env.get("TRAIN_STEPS", 1500))
        lr = recipe[recipe.index("--lr") + 1]  # the default's own flags, or the ones given
        assert lr == ("1e-3" if "TRAIN_FLAGS" in env else "3e-3") and ("17" in recipe) == ("BATCH" in env)
    # BEHAVIORS=loss: no sample is drawn anywhere (no grid beside a checkpoint, no FID2), every behaviour call asks
    # for the loss only
    p = pipeline("default", tmp_path / "dry-loss", PYTHON="echo", BEHAVIORS="loss")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    calls = dry_run_calls(out)
    behaviours = [c for c in calls if c[0] == "compute_fid.py"]
    assert behaviours and all(c[c.index("--behaviors") + 1] == "loss" and "--ref-models" not in c for c in behaviours)
    assert all(c[c.index("--grid") + 1] == "0" for c in calls if "--grid" in c)
    # the small preset and the default (contributors, baselines all; the default since issue 33, the strongest
    # retraining comparator): one leave-one-out retraining of each of the 20 contributors, with the full model's seed,
    # and baselines.py once, every baseline; the image level retrains none unless LOO=1, nor does LOO=0
    assert not [c for c in dry_run_commands(tmp_path, LOO=0) if c[c.index("--out") + 1].endswith(runfolder.models("", "loo"))]
    for preset in ("small", "default"):
        loo = [c for c in dry_run_commands(tmp_path, preset) if c[c.index("--out") + 1].endswith(runfolder.models("", "loo"))]
        assert {(c[c.index("--masks") + 1].split("/")[-1], c[c.index("--seed") + 1]) for c in loo} == {("loo.npy", "0")}
        assert sorted(c[c.index("--indices") + 1] for c in loo) == ["0:10", "10:20"]  # each stage split over 2 lanes
    p = pipeline("default", tmp_path / "dry-baselines", PYTHON="echo")
    out, _ = p.communicate(timeout=60)
    assert "baselines.py --run" in out and "--only" not in out.split("baselines.py")[1].split("\n")[0]
    p = pipeline("images", tmp_path / "dry-images", PYTHON="echo")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and "loo.npy" not in out and "baselines.py --run" in out
    # every held-out subset is retrained with GT_SEEDS seeds (its behaviour is their mean)
    lds = [c for c in dry_run_commands(tmp_path, GT_SEEDS=3, K=10, LOO=0) if c[c.index("--out") + 1].endswith("lds")]
    seeds = sorted((c[c.index("--seed") + 1], c[c.index("--indices") + 1]) for c in lds)
    assert seeds == [(s, r) for s in "012" for r in ("0:5", "5:10")]


def budget_numbers(run):
    """Every number of the run's budget tables that does not depend on a clock: budgets count training compute
    (MACs), so how many models each budget buys, their LDS, intervals and tests, the LDS from every model of each
    pool and every detection AUC. (The wall-time and behaviour-time columns, under "time", are measured.)"""
    r = json.loads((runfolder.results(run)).read_text())
    assert r["accounting"] == "compute"
    curves = {b: [{k: v for k, v in row.items() if k != "time"} for row in d["curve"]] for b, d in r["behaviors"].items()}
    lds_all = {b: {k: v["lds"] for k, v in d["lds_all"].items()} for b, d in r["behaviors"].items()}
    return curves, lds_all, r.get("auc"), {b: d.get("auc_all") for b, d in r["behaviors"].items()}, r["costs"]["compute"]


def wait_for(path_glob, run, timeout):
    """Poll until a file matching path_glob exists under run (or timeout seconds pass)."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline and not any(f.name[0] != "." for f in run.glob(path_glob)):
        time.sleep(0.2)


def test_a_killed_run_resumes_to_the_same_report_without_redoing_models(quick_run, tmp_path):
    """Killed in stage 6 (some ground-truth models finished, one half-trained), started again: every budget number
    equals the uninterrupted run's (budgets count compute, not seconds), and no finished model was trained again.
    Stages 1-5 are deterministic and quick_run made them already: the killed run starts from copies of their outputs,
    which the pipeline skips. (A behaviours file's resume from its cached rows: test_fid's rerun test.)"""
    reference, _ = quick_run
    run = tmp_path / "killed"
    copy_stages_1_to_5(reference, run)
    # Killed while two lanes train (JOBS=2), resumed in one (JOBS=1, as quick_run ran): the numbers must not depend
    # on it. One thread a lane, as the quick run had (equal numbers to the last digit need equal thread counts;
    # under pytest-xdist every worker has one anyway)
    env = dict(JOBS=1, OMP_NUM_THREADS=1)
    p = pipeline("quick", run, **dict(env, JOBS=2))
    wait_for(f"{runfolder.relative(run, runfolder.models(run, 'lds'))}/*-s0.pt", run, timeout=600)
    os.killpg(p.pid, signal.SIGKILL)  # mid-stage
    p.wait()
    assert not (runfolder.report(run)).exists()
    done = {f: os.stat(f).st_mtime_ns for f in runfolder.models(run, "").rglob("*.pt")}
    assert done and any(f.name.endswith("-s0.pt") for f in done)
    p = pipeline("quick", run, **env)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    assert all(os.stat(f).st_mtime_ns == t for f, t in done.items())  # finished models were not redone
    for pool in ("unlearn", "retrain", "lds"):
        a, b = (dict(np.load(runfolder.behaviors(r, pool))) for r in (run, reference))
        for key in ("fid", "loss", "kid", "class_share", "train_macs"):
            assert np.array_equal(a[key], b[key]), (pool, key)
    assert budget_numbers(run) == budget_numbers(reference)


def test_fits_and_the_report_need_no_torch(quick_run, tmp_path):
    """fit_datamodel.py and eval_lds.py on a finished run folder with torch unimportable (an import hook refuses it:
    sys.modules['torch'] = None would do the same, but scipy's array-API helpers look up whatever sits there) and
    no checkpoint in it: attribution and evaluation read masks and behaviours files only (the recipes and the
    unlearning method come from the behaviours files), so they stay fast and copyable."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    reference, _ = quick_run
    run = tmp_path / "run"
    made = (runfolder.models(reference, ""), runfolder.report(reference), runfolder.figures(reference, ""))
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(*(p.name for p in made), runfolder.stats(reference).name, "*.pt"))
    assert not list(run.rglob("*.pt"))

    def without_torch(script, *argv):
        code = ("import runpy, sys\n"
                "class NoTorch:\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name.split('.')[0] == 'torch':\n"
                "            raise ImportError('torch is not importable here')\n"
                "sys.meta_path.insert(0, NoTorch())\n"
                "sys.argv = sys.argv[1:]\n"
                "runpy.run_path(sys.argv[0], run_name='__main__')\n"
                "assert 'torch' not in sys.modules\n")
        return subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, script), *map(str, argv)], cwd=ROOT,
                              capture_output=True, text=True)
    r = without_torch("fit_datamodel.py", "--masks", runfolder.masks(run, "unlearn"), "--behaviors",
                      runfolder.behaviors(run, "unlearn"), "--behavior", "loss", "--out", runfolder.attributions(run, "loss"))
    assert r.returncode == 0, r.stderr
    r = without_torch("eval_lds.py", "--run", run, "--data", "digits", "--corrupt", "0.05", "--draws", "2")
    assert r.returncode == 0, r.stderr
    report = (runfolder.report(run)).read_text()
    assert "Headline behaviour: **fid**" in report and "## LDS vs budget: loss" in report
    assert "40 steps, batch 32" in report and "Unlearning method: **gd**" in report


def test_the_fidelity_and_noise_benches_print_their_tables(quick_run, tmp_path, capsys):
    """bench/unlearn_fidelity.py and bench/behaviour_noise.py end to end on a copy of the quick run (one training seed
    there: no ceiling row), at their smallest settings: each prints its table, one row per method or behaviour and
    size, with finite numbers."""
    import shutil
    from conftest import load_bench
    reference, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    fidelity = load_bench("unlearn_fidelity")
    fidelity.main(fidelity.parse_args(["--run", str(run), "--behaviors", "loss", "--loss-draws", "1", "--configs",
                                       "gd=--method gd --steps 2 --batch-size 8;neggrad=--method neggrad --steps 1 "
                                       "--batch-size 8 --batches epoch"]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| gd", "| neggrad"] and "nan" not in "".join(rows[2:])
    noise = load_bench("behaviour_noise")
    noise.main(noise.parse_args(["--run", str(run), "--pool", "4", "--seeds", "2", "--samples", "20", "--draws", "1",
                                 "--behaviors", "fid,loss"]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| fid", "| loss"] and "nan" not in "".join(rows[2:])


def test_the_sampler_lds_bench_scores_each_samplers_attributions_as_their_reports_do(quick_run, tmp_path, capsys):
    """bench/sampler_lds.py on a copy of the quick run (DDIM-5) with DDIM-7: the other sampler's run links the same
    models (none trained again), and the LDS of each sampler's attributions against its own ground truth is the one its
    own report (eval_lds.py) gives; the cross pairs are scored on the same held-out subsets."""
    import shutil
    from conftest import load_bench
    run = tmp_path / "quick"
    shutil.copytree(quick_run[0], run, symlinks=True)
    bench = load_bench("sampler_lds")
    bench.main(bench.parse_args(["--run", str(run), "--preset", "quick", "--ddim", "7"]))
    other = tmp_path / "quick-ddim7"
    assert os.path.islink(runfolder.models(other, "")) and os.path.islink(runfolder.checkpoint(other, "full"))
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| DDIM-")]
    own = {d: json.loads((runfolder.results(d)).read_text())["behaviors"]["fid"]["lds_all"]["unlearn"]["lds"]
           for d in (run, other)}
    assert [r[0] for r in rows] == ["| DDIM-5", "| DDIM-7"]
    assert rows[0][2].startswith(f"{own[run]:.3f} [") and rows[1][3].startswith(f"{own[other]:.3f} [")
    with np.load(runfolder.behaviors(other, "lds")) as f:
        assert int(f["ddim_steps"]) == 7


def test_the_sampler_bench_reproduces_the_runs_own_fid(quick_run, capsys):
    """bench/sampler.py on the quick run at the run's own DDIM step count: the same initial noise and features as
    compute_fid.py, so it prints the FID the run's behaviours file holds for the full model, and the same floor."""
    from conftest import load_bench

    run, _ = quick_run
    full = runfolder.load_behaviors(runfolder.behaviors(run, "full"))
    steps = int(full["ddim_steps"])
    sampler = load_bench("sampler")
    sampler.main(sampler.parse_args(["--run", str(run), "--steps", f"{steps},{steps + 1}"]))
    out = capsys.readouterr().out
    fid = float(out.split(f"DDIM-{steps}: FID ")[1].split(",")[0])
    assert fid == pytest.approx(float(full["fid"][0]), abs=0.051)  # printed to one decimal
    assert f"FID {float(full['floor_fid']):.1f} between two halves" in out


def test_the_recipe_bench_with_the_runs_recipe_retrains_its_full_model(quick_run, tmp_path, capsys):
    """bench/recipe.py given the quick run's own recipe (its steps, seed 0, the run's data flags) trains the run's
    full model again, weight for weight, and so prints the FID its behaviours file holds for the full model."""
    import torch
    from conftest import load_bench
    from ddpm import load_checkpoint

    run, _ = quick_run
    full, behaviours = load_checkpoint(runfolder.checkpoint(run, "full")), runfolder.load_behaviors(runfolder.behaviors(run, "full"))
    recipe = load_bench("recipe")
    recipe.main(recipe.parse_args(["--run", str(run), "--recipes", str(full["args"]["steps"]), "--ddim",
                                   str(int(behaviours["ddim_steps"])), "--n-samples", str(int(behaviours["n_samples"])),
                                   "--out", str(tmp_path)]))
    (again,) = [load_checkpoint(p) for p in tmp_path.glob("*.pt")]
    assert all(torch.equal(again["ema"][k], full["ema"][k]) for k in full["ema"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {full['args']['steps']} |")][0]
    assert float(row.split(" | ")[2].split(" (")[0]) == pytest.approx(float(behaviours["fid"][0]), abs=0.051)


def test_the_cost_bench_splits_each_models_seconds(quick_run, capsys):
    """bench/cost.py on the quick run: the retrained pool's training seconds are the mean of what its checkpoints
    recorded, and every part (sampling, features, loss, the fit) was measured: finite and positive."""
    from conftest import load_bench
    from ddpm import load_checkpoint
    run, _ = quick_run
    cost = load_bench("cost")
    cost.main(cost.parse_args(["--run", str(run)]))
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "---" not in line}
    recorded = np.mean([load_checkpoint(p)["seconds"] for p in (runfolder.models(run, "retrain")).glob("*.pt")])
    assert float(rows["retrained (the baseline)"][1]) == pytest.approx(recorded, abs=0.006)
    n, train, sampling, features, loss, fit = rows["unlearned (the method)"][:6]
    assert all(float(v) > 0 for v in (train, sampling, features, loss, fit))


def test_ceiling_retrains_held_out_subsets_with_one_more_seed_and_switches_refuse_bad_values(tmp_path):
    """CEILING=N retrains the first N held-out subsets with seed GT_SEEDS (one more than the ground truth has) into
    models/lds_ceiling, and measures them; a switch given a value it cannot take ends with one error line, exit 2."""
    calls = dry_run_commands(tmp_path, "default", CEILING=3)
    ceiling = [c for c in calls if c[c.index("--out") + 1].endswith(runfolder.models("", "lds_ceiling"))]
    assert {(c[c.index("--masks") + 1].split("/")[-1], c[c.index("--seed") + 1]) for c in ceiling} == {("lds.npy", "1")}
    assert sorted(c[c.index("--indices") + 1] for c in ceiling) == ["0:1", "1:3"]  # split over the two lanes
    p = pipeline("default", tmp_path / "dry-ceiling", PYTHON="echo", CEILING="3")
    out, _ = p.communicate(timeout=60)
    assert runfolder.behaviors("", "lds_ceiling") in out and "--draws 50" in out
    for env, says in ((dict(DRAWS="many"), "DRAWS must be a whole number"), (dict(LOO="yes"), "LOO must be 0, 1 or auto"),
                      (dict(CEILING="33"), "at most K=24"), (dict(DRAWS="0"), "at least 1")):
        p = pipeline("default", tmp_path / "dry-bad", PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 2 and says in out and out.count("error:") == 1, (env, out)


def test_presets_are_settings_files_and_the_environment_wins_over_them(tmp_path):
    """Every preset is a file of NAME=value lines, one comment each and no measured result (those are in docs/); a
    setting from the environment wins over the preset's, and the preset's over presets/defaults.sh's; an unknown
    preset is refused in one line (dry runs: PYTHON=echo prints the commands)."""
    import re
    from conftest import ROOT
    folder = os.path.join(ROOT, "presets")
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".sh"))
    assert {"default", "quick", "small", "images", "cifar16", "cifar10", "defaults"} <= set(names)
    for name in names:
        text = open(os.path.join(folder, f"{name}.sh")).read()
        comments = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        assert not re.search(r"\b(LDS|AUC) -?\d|\bp [=<]|\[-?\d|(?i:\bmeasured\b)|\d s\b|\dx\b", comments), name
        for line in text.splitlines():
            assert not line.strip() or line.startswith("#") or \
                re.match(r'^[A-Z][A-Z0-9_]*=("[^"]*"|\S*)\s+# \S', line), (name, line)

    def lds_masks_call(**env):
        run = tmp_path / "dry"
        p = pipeline("default", run, PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        calls = dry_run_calls(out)
        (call,) = [c for c in calls if c[:1] == ["make_subsets.py"] and c[-1] == str(runfolder.masks(run, "lds"))]
        return {flag: call[call.index(flag) + 1] for flag in ("--count", "--alpha")}

    assert lds_masks_call() == {"--count": "24", "--alpha": "0.5"}  # the preset's K, the defaults' ALPHA
    assert lds_masks_call(K=5, ALPHA=0.4) == {"--count": "5", "--alpha": "0.4"}  # the environment's
    default_also = "surrogate-shap,surrogate-shap-published,hybrid,shapley-paired-half,shapley-unpaired-half"
    for preset, env, also in (("quick", dict(), []), ("quick", dict(ALSO="surrogate-shap"), ["--also", "surrogate-shap"]),
                              ("default", dict(), ["--also", default_also]), ("default", dict(ALSO="none"), [])):
        p = pipeline(preset, tmp_path / "dry-also", PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        (call,) = [line.split() for line in out.splitlines() if line.startswith("eval_lds.py")]
        assert call[call.index("--draws") + 2:call.index("--compare")] == also
    p = pipeline("nope", tmp_path / "dry-nope", PYTHON="echo")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and out.count("\n") == 1 and "unknown preset 'nope'" in out and "default" in out


def test_guda_unlearns_each_contributor_once_from_the_full_model_and_measures_those_models(tmp_path):
    """GUDA=1 (the default preset's): unlearn.py --method guda from full.pt on the rows of masks/loo.npy, each of the
    20 contributors' rows once, GUDA_STEPS steps, into models/guda, whose behaviours are measured; GUDA=0 runs none;
    GUDA at the image level or with a value it cannot take is refused in one line."""
    def guda_calls(**env):
        return [c for c in dry_run_commands(tmp_path, "default", "unlearn.py", **env)
                if c[c.index("--method") + 1] == "guda"]
    calls = guda_calls()
    for c in calls:
        assert c[c.index("--ckpt") + 1].endswith("full.pt") and c[c.index("--steps") + 1] == "100"
        assert c[c.index("--masks") + 1].endswith("loo.npy") and c[c.index("--out") + 1].endswith("guda")
    rows = sorted(r for c in calls for r in range(*map(int, c[c.index("--indices") + 1].split(":"))))
    assert rows == list(range(20))
    measured = dry_run_commands(tmp_path, "default", "compute_fid.py")
    assert any(c[c.index("--out") + 1] == str(runfolder.behaviors(tmp_path / "dry", "guda")) for c in measured)
    assert [c[c.index("--steps") + 1] for c in guda_calls(GUDA_STEPS="7")] == ["7"] * len(calls)
    assert guda_calls(GUDA="0") == []
    for preset, env, says in (("default", dict(GUDA="yes"), "GUDA must be 0 or 1"),
                              ("quick", dict(GUDA="1"), "GUDA=1 unlearns each contributor once")):
        p = pipeline(preset, tmp_path / "dry-bad", PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 2 and says in out and out.count("error:") == 1, (env, out)


def test_proxy_values_the_first_coalitions_through_the_one_process_runner(tmp_path):
    """PROXY=N runs proxy_game.py --rows N (in tools/one_process.py's interpreter, which must know the script) after
    the behaviours; PROXY=0 runs none; a non-number, the image level or a headline of the reference images (a
    coalition has no model to measure them on) is refused in one line."""
    from tools.one_process import split_calls
    calls = dry_run_commands(tmp_path, "default", "proxy_game.py", PROXY="5")
    assert [c[c.index("--rows") + 1] for c in calls] == ["5"] and calls[0][calls[0].index("--run") + 1] == str(tmp_path / "dry")
    assert split_calls(calls[0])[0][0] == "proxy_game"
    assert dry_run_commands(tmp_path, "default", "proxy_game.py") == []
    for preset, env, says in (("default", dict(PROXY="all"), "PROXY must be a whole number"),
                              ("quick", dict(PROXY="4"), "values coalitions of contributors"),
                              ("cifar16", dict(PROXY="4"), "HEADLINE=loss is measured on the reference images")):
        p = pipeline(preset, tmp_path / "dry-bad", PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 2 and says in out and out.count("error:") == 1, (env, out)


def test_an_edit_of_the_script_during_a_run_does_not_run_it_again(tmp_path):
    """bash reads a script as it runs it: a user editing run_pipeline.sh while a run goes (a line inserted above what
    has run) made it read on from a shifted offset after the last stage, and the whole pipeline ran a second time.
    A copy of the pipeline whose first Python call inserts a comment line at the top of the running script (in place,
    as an editor saving the file does) must still announce its preset once and exit 0."""
    import shutil
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(os.path.join(root, "run_pipeline.sh"), copy)
    for folder in ("pipeline", "presets"):
        shutil.copytree(os.path.join(root, folder), copy / folder)
    editor = tmp_path / "python"
    editor.write_text(f"""#!/bin/bash
if [ ! -e {tmp_path}/edited ]; then
  touch {tmp_path}/edited
  python3 -c "p = '{copy}/run_pipeline.sh'; s = open(p).read(); open(p, 'w').write(s.replace(chr(10), chr(10) + '#' * 300 + chr(10), 1))"
fi
echo "$@"
""")
    editor.chmod(0o755)
    out = subprocess.run(["bash", "run_pipeline.sh", "quick"], cwd=copy, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, RUN=str(tmp_path / "dry"), PYTHON=str(editor)))
    assert (tmp_path / "edited").exists()
    assert out.returncode == 0 and out.stdout.count("preset quick ->") == 1, out.stdout[-2000:] + out.stderr[-2000:]


# Every setting of presets/*.sh given a wrong value: (name, value, words of its one error line). The settings a
# script owns are refused by that script's parse_args or check(args) (tools/one_process.py --check); the others by
# run_pipeline.sh itself. PARTITION, SBATCH_FLAGS, TASK_TIME and TASK_MEM are the cluster's to judge: sbatch
# --test-only refuses them before any job is submitted (tests/test_slurm.py).
BAD_SETTINGS = [
    ("ALPHA", "0", "--alpha"), ("ALSO", "surogate-shap", "unknown estimator surogate-shap"),
    ("ALSO", "surrogate-shap,", "an empty item"), ("ARCH", "huge", "--arch"), ("ARRAY_MAX", "0", "ARRAY_MAX"),
    ("BASELINES", "loss,,trak", "an empty item"), ("BASELINES", "trakk", "unknown baseline trakk"),
    ("BASELINE_FLAGS", "--draws 0", "--draws"), ("BATCH", "0", "--batch-size"), ("BEHAVIORS", "fid,,kid", "an empty item"),
    ("BEHAVIORS", "fdi", "unknown behaviour fdi"), ("REPEATS", "0", "REPEATS must be auto or a positive integer"),
    ("BANK_K", "x", "BANK_K must be a whole number"), ("BANK_R", "-1", "BANK_R must be a whole number"),
    ("SEED", "-1", "SEED must be a whole number"), ("BANK", "No!", "BANK must be 0, auto or a bank's name"),
    ("BANK", "nobank", "no bank 'nobank'"), ("COMPARE", "retraining,,loo", "an empty item"),
    ("COMPARE", "retrianing", "unknown comparison retrianing"), ("MARGIN", "-0.1", "--margin"), ("CEILING", "9", "at most K=4"), ("CONTRIBUTORS", "random:1", "2 <= G"),
    ("CONTRIBUTORS", "{ten_ids}", "must hold 1797 integers"), ("CORRUPT", "1.5", "--corrupt"), ("CPUS", "x", "CPUS"),
    ("DATA", "mnist", "unknown dataset 'mnist'"), ("DDIM_STEPS", "0", "--ddim-steps"), ("DEVICE", "gpu", "DEVICE"),
    ("DRAWS", "many", "DRAWS"), ("FAULT", "blur,,noise", "an empty item"), ("FAULT", "smudge", "unknown fault smudge"),
    ("FEATURES", "vgg", "--features"), ("FULL", "{missing}.pt", "no such checkpoint"), ("GPUS", "one", "GPUS"),
    ("GRID", "x", "--grid"), ("GT_SEEDS", "0", "GT_SEEDS"), ("GUDA", "2", "GUDA must be 0 or 1"),
    ("GUDA_STEPS", "0", "GUDA_STEPS"), ("GUDA_FLAGS", "--nope", "--nope"), ("HEADLINE", "fdi", "unknown behaviour 'fdi'"),
    ("INCEPTION_WEIGHTS", "{missing}.pth", "Inception weights not found"), ("JOBS", "0", "at least 1"),
    ("K", "x", "K must be"), ("LOO", "yes", "LOO must be"), ("LOSS_DRAWS", "0", "--loss-draws"), ("M", "0", "M must be"),
    ("METHOD", "lasso", "METHOD must be"), ("N_REF", "-1", "--n-ref"), ("N_SAMPLES", "1", "--n-samples"),
    ("PROXY", "-1", "PROXY must be"), ("PRUNE_STEPS", "-1", "--steps"), ("QUALITY_DDIM", "x", "QUALITY_DDIM"),
    ("R", "-1", "R must be"), ("RATIO", "1", "--ratio"), ("REF_DATA", "npz:{missing}.npz", "npz file not found"),
    ("REF_DATA", "npz:{rgb}", "has images of shape"), ("ROWS_PER_TASK", "0", "ROWS_PER_TASK"),
    ("RUN", "{ten_ids}", "is not a folder"), ("SCHEDULER", "pbs", "unknown SCHEDULER"), ("SEED_PAIRS", "a", "SEED_PAIRS"),
    ("TRAIN_FLAGS", "--lr x", "--lr"), ("TRAIN_STEPS", "0", "--steps"), ("UNLEARN_FLAGS", "--nope", "--nope"),
    ("UNLEARN_METHOD", "forget", "--method"), ("UNLEARN_STEPS", "x", "--steps"),
]
CLUSTER_SETTINGS = {"PARTITION", "SBATCH_FLAGS", "TASK_TIME", "TASK_MEM"}


def refusal_of_the_check(out):
    """The exit code and stderr of the settings' check that `CHECK_ONLY=1 PYTHON=echo bash run_pipeline.sh` printed,
    run here in this process (the scripts are imported already: no interpreter start per setting)."""
    import contextlib
    import io
    from tools import one_process
    line = next(l for l in out.splitlines() if l.startswith("-m tools.one_process --check "))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            for name, argv in one_process.split_calls(line.split()[3:]):
                one_process.check(name, argv)
        except SystemExit as e:
            return e.code, err.getvalue()
    return 0, err.getvalue()


def test_every_setting_given_a_wrong_value_is_refused_before_the_first_stage(tmp_path):
    """Each setting of every preset with a wrong value ends in one `error:` line and exit 2 before anything is
    written (no run folder): refused by run_pipeline.sh, or by the script that owns it through the check the pipeline
    runs before stage 1 (here printed by a dry run and run in this process); the quick preset's own settings pass."""
    np.save(tmp_path / "ten.npy", np.zeros(10, dtype=np.int64))
    np.savez(tmp_path / "rgb.npz", images=np.zeros((4, 3, 16, 16), dtype=np.uint8))
    paths = dict(ten_ids=tmp_path / "ten.npy", missing=tmp_path / "missing", rgb=tmp_path / "rgb.npz")
    settings = {m[1] for f in Path(ROOT, "presets").glob("*.sh")
                for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", f.read_text(), re.M)}
    assert settings - CLUSTER_SETTINGS == {name for name, _, _ in BAD_SETTINGS}  # every setting is tried
    run = tmp_path / "run"
    p = pipeline("quick", run, PYTHON="echo", CHECK_ONLY=1)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and refusal_of_the_check(out) == (0, "") and not run.exists(), out
    wrong = []
    for name, value, says in BAD_SETTINGS:
        env = {name: value.format(**paths), "CHECK_ONLY": 1, "PYTHON": "echo"}
        if name == "INCEPTION_WEIGHTS":
            env["FEATURES"] = "inception"
        if name == "GUDA_FLAGS":  # (GUDA's call is made, and so checked, where it runs: contributors, GUDA=1)
            env.update(GUDA=1, CONTRIBUTORS="random:4")
        p = pipeline("quick", run, **env)
        out, _ = p.communicate(timeout=60)
        code, err = (p.returncode, out) if p.returncode != 0 else refusal_of_the_check(out)
        lines = [l for l in err.splitlines() if l.startswith("error:")]
        if not (code == 2 and len(lines) == 1 and says in lines[0] and not run.exists()):
            wrong.append((name, value, code, err[-300:]))
    assert wrong == []


def test_a_wrong_setting_fails_before_any_stage_on_both_schedulers_and_writes_nothing(tmp_path):
    """The check as a user meets it, the real interpreter and all: a misspelt estimator, an empty item in a list, a
    contributors file of the wrong length, a missing reference set each end in one line on stderr and exit 2 before
    the first stage (nothing on stdout, where every stage announces itself; no run folder: seconds, not the minutes
    of a stage, but not timed here, where a loaded CPU would fail it); SCHEDULER=slurm is refused before anything is
    submitted (the check comes first)."""
    np.save(tmp_path / "ten.npy", np.zeros(10, dtype=np.int64))
    run = tmp_path / "run"
    for env, says in ((dict(ALSO="surogate-shap"), "unknown estimator surogate-shap"),
                      (dict(BEHAVIORS="fid,,kid", SCHEDULER="slurm"), "an empty item in 'fid,,kid'"),
                      (dict(CONTRIBUTORS=tmp_path / "ten.npy"), "must hold 1797 integers"),
                      (dict(REF_DATA="npz:" + str(tmp_path / "none.npz"), SCHEDULER="slurm"), "npz file not found")):
        e = dict(os.environ, RUN=str(run), PYTHON=sys.executable, TQDM_DISABLE="1", **{k: str(v) for k, v in env.items()})
        r = subprocess.run(["bash", "run_pipeline.sh", "quick"], cwd=ROOT, env=e, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, (env, r.stderr)
        assert not run.exists(), env


def test_a_users_data_is_trained_on_as_given_unless_a_fault_is_asked_for(tmp_path):
    """DATA=npz:... on the default preset (whose CORRUPT=0.15 plants blur, spam and watermarks in its own digits):
    every script is called with --corrupt 0 and the run says the data are used as given; CORRUPT set explicitly
    plants on them; the preset's own data (DATA=digits given or not) keep the preset's faults. (A real run on a user's
    npz, whose report leads with "used as given": test_the_worked_example_of_docs_your_data.)"""
    np.savez(tmp_path / "mine.npz", images=np.zeros((40, 1, 8, 8), dtype=np.uint8))
    mine = "npz:" + str(tmp_path / "mine.npz")

    def corrupt_flags(**env):
        p = pipeline("default", tmp_path / "dry", PYTHON="echo", **env)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        calls = [c for c in dry_run_calls(out) if "--corrupt" in c]
        assert calls and all(c[c.index("--data") + 1] == env.get("DATA", "digits") for c in calls)
        return {c[c.index("--corrupt") + 1] for c in calls}, out

    flags, out = corrupt_flags(DATA=mine)
    assert flags == {"0"} and f"data: {mine}, used as given (no fault planted" in out
    flags, out = corrupt_flags(DATA=mine, CORRUPT="0.1")
    assert flags == {"0.1"} and f"data: {mine} with planted faults: blur,duplicate,watermark on a fraction 0.1" in out
    for env in (dict(), dict(DATA="digits")):
        assert corrupt_flags(**env)[0] == {"0.15"}


def test_the_worked_example_of_docs_your_data(tmp_path):
    """docs/your-data.md as a student follows it, at a tiny size: 40 photographers' synthetic 32x32 colour photos in
    folders, packed by the doc's pack.py, then the doc's command (the README's) with its sizes made tiny and the loss
    as the behaviour (no Inception weights here); the report leads with the data as given and the verdicts, and
    verdicts.csv has a row per photographer."""
    doc = Path(ROOT, "docs", "your-data.md").read_text()
    pack = re.search(r"```python\n(# pack\.py.*?)```", doc, re.S)[1]
    command = re.search(r"```bash\n(DATA=npz:photos.*?)```", doc, re.S)[1]
    def flat(text):
        return " ".join(text.replace("\\\n", " ").split())
    assert flat(command) in flat(Path(ROOT, "README.md").read_text())  # the README's own-data command
    rng = np.random.default_rng(0)
    from PIL import Image
    for p in range(40):
        (tmp_path / "photos" / f"photographer{p:02d}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / f"photographer{p:02d}" / f"{i}.png")
    np.savez(tmp_path / "clean.npz", images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    r = subprocess.run([sys.executable, "-c", pack], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "photographers.npy").tolist() == [p for p in range(40) for _ in range(4)]
    settings = dict(re.findall(r"([A-Z_]+)=(\S+)", command.split("bash run_pipeline.sh")[0]))
    preset = command.split("bash run_pipeline.sh")[1].split()[0]
    settings.update(HEADLINE="loss", BEHAVIORS="loss", M=10, K=0, R=0, TRAIN_STEPS=6, PRUNE_STEPS=3, UNLEARN_STEPS=2,
                    LOSS_DRAWS=1, BASELINES="none", QUALITY_DDIM=0, SEED_PAIRS=0, JOBS=1)
    run = tmp_path / settings.pop("RUN")
    p = subprocess.Popen(["bash", "run_pipeline.sh", preset], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ, PYTHON=sys.executable, TQDM_DISABLE="1", RUN=str(run),
                                             **{k: str(v).replace("photos.npz", str(tmp_path / "photos.npz"))
                                                .replace("clean.npz", str(tmp_path / "clean.npz"))
                                                .replace("photographers.npy", str(tmp_path / "photographers.npy"))
                                                for k, v in settings.items()}))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    assert "used as given (no fault planted" in out
    lines = runfolder.report(run).read_text().splitlines()
    assert lines[2].startswith("Data: `npz:") and lines[2].endswith("160 images; **used as given: no fault planted**.")
    assert "## Which contributors hurt or help loss" in lines  # 10 models of 40: too few for an interval or a call
    assert any(l.startswith("0 harmful, 0 helpful, 40 undecided. No interval and no call") for l in lines)
    table = np.genfromtxt(runfolder.verdicts(run), delimiter=",", names=True, dtype=None, encoding=None)
    assert sorted(table["contributor"]) == list(range(40)) and set(table["images"]) == {4}


def test_repetitions_run_the_methods_side_with_their_own_seeds_and_one_combined_report(tmp_path):
    """REPEATS=2 (a dry run of the quick preset): two runs, RUN/rep0 and RUN/rep1, whose full model, pruning, unlearning
    subsets and unlearning take seeds 0 and 1 (the subsets' 1 and 101), then combine.py over RUN."""
    run = tmp_path / "dry"
    p = pipeline("quick", run, PYTHON="echo", REPEATS="2")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    calls = dry_run_calls(out)
    for r, mask_seed in ((0, "1"), (1, "101")):
        rep = str(run / f"rep{r}")
        (full,) = [c for c in calls if c[0] == "train_ddpm.py" and c[c.index("--out") + 1] == f"{rep}/full.pt"]
        (prune,) = [c for c in calls if c[0] == "prune.py" and c[c.index("--out") + 1] == f"{rep}/pruned.pt"]
        (masks,) = [c for c in calls if c[0] == "make_subsets.py" and c[-3:-1] == ["--out", f"{rep}/masks/unlearn.npy"]
                    or c[0] == "make_subsets.py" and f"{rep}/masks/unlearn.npy" in c and "--alpha" in c]
        unlearn = [c for c in calls if c[0] == "unlearn.py" and f"{rep}/models/unlearn" in c]
        assert full[full.index("--seed") + 1] == prune[prune.index("--seed") + 1] == str(r)
        assert masks[masks.index("--seed") + 1] == mask_seed and unlearn
        assert all(c[c.index("--seed") + 1] == str(r) for c in unlearn)
    assert calls[-1] == ["combine.py", "--run", str(run)]
