"""Planted faults (data.FAULTS) and the field's baselines (baselines.py) against hand computations, direct loops and
planted answers; eval_lds.py's comparison of every method."""
import json

import numpy as np
import pytest
import torch

import baselines
import data
import runfolder
import ddpm
import ekfac
import eval_lds
from conftest import TINY, run_cli, tiny_contributor_run, write_pool


# ----------------------------------------------------------------------------------------------
# Faults

def test_each_fault_is_what_it_says_and_seeded():
    clean = data.load_dataset("digits")
    mix = "noise,blur,duplicate,one-class,watermark"
    ds = data.load_dataset("digits", corrupt=0.15, corrupt_seed=3, fault=mix)
    again = data.load_dataset("digits", corrupt=0.15, corrupt_seed=3, fault=mix)
    assert np.array_equal(ds.images, again.images) and list(ds.faults) == mix.split(",")
    sizes = [len(v) for v in ds.faults.values()]
    assert sum(sizes) == len(ds.corrupted) == 270 and max(sizes) - min(sizes) <= 1  # the fraction shared equally
    untouched = np.setdiff1d(np.arange(len(ds)), ds.corrupted)
    assert np.array_equal(ds.images[untouched], clean.images[untouched])
    # blur: a 3x3 box filter with repeated edges, by hand on one image
    i = ds.faults["blur"][0]
    x = np.pad(clean.images[i, 0].astype(float), 1, mode="edge")
    box = np.array([[x[r:r + 3, c:c + 3].mean() for c in range(8)] for r in range(8)])
    assert np.array_equal(ds.images[i, 0], np.round(box).astype(np.uint8))
    # duplicate: near-copies (+-8 grey levels) of exactly 6 clean images
    sources = [np.flatnonzero(np.abs(clean.images[untouched].astype(int) - ds.images[j].astype(int)).max((1, 2, 3)) <= 8)
               for j in ds.faults["duplicate"]]
    assert all(len(s) >= 1 for s in sources) and len({int(untouched[s[0]]) for s in sources}) == 6
    # one-class: near-copies of clean images of a single class
    classes = {int(clean.labels[untouched[np.argmin(np.abs(clean.images[untouched].astype(int)
                                                           - ds.images[j].astype(int)).max((1, 2, 3)))]])
               for j in ds.faults["one-class"]}
    assert len(classes) == 1
    # watermark: the image itself with a bright L in its lower right corner (side 3 of 8)
    j = ds.faults["watermark"][0]
    marked = clean.images[j].copy()
    marked[0, 7, 5:] = marked[0, 5:, 7] = 255
    assert np.array_equal(ds.images[j], marked)
    # the held-out faults, by hand: a negative; the image moved 2 pixels with a black border; salt-and-pepper
    held = data.load_dataset("digits", corrupt=0.15, corrupt_seed=3, fault="invert,shift,salt")
    i = held.faults["invert"][0]
    assert np.array_equal(held.images[i], 255 - clean.images[i])
    for i in held.faults["shift"][:20]:
        x, y = clean.images[i, 0], held.images[i, 0]
        moved = [np.pad(x[2:], ((0, 2), (0, 0))), np.pad(x[:-2], ((2, 0), (0, 0))),
                 np.pad(x[:, 2:], ((0, 0), (0, 2))), np.pad(x[:, :-2], ((0, 0), (2, 0)))]  # up, down, left, right
        assert any(np.array_equal(y, m) for m in moved)
    salt = held.faults["salt"]
    changed = held.images[salt] != clean.images[salt]
    assert np.isin(held.images[salt][changed], [0, 255]).all() and 0.1 < changed.mean() < 0.25  # 20%, minus hits on 0

    # noise alone draws exactly what it drew before faults had kinds
    noise = data.load_dataset("digits", corrupt=0.1, corrupt_seed=4)
    rng = np.random.default_rng(4)
    idx = np.sort(rng.choice(1797, 180, replace=False))
    assert np.array_equal(noise.corrupted, idx)
    assert np.array_equal(noise.images[idx], rng.integers(0, 256, size=(180, 1, 8, 8), dtype=np.uint8))


def test_random_contributors_keep_each_fault_kind_apart():
    ds = data.load_dataset("digits", corrupt=0.15, fault="noise,blur,duplicate")
    groups = data.make_groups("random:20", ds)
    owners = {k: set(groups[v].tolist()) for k, v in ds.faults.items()}
    assert all(len(o) == 1 for o in owners.values()) and len(set.union(*owners.values())) == 3  # one contributor each
    for k, (g,) in owners.items():
        assert set(np.flatnonzero(groups == g).tolist()) == set(ds.faults[k].tolist())  # nothing clean mixed in
    with pytest.raises(data.DataError, match="fault kinds need"):
        data.make_groups("random:3", ds)


# ----------------------------------------------------------------------------------------------
# The measures and their aggregation, against direct computations

def test_nearest_distance_feature_similarity_and_aggregation_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    brute = [min(np.sqrt(((x - y) ** 2).sum()) for y in b) for x in a]
    np.testing.assert_allclose(baselines.nearest_distance(a, b, block=3), brute, rtol=1e-12)
    cos = [np.mean([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b]) for x in a]
    np.testing.assert_allclose(baselines.unit_rows(a) @ baselines.unit_rows(b).mean(0), cos, rtol=1e-12)
    values, groups = np.array([1.0, 5.0, 2.0, 4.0, 0.0]), np.array([0, 0, 1, 1, 2])
    assert baselines.aggregate(values, groups, "mean").tolist() == [3.0, 3.0, 0.0]
    assert baselines.aggregate(values, groups, "max").tolist() == [5.0, 4.0, 0.0]
    assert baselines.aggregate(values, groups, "sum").tolist() == [6.0, 6.0, 0.0]
    assert baselines.harm_of("pixel-nn", values, groups).tolist() == [3.0, 3.0, 0.0]  # far is harmful
    assert baselines.harm_of("feature-sim-max", values, groups).tolist() == [-5.0, -4.0, -0.0]  # similar is helpful
    scores = baselines.scores_by_behavior(np.array([1.0, -2.0]), {"fid": "lower", "is": "higher", "class:3": None})
    assert set(scores) == {"fid", "is"} and scores["fid"].tolist() == [1.0, -2.0] and scores["is"].tolist() == [-1.0, 2.0]


def tiny_model():
    torch.manual_seed(0)
    return ddpm.UNet(**TINY).eval()


def test_per_image_gradients_equal_one_image_at_a_time_autograd():
    """torch.func's per-image gradients (mean over shared draws) against autograd.grad on each image alone, for
    both output functions (the DDPM loss of TRAK and grad-sim, D-TRAK's squared norm)."""
    model, schedule = tiny_model(), ddpm.Schedule()
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    draws = list(ddpm.shared_draws(5, (1, 8, 8), schedule.T, seed=3, draws=2))
    for output in ("loss", "norm"):
        got = baselines.per_image_gradients(model, schedule, x0, output, seed=3, draws=2, batch_size=2)
        for i in range(5):
            total = 0
            for _, _, _, t, eps in draws:
                pred = model(ddpm.q_sample(schedule, x0[i:i + 1], t[i:i + 1], eps[i:i + 1]), t[i:i + 1])
                total = total + (((pred - eps[i:i + 1]) ** 2).sum() if output == "loss" else (pred ** 2).sum()) / 2
            direct = torch.cat([g.flatten() for g in torch.autograd.grad(total, list(model.parameters()))])
            torch.testing.assert_close(got[i], direct, rtol=1e-4, atol=1e-5)


def test_projection_is_linear_and_preserves_inner_products_on_average():
    """dattri's random projection as baselines.py uses it: a linear map x -> x P (P read off by projecting the
    identity), the same for any batch, and a Johnson-Lindenstrauss embedding (inner products kept up to scale)."""
    from dattri.func.projection import random_project
    g = torch.randn(40, 300, generator=torch.Generator().manual_seed(0))
    project = random_project(g[:1], 1, 256, 32, 0, "normal", device="cpu")
    P = project(torch.eye(300))
    torch.testing.assert_close(project(g), g @ P, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(project(g[:7]), project(g)[:7], rtol=1e-5, atol=1e-5)
    inner, projected = (g @ g.T).flatten(), (project(g) @ project(g).T).flatten() / 256
    assert np.corrcoef(inner.numpy(), projected.numpy())[0, 1] > 0.9  # (0.93 here)


def test_trak_scores_against_the_formula_and_a_planted_answer():
    rng = np.random.default_rng(1)
    phi, gen = rng.normal(size=(30, 6)), rng.normal(size=(9, 6))
    kernel = phi.T @ phi
    lam = 0.01 * np.trace(kernel) / 6
    expected = [phi[i] @ np.linalg.inv(kernel + lam * np.eye(6)) @ gen.mean(0) for i in range(30)]
    np.testing.assert_allclose(baselines.trak_scores(phi, gen, 0.01), expected, rtol=1e-10)
    # planted: the generated samples' features are one training image's direction; with a tiny ridge and orthogonal
    # training features, that image alone scores
    phi = np.eye(6)
    assert np.argmax(baselines.trak_scores(phi, np.tile(phi[4], (3, 1)), 1e-6)) == 4


def test_loo_scores_are_the_full_behaviour_minus_each_retraining():
    g = 4
    masks = ~np.eye(g, dtype=bool)[[2, 0, 3, 1]]  # rows in another order than the contributors they leave out
    sha = np.array([data.row_sha256(m) for m in masks])
    loo = dict(index=np.array([0, 1, 2, 3, 0]), mask_sha256=sha[[0, 1, 2, 3, 0]], seed=np.array([0, 0, 0, 0, 1]),
               fid=np.array([11.0, 12.0, 13.0, 14.0, 15.0]), behaviors=json.dumps(["fid"]))
    full = dict(index=np.array([-1]), fid=np.array([10.0]), behaviors=json.dumps(["fid"]))
    scores = baselines.loo_scores(full, loo, masks)["fid"]
    # contributor 2 is left out by row 0 (mean of 11 and 15: 13), 0 by row 1, 3 by row 2, 1 by row 3
    assert scores.tolist() == [10 - 12.0, 10 - 14.0, 10 - 13.0, 10 - 13.0]
    with pytest.raises(data.DataError, match="leave out one contributor"):
        baselines.loo_scores(full, loo, np.ones((4, 4), dtype=bool))


@pytest.fixture(scope="module")
def tiny_baseline_run(tmp_path_factory):
    """conftest.tiny_contributor_run (60 digits in 6 contributors, one of noise, a tiny full model, two leave-one-out
    models): every training-free and gradient baseline computed by baselines.py (small settings)."""
    run = tiny_contributor_run(tmp_path_factory.mktemp("baseline-run"))
    r = run_cli("baselines", "--run", run, "--data", f"npz:{run / 'd.npz'}", "--draws", "2", "--grad-draws", "2", "--dtrak-draws", "2",
                "--grad-samples", "5", "--proj-dim", "16", "--batch-size", "8", "--ensemble", "3", "--dtrak-ridge", "0.3")
    assert r.returncode == 0, r.stderr
    return run


def test_a_measure_recomputed_after_a_setting_changes_equals_one_computed_afresh(tiny_baseline_run):
    """FullModel.recompute, what the tuning benches call: after a setting of args changes (TRAK's ridge) or the query
    labels do (--ref-queries all, then others again), the measure re-solved from the cached gradients equals a new
    FullModel's at those settings, and differs from before the change."""
    run = tiny_baseline_run
    argv = ["--run", str(run), "--data", f"npz:{run / 'd.npz'}", "--grad-draws", "2", "--grad-samples", "5",
            "--proj-dim", "16", "--batch-size", "8", "--ensemble", "1"]
    ckpt = ddpm.load_checkpoint(runfolder.checkpoint(run, "full"))

    def fresh(*extra):
        args = baselines.parse_args(argv + list(extra))
        full, ds, groups, _ = baselines.setting_up(args)
        return baselines.FullModel(ckpt, ds, args, baselines.settings_of(args, full, ds), "cpu", groups)
    trak = baselines.BASELINES["trak-ref"].measure
    model = fresh()
    before, own = np.array(model.get(trak)), model.labels
    model.args.ridge = 0.3
    ridge = np.array(model.recompute(trak))
    np.testing.assert_allclose(ridge, fresh("--ridge", "0.3").get(trak), rtol=1e-6, atol=1e-9)
    assert not np.allclose(ridge, before, rtol=1e-3)
    every = np.array(model.recompute(trak, labels=None))
    np.testing.assert_allclose(every, fresh("--ridge", "0.3", "--ref-queries", "all").get(trak), rtol=1e-6, atol=1e-9)
    assert not np.allclose(every, ridge, rtol=1e-3)
    np.testing.assert_allclose(model.recompute(trak, labels=own), ridge, rtol=1e-6, atol=1e-9)


def test_every_baseline_file_matches_a_direct_computation(tiny_baseline_run):
    """Each baseline's contributor scores from baselines.py against the same definition computed directly here: the
    loss by a per-image loop, distances and similarities by brute force over the full model's samples, the gradient
    scores by their formulas from the per-image gradients (checked against autograd above), projected by dattri; TRAK
    and D-TRAK the mean of each model's scores over the ensemble (the full model and the two leave-one-out models), each
    at its own ridge;
    every similarity and gradient baseline also against the reference images (here the data set itself: a nearest
    neighbour other than the image; a mean over the other contributors' images, --ref-queries others)."""
    from compute_fid import sample_model
    from features import cnn_extractor, features_of
    from dattri.func.projection import random_project
    run = tiny_baseline_run
    ckpt = ddpm.load_checkpoint(runfolder.checkpoint(run, "full"))
    model, schedule = ddpm.build_model(ckpt).eval(), ddpm.Schedule()
    x0 = data.to_model_space(np.load(run / "d.npz")["images"])
    groups = np.arange(60) // 10
    per_contributor = lambda v, how="mean": np.array([getattr(np, how)(v[groups == g]) for g in range(6)])  # noqa: E731
    read = lambda name: np.load(runfolder.baseline(run, name))  # noqa: E731
    expected = {}
    errors = np.zeros(60)
    for _, _, _, t, eps in ddpm.shared_draws(60, (1, 8, 8), schedule.T, seed=0, draws=2):
        with torch.no_grad():
            errors += ((model(ddpm.q_sample(schedule, x0, t, eps), t) - eps) ** 2).flatten(1).sum(1).numpy() / 2 / 64
    expected["loss"] = per_contributor(errors)  # high error is harmful: +harm for fid
    samples = sample_model(ckpt, schedule, torch.randn((12, 1, 8, 8), generator=torch.Generator().manual_seed(0)), 3,
                           500, "cpu")
    pix = np.array([min(np.linalg.norm(a - b) for b in samples.flatten(1).numpy()) for a in x0.flatten(1).numpy()])
    expected["pixel-nn"] = per_contributor(pix)
    extract = cnn_extractor(data.load_dataset(f"npz:{run / 'd.npz'}"), str(run), 0, "cpu")[0]  # the run's, as trained
    ft, fs = (features_of(extract, x, 500)[0].astype(np.float64) for x in (x0, samples))
    expected["feature-nn"] = per_contributor(np.array([min(np.linalg.norm(a - b) for b in fs) for a in ft]))
    cos = np.array([np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in fs]) for a in ft])
    expected["feature-sim"], expected["feature-sim-max"] = -per_contributor(cos), -per_contributor(cos, "max")
    others = lambda a, b: [min(np.linalg.norm(a[i] - b[j]) for j in range(len(b)) if j != i) for i in range(len(a))]  # noqa: E731
    expected["pixel-nn-ref"] = per_contributor(np.array(others(x0.flatten(1).numpy(), x0.flatten(1).numpy())))
    expected["feature-nn-ref"] = per_contributor(np.array(others(ft, ft)))
    cos_ref = np.array([np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in ft[groups != groups[i]]])
                        for i, a in enumerate(ft)])  # the other contributors' reference images only
    expected["feature-sim-ref"], expected["feature-sim-max-ref"] = -per_contributor(cos_ref), \
        -per_contributor(cos_ref, "max")
    members = [model] + [ddpm.build_model(ddpm.load_checkpoint(runfolder.models(run, "loo") / f"{i:05d}.pt")).eval()
                         for i in range(2)]
    project = random_project(torch.zeros(1, sum(p.numel() for p in model.parameters())), 1, 16, 32, 0, "normal",
                             device="cpu")  # dattri's projector, as baselines.py makes it (test_projection_is_linear)
    for output in ("loss", "norm"):
        trak, trak_ref = [], []
        for m in members:  # the ensemble: each model's TRAK scores, then their mean
            phi_train, phi_gen = (project(baselines.per_image_gradients(m, schedule, x, output, seed=0, draws=2,
                                                                        batch_size=3)).double().numpy()
                                  for x in (x0, samples[:5]))
            kernel = phi_train.T @ phi_train
            ridge = 0.01 if output == "loss" else 0.3  # --ridge (TRAK's), --dtrak-ridge
            inverse = np.linalg.inv(kernel + ridge * np.trace(kernel) / 16 * np.eye(16))
            trak.append([phi_train[i] @ inverse @ phi_gen.mean(0) for i in range(60)])
            trak_ref.append([phi_train[i] @ inverse @ phi_train[groups != groups[i]].mean(0) for i in range(60)])
            if output == "loss" and m is model:  # grad-sim: the full model's gradients alone
                unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
                expected["grad-sim"] = -per_contributor((unit(phi_train) @ unit(phi_gen).T).mean(1))
                cosines = unit(phi_train) @ unit(phi_train).T
                expected["grad-sim-ref"] = -per_contributor(np.array([cosines[i, groups != groups[i]].mean()
                                                                      for i in range(60)]))
        name = "trak" if output == "loss" else "d-trak"
        expected[name] = -per_contributor(np.mean(trak, 0), "sum")  # helpful: -harm
        expected[f"{name}-ref"] = -per_contributor(np.mean(trak_ref, 0), "sum")
    # EK-FAC influence (ekfac.py, checked against autograd loops and a dense matrix in test_ekfac.py): the full model's
    # curvature at --ekfac-draws 2, the query the first --grad-samples samples or the reference images, one batch
    curvature = ekfac.fit_ekfac(model, schedule, x0, seed=0, draws=2, batch_size=8)
    for name, query, labels in (("ekfac", samples[:5], None), ("ekfac-ref", x0, (groups, groups))):
        s, _ = ekfac.influence_scores(model, schedule, x0, query, seed=0, draws=2, damping=0.1, batch_size=60,
                                      curvature=curvature, labels=labels)  # (labels: test_ekfac's autograd check)
        expected[name] = -per_contributor(s, "sum")  # positive s: helpful, -harm
    for name, want in expected.items():
        f = read(name)
        keys = json.loads(str(f["behaviors"]))
        assert keys == ["fid", "precision"] and str(f["behavior"]) == "fid", name
        np.testing.assert_allclose(f["scores"], want, rtol=2e-3, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(f["scores_by_behavior"][1], -want, rtol=2e-3, atol=1e-6, err_msg=name)  # higher better
        assert (float(f["macs"]) > 0 or name == "pixel-nn-ref") and float(f["seconds"]) > 0 and str(f["how"])  # (no model)
    for name in ("trak", "trak-ref", "d-trak", "d-trak-ref"):  # each charged its two other members' training
        assert float(read(name)["macs"]) >= 2e12 > float(read("grad-sim")["macs"]), name
    assert json.loads(str(read("trak")["ensemble"])) == [runfolder.relative(run, p) for p in (
        runfolder.checkpoint(run, "full"), *(runfolder.models(run, "loo") / f"{i:05d}.pt" for i in range(2)))]
    assert set(expected) == set(baselines.BASELINES) - set(baselines.POOLED)  # every baseline of the full model
    # (the pooled ones: loo_scores below, guda's refusal, proxy in test_proxy_game.py)
    assert not (runfolder.baseline(run, "loo")).exists()  # no leave-one-out behaviours: not computed


def test_loo_is_refused_without_its_models_and_a_rerun_skips_finished_baselines(tiny_baseline_run):
    run = tiny_baseline_run
    args = ["--run", run, "--data", f"npz:{run / 'd.npz'}", "--draws", "2", "--grad-draws", "2", "--dtrak-draws", "2", "--grad-samples", "5",
            "--proj-dim", "16", "--ensemble", "3", "--dtrak-ridge", "0.3"]
    r = run_cli("baselines", *args, "--only", "loo")
    assert r.returncode == 2 and "loo needs" in r.stderr and "LOO=1" in r.stderr
    r = run_cli("baselines", *args, "--only", "guda")
    assert r.returncode == 2 and "guda needs" in r.stderr and "GUDA=1" in r.stderr
    r = run_cli("baselines", *args, "--only", "loss,trak")
    assert r.returncode == 0 and "wrote 0 baselines" in r.stdout and "2 up to date" in r.stdout


# ----------------------------------------------------------------------------------------------
# The comparison in the report

def test_the_report_compares_every_method_on_planted_baselines(tmp_path):
    """A synthetic contributor run whose planted FID rises with contributors 0 (noise) and 1 (blur); a baseline
    that knows the planted effect is scored LDS ~1 and AUC 1, one that ranks them last AUC 0, each beside
    unlearning with its compute, and the report defines each baseline."""
    rng = np.random.default_rng(0)
    n, g = 1797, 12
    groups = rng.permutation(np.arange(n) % g)
    run = tmp_path / "run"
    effect = np.r_[6.0, 5.0, rng.normal(0, 0.3, g - 2)]
    pools = {"unlearn": data.make_masks(g, 60, 0.5, seed=1), "lds": data.make_masks(g, 24, 0.5, seed=2)}
    pools["retrain"] = pools["unlearn"][:8]
    for name, masks in pools.items():
        write_pool(run, name, masks, 50 + masks @ effect + rng.normal(0, 0.5, len(masks)), 1.0 if name == "unlearn" else 10.0)
    np.save(runfolder.groups(run), groups)
    np.save(runfolder.corrupted(run), np.flatnonzero(groups < 2))
    runfolder.make(run)
    for name, scores, order in (("oracle", effect, 0), ("backwards", -effect, 1)):
        np.savez(runfolder.baseline(run, name), scores=scores, scores_by_behavior=scores[None],
                 behaviors=json.dumps(["fid"]), macs=5e9, seconds=1.0, how=f"{name}'s definition", order=order)
    r = run_cli("eval_lds", "--run", run, "--data", "digits", "--draws", "10")
    assert r.returncode == 0, r.stderr
    rows = {c["name"]: c for c in json.loads((runfolder.results(run)).read_text())["comparison"]}
    assert list(rows) == ["sparsified unlearning", "retraining, equal compute", "retraining, all 8 models", "oracle",
                          "backwards"]  # unlearning's 60 models cost 6 retrainings (wall time: no MACs recorded here)
    assert rows["oracle"]["lds"]["fid"]["lds"] > 0.8 and rows["oracle"]["auc"] == 1.0  # (held-out noise: 0.88)
    assert rows["backwards"]["auc"] == 0.0 and rows["backwards"]["lds"]["fid"]["lds"] < -0.8
    assert rows["backwards"]["lds"]["fid"]["p_value"] < 0.05  # paired against unlearning's
    assert rows["oracle"]["rank_by_fault"] == {"corrupted": 1} and rows["backwards"]["rank_by_fault"] == {"corrupted": 11}
    report = (runfolder.report(run)).read_text()
    assert report.index("## How the method compares (fid)") < report.index("## Table 1 analogue")
    assert "| oracle | - |" in report and "- **backwards**: backwards's definition" in report


# ----------------------------------------------------------------------------------------------
# Acting on the attributions (bench/counterfactual.py)

def test_counterfactual_cluster_test_against_a_loop_and_planted_answers():
    from conftest import load_bench
    counterfactual = load_bench("counterfactual")
    rng = np.random.default_rng(3)
    mine, random = rng.normal(2.0, 1.0, 4), rng.normal(0.0, 1.0, (6, 4)) + rng.normal(0, 3, (6, 1))  # draws cluster
    diff, (lo, hi), p, n_boot = counterfactual.cluster_test(mine, random, n_boot=500, seed=7)
    # the same bootstrap by a loop: seeds and draws resampled with replacement, paired by seed
    r = np.random.default_rng(7)
    s, d = r.integers(0, 4, (500, 4)), r.integers(0, 6, (500, 6))
    boot = [mine[s[b]].mean() - np.mean([random[i, j] for i in d[b] for j in s[b]]) for b in range(500)]
    assert diff == pytest.approx(np.mean(mine - random.mean(0)))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))
    assert p == pytest.approx(np.mean(np.array(boot) <= 0)) and n_boot == 500
    # planted: a method exactly 3 better than every draw, seed by seed, has no spread and p = 0
    base = rng.normal(size=4)
    diff, ci, p, _ = counterfactual.cluster_test(base + 3.0, np.tile(base, (6, 1)), n_boot=200)
    assert diff == pytest.approx(3.0) and ci == pytest.approx((3.0, 3.0)) and p == 0.0
    assert counterfactual.fmt_p(0.0, 10000) == "< 0.0001" and counterfactual.fmt_p(0.0321, 10000) == "= 0.032"
    # Holm by hand: sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (monotone)
    assert counterfactual.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])


def test_tied_scores_give_chance_level_removal_sets_and_ranks():
    """A constant score and a two-valued one (the planted bad units among the tied top) remove and rank at chance:
    ties never follow unit ids, so a degenerate estimator cannot look right by numbering."""
    from types import SimpleNamespace
    from conftest import load_bench
    counterfactual = load_bench("counterfactual")
    bad = np.array([0, 1, 2])  # the lowest ids, where a stable sort puts every tie
    n, picks, ranks = 20, [], []
    two_valued = np.where(np.arange(n) < 10, 1.0, 0.0)  # units 0..9 tied at the top
    for seed in range(400):
        for scores, size in ((np.zeros(n), 2), (two_valued, 5)):
            (_, _, _, _, removed), = counterfactual.removal_sets({"m": scores}, "lower", [("x", size)], 0, n, seed)
            picks.append((size, np.isin(removed, bad).sum()))
        fake = SimpleNamespace(bad=bad, bad_kinds={"blur": bad[:1]})
        ranks.append(eval_lds.detection(np.zeros(n), fake, seed)["rank_by_fault"]["blur"])
    constant = np.mean([k for size, k in picks if size == 2])
    top = np.mean([k for size, k in picks if size == 5])
    assert constant == pytest.approx(2 * 3 / 20, abs=0.06)  # chance: size x 3 bad / 20 units
    assert top == pytest.approx(5 * 3 / 10, abs=0.15)  # chance among the 10 tied units
    assert np.mean(ranks) == pytest.approx(10.5, abs=0.8)  # a uniform rank of 1..20


def test_counterfactual_bench_retrains_without_the_most_harmful_units(quick_run, tmp_path, capsys):
    """bench/counterfactual.py on a copy of the quick run (its smallest settings): the removal sets are each method's
    most harmful images (by its own scores) and seeded random ones; every set is retrained with the full model's
    recipe and each seed, the full data's row included, and the table compares each method with random removal."""
    import shutil
    from conftest import load_bench
    reference, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(runfolder.relative(reference, runfolder.models(reference, ""))))
    counterfactual = load_bench("counterfactual")
    counterfactual.main(counterfactual.parse_args(["--run", str(run), "--fractions", "0.05", "--keep", "0", "--random",
                                                   "2", "--seeds", "2", "--methods", "sparsified unlearning,loss"]))
    out = capsys.readouterr().out
    sets = json.loads(runfolder.bench_file(run, "counterfactual.json").read_text())
    scores = np.load(runfolder.baseline(run, "loss"))["scores"]  # fid: a high score is harmful
    loss_set = next(s for s in sets if s["method"] == "loss")
    assert loss_set["size"] == 90 and set(loss_set["removed"]) == set(np.argsort(-scores)[:90].tolist())
    masks = np.load(runfolder.masks(run, "counterfactual"))
    assert masks[0].all() and not masks[loss_set["row"]][loss_set["removed"]].any()
    assert masks[loss_set["row"]].sum() == 1797 - 90
    assert len(list((runfolder.models(run, "counterfactual")).glob("*.pt"))) == 2 * len(masks)
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| sparsified unlearning", "| loss", "| random"]
    assert "p (Holm) " in rows[2] and "nan" not in out  # (no 10% removal here: no primary cell)
    assert "Primary** (declared before the run): sparsified unlearning, remove 10%" in out


def test_the_confirmatory_plans_sets_and_test_by_hand():
    """bench/counterfactual.py --plan: one seed's sets are the method's own top 10% and 20% (by its scores, most
    harmful for FID first) and 39 seeded random sets of each size; the test over the seeds' result files is
    stats.rank_sum_p of the method's improvement among its seed's random sets, the secondary Holm-adjusted."""
    import json
    import os
    from conftest import ROOT, load_bench
    from stats import rank_sum_p
    counterfactual = load_bench("counterfactual")
    with open(os.path.join(ROOT, "bench", "plans", "counterfactual-confirmatory.json")) as f:
        plan = json.load(f)
    scores = np.arange(20.0)  # for FID (lower is better) the largest score is the most harmful
    sets = counterfactual.plan_sets(scores, "lower", 20, plan, seed=1000)
    mine = [(label, removed.tolist()) for label, m, _, _, removed in sets if m == "method"]
    assert mine == [("primary", [18, 19]), ("secondary 20%", [16, 17, 18, 19])]
    randoms = [s for s in sets if s[1] == "random"]
    assert len(randoms) == 2 * 39 and len({tuple(s[4]) for s in randoms if s[0] == "primary"}) > 30
    rng = np.random.default_rng(0)
    results = [dict(sets=[dict(label=label, method=m, improvement=float(rng.normal(2.0 if m == "method" else 0.0)))
                          for label, m, *_ in sets]) for _ in range(10)]
    test = counterfactual.confirmatory_test(results, 0.05)
    for label in ("primary", "secondary 20%"):
        method = [next(s["improvement"] for s in r["sets"] if s["label"] == label and s["method"] == "method")
                  for r in results]
        random = [[s["improvement"] for s in r["sets"] if s["label"] == label and s["method"] == "random"]
                  for r in results]
        assert test[label]["p"] == pytest.approx(rank_sum_p(method, random))
    assert test["secondary 20%"]["p_holm"] == test["secondary 20%"]["p"]  # one secondary: Holm leaves it
    assert test["primary"]["verdict"] == "found"


def test_the_tuning_rule_takes_the_cheapest_projection_within_one_standard_error_and_looks_beyond_size():
    """bench/tune_baselines.py: the one-standard-error rule by hand on planted entries, and its target: a quadratic in
    the subset size regressed out exactly (a prediction that is size alone scores nothing beyond it)."""
    from conftest import load_bench
    bench = load_bench("tune_baselines")
    entries = [dict(ridge=r, proj_dim=p, rho=rho, ci=[rho - 0.196, rho + 0.196])  # standard error 0.1
               for r, p, rho in ((0.01, 1024, 0.50), (1.0, 1024, 0.55), (0.01, 4096, 0.62), (1.0, 4096, 0.40))]
    assert bench.chosen(entries, "proj_dim") == entries[1]  # 0.55 is within 0.1 of 0.62: the cheaper projection
    entries[1]["rho"] = 0.45
    assert bench.chosen(entries, "proj_dim") == entries[2]  # 1024's best is now more than 0.1 below
    assert bench.chosen([dict(e, proj_dim=None) for e in entries], None)["rho"] == 0.62  # no projection: the best
    sizes = np.arange(1, 20, dtype=float)
    np.testing.assert_allclose(bench.beyond_size(3 + 2 * sizes - 0.5 * sizes ** 2, sizes), 0, atol=1e-9)
    rng = np.random.default_rng(0)
    extra = rng.normal(size=len(sizes))
    np.testing.assert_allclose(bench.beyond_size(sizes ** 2 + extra, sizes), bench.beyond_size(extra, sizes), atol=1e-9)
    # bench/tune_unlearning.py's rule: within one standard error of the best, the fewest training MACs, then the best
    unlearning = load_bench("tune_unlearning")
    entries = [dict(name=n, train_macs=m, rho=rho, ci=[rho - 0.196, rho + 0.196])
               for n, m, rho in (("12", 1.0, 0.30), ("24", 2.0, 0.45), ("48", 4.0, 0.50), ("24b", 2.0, 0.48))]
    assert unlearning.chosen(entries)["name"] == "24b"  # 12 steps is 0.2 below the best: out; of 24's two, the better
    entries[0]["rho"] = 0.41
    assert unlearning.chosen(entries)["name"] == "12"  # now within 0.1 of 0.50: the cheapest


def test_the_models_target_fits_kernel_shap_on_whole_pairs_and_finds_where_the_curve_flattens(monkeypatch):
    """bench/tune_unlearning.py --what models: on a planted additive game KernelSHAP of any m models (whole pairs, a
    subset and its complement) predicts the validation subsets exactly, each draw a different set of pairs; and the
    flattening rule by hand: the smallest M within 0.02 of the largest M's LDS."""
    from conftest import load_bench
    from data import make_kernel_masks, make_masks
    bench = load_bench("tune_unlearning")
    rng = np.random.default_rng(0)
    phi = rng.normal(size=20)
    X = make_kernel_masks(20, 96, seed=3).astype(float)
    X_val = make_masks(20, 30, 0.5, seed=4).astype(float)
    game = lambda Z: 5.0 + Z @ phi  # noqa: E731  v(empty) = 5, v(all) = 5 + sum(phi)
    import fit_datamodel
    seen, attribute = [], fit_datamodel.attribute
    monkeypatch.setattr(fit_datamodel, "attribute", lambda Xd, *a, **k: seen.append(Xd) or attribute(Xd, *a, **k))
    preds = bench.kernel_shap_lds(X, game(X), X_val, (5.0, 5.0 + phi.sum()), 48, seed=1)  # more subsets than players
    assert preds.shape == (bench.MODELS_DRAWS, 30)
    np.testing.assert_allclose(preds, np.broadcast_to(game(X_val), preds.shape), atol=1e-8)
    for Xd in seen:  # whole pairs: every row's complement is in the draw, 24 pairs of the 48
        assert len(Xd) == 48 and all((1 - r).tolist() in Xd.tolist() for r in Xd)
    assert len({Xd.tobytes() for Xd in seen}) == len(seen)
    curve = [dict(what="models", steps=24, models=m, rho=r) for m, r in ((12, 0.2), (24, 0.5), (48, 0.61), (96, 0.6),
                                                                           (192, 0.62))]
    assert bench.flattened(curve + [dict(what="models", steps=48, models=12, rho=0.9)], 24)["models"] == 48
    curve[2]["rho"] = 0.59
    assert bench.flattened(curve, 24)["models"] == 96  # 0.59 is 0.03 below 0.62


def test_the_faults_bench_tables_every_method_and_each_runs_declared_tests(tmp_path):
    """bench/faults.py's tables from two planted finished runs: each method's LDS / AUC per fault (a held-out fault
    marked so), and each declared comparison's difference, interval, verdict and minimum detectable difference as the
    run's own results hold them; the runs take the default preset's rows and family."""
    from conftest import load_bench
    bench = load_bench("faults")
    columns = {}
    for fault, diff, verdict in (("blur", 0.05, "undecided"), ("salt", -0.20, "behind")):
        run = tmp_path / fault
        run.mkdir()
        results = dict(headline="fid", comparison=[
            dict(name="sparsified unlearning", lds={"fid": dict(lds=0.70)}, auc=1.0, compute=0.99, compute_all=5.6),
            dict(name="loo", lds={"fid": dict(lds=0.70 - diff)}, compute=20.0)],
            declared={"loo": dict(diff=diff, ci=[diff - 0.1, diff + 0.1], verdict=verdict, mdd=0.21)})
        (run / "results.json").write_text(json.dumps(results))
        columns[fault] = str(run)
    text = bench.table(columns)
    assert "| method | blur | salt (held out) |" in text and "| sparsified unlearning | 0.70 / 1.00 | 0.70 / 1.00 |" in text
    assert "| loo | 0.65 | 0.90 |" in text
    assert "| loo | +0.05 [-0.05, +0.15] undecided (0.21) | -0.20 [-0.30, -0.10] behind (0.21) |" in text
    import shlex
    env = dict(w.split("=", 1) for w in shlex.split(bench.default_env()))
    assert env["GUDA"] == "1" and "hybrid/loo" in env["COMPARE"] and "--ekfac-damping" in env["BASELINE_FLAGS"]
