"""compute_fid.py: the Frechet distance against closed forms, the behaviour ordering on digits, the
Inception plumbing, determinism and row checks."""

import numpy as np
import pytest
import torch

import data
import runfolder
from features import train_cnn
from metrics import feature_stats, frechet_distance, low_rank_factor, sqrt_psd
from conftest import run_cli, write_pool


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # same eigenvectors: S1 and S2 commute
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # with the reference's square root computed once (compute_fid.py does so for a pool of models)
    assert frechet_distance(mu1, s1, mu2, s2, root1=sqrt_psd(s1)) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_the_closed_form_in_two_dimensions():
    # for 2x2 matrices with positive eigenvalues, tr(A^1/2) = sqrt(tr A + 2 sqrt(det A))
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 1.5]])
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.0, 0.5])
    a = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(a) + 2 * np.sqrt(np.linalg.det(a)))
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_stays_finite_and_accurate_for_rank_deficient_covariances():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(10, 64))  # 10 samples in 64 dimensions: rank 9
    mu, sigma = feature_stats(feats)
    assert np.linalg.matrix_rank(sigma) == 9
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)
    # diagonal covariances with zeros: the closed form still holds
    a = np.r_[rng.uniform(0.5, 2, 8), np.zeros(8)]
    b = np.r_[np.zeros(4), rng.uniform(0.5, 2, 12)]
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + 4.0
    value = frechet_distance(np.zeros(16), np.diag(a), np.r_[2.0, np.zeros(15)], np.diag(b))
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-6)


def test_low_rank_factor_gives_the_dense_frechet_distance():
    """Fewer samples than dimensions: the n x n form through the covariance's factor equals the d x d one,
    and the closed form of diagonal covariances (the factor of diag(b) with b of rank 3: its rows)."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 48)) @ rng.normal(size=(48, 48)) / 7
    mu1, s1 = feature_stats(ref)
    feats = rng.normal(1.0, 2.0, size=(6, 48))
    mu2, s2 = feature_stats(feats)
    f = low_rank_factor(feats)
    assert f.shape == (6, 48) and np.allclose(f.T @ f, s2) and low_rank_factor(ref) is None
    dense = frechet_distance(mu1, s1, mu2, s2)  # its 42 null eigenvalues add ~sqrt(rounding noise) each
    assert frechet_distance(mu1, s1, mu2, s2, factor2=f) == pytest.approx(dense, rel=1e-7)
    a, b = rng.uniform(0.5, 2, 10), np.r_[rng.uniform(0.5, 2, 3), np.zeros(7)]
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    factor_b = np.diag(np.sqrt(b))[:3]  # F^T F = diag(b)
    assert frechet_distance(np.zeros(10), np.diag(a), np.zeros(10), np.diag(b), factor2=factor_b) == \
        pytest.approx(expected, rel=1e-9)


def test_fid_orders_real_data_trained_and_untrained_models(tmp_path):
    """FID(real half vs other half) < FID(trained model) < FID(untrained model), on digits (100 steps of
    training: FID 82 against the untrained 154 and the real 4.3)."""
    import compute_fid
    import ddpm
    from train_ddpm import new_state, state_to_checkpoint, train
    ds = data.load_dataset("digits")
    cnn, acc = train_cnn(ds, seed=0, epochs=10)
    assert acc > 0.9

    def fid_of(x, mu, sigma):
        with torch.no_grad():
            f = cnn(x)[0].numpy()
        return frechet_distance(*feature_stats(f), mu, sigma)

    x_all = data.to_model_space(ds.images)
    half = torch.from_numpy(data.make_masks(len(ds), 1, 0.5, seed=0)[0])
    with torch.no_grad():
        mu, sigma = feature_stats(cnn(x_all[half])[0].numpy())
    real = fid_of(x_all[~half], mu, sigma)
    schedule = ddpm.Schedule()
    noise = torch.randn((500, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    untrained = ddpm.UNet(**ddpm.ARCHS["digits-small"])
    state = new_state(ddpm.UNet(**ddpm.ARCHS["digits-small"]), lr=2e-3, seed=0, device="cpu")
    train(state, schedule, x_all, steps=100, batch_size=64, lr=2e-3, warmup=20, lr_schedule="cosine",
          ema_decay=0.99, progress=False)
    fids = []
    for model in (state["ema"], untrained):
        ckpt = state_to_checkpoint(dict(state, model=model, ema=model), schedule=schedule, args={})
        fids.append(fid_of(compute_fid.sample_model(ckpt, schedule, noise, 20, 500, "cpu"), mu, sigma))
    assert real < fids[0] < fids[1], (real, fids)


def test_the_data_floor_is_two_halves_of_the_reference_and_near_zero_for_one_distribution(tmp_path):
    """features.reference_floor on planted features (the identity as the feature network): the FID between the two
    seeded halves, computed here by hand, small for images of one distribution and large against a shifted one; the
    Inception Score of a classifier whose every image is one class out of 4 with certainty, balanced: 4."""
    import features
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 1, 4, 4), dtype=np.uint8)
    ds = data.Dataset(images, name="planted")
    labels = np.arange(400) % 4

    def extract(x):  # features: the pixels; logits: a certain class of each image (one batch of all of them)
        return x.flatten(1).numpy(), np.eye(4)[labels[:len(x)]] * 50.0
    batch = 400  # one batch: the logits above index images from 0
    floor, real_is = features.reference_floor(extract, ds, str(tmp_path), "planted", batch)
    feats = data.to_model_space(images).flatten(1).numpy()
    half = np.random.default_rng(1).permutation(400)
    expected = frechet_distance(*feature_stats(feats[half[:200]]), *feature_stats(feats[half[200:]]))
    assert floor == pytest.approx(expected, rel=1e-9) and real_is == pytest.approx(4.0, rel=1e-6)
    shifted = frechet_distance(*feature_stats(feats[half[:200]]), *feature_stats(feats[half[200:]] + 0.5))
    assert floor < 0.2 * shifted
    assert features.reference_floor(extract, ds, str(tmp_path), "planted", batch) == (floor, real_is)  # cached
    # at a model's sample size m: the first m images of half A against all of half B, by hand; a smaller m has more
    # bias (a larger FID of one distribution), which is why the model's FID is read against this one
    matched = features.matched_floor(extract, ds, str(tmp_path), "planted", batch, m=64)
    expected_m = frechet_distance(*feature_stats(feats[half[:200]][:64]), *feature_stats(feats[half[200:]]))
    assert int(matched["m"]) == 64 and int(matched["n_b"]) == 200
    assert float(matched["floor_matched"]) == pytest.approx(expected_m, rel=1e-9) and expected_m > floor
    np.testing.assert_allclose(matched["mu_b"], feats[half[200:]].mean(0), rtol=1e-5)  # (float32 features)
    assert int(features.matched_floor(extract, ds, str(tmp_path), "planted", batch, m=1000)["m"]) == 200  # <= a half


def test_the_feature_network_is_seeded():
    """The FID network repeats to the bit for a seed (so a cache may hold the session's copy) and differs
    for another; two epochs stand for thirty."""
    ds = data.load_dataset("digits")
    nets = [train_cnn(ds, seed=seed, epochs=2)[0].state_dict() for seed in (0, 0, 1)]
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    assert not all(torch.equal(nets[0][k], nets[2][k]) for k in nets[0])


def test_inception_path_with_random_weights_and_the_missing_weights_error(tiny_run, tmp_path, monkeypatch):
    r = run_cli("compute_fid", "--models", str(tiny_run["full"]), "--out", str(tmp_path / "b" / "full.npz"),
                   "--features", "inception", "--inception-weights", "random", "--n-samples", "6", "--n-ref", "8",
                   "--ddim-steps", "2", "--cache", str(tmp_path))
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "b" / "full.npz") as f:
        assert np.isfinite(f["fid"]).all() and f["fid"][0] > 0 and "class_hist" not in f.files
    with np.load(runfolder.reference_cache(tmp_path, "ref", "inception", "digits", 8)) as f:
        assert f["mu"].shape == (2048,)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    r = run_cli("compute_fid", "--models", str(tiny_run["full"]), "--out", str(tmp_path / "c.npz"),
                "--features", "inception", "--n-samples", "4")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "Inception weights not found" in r.stderr and "pt_inception-2015-12-05" in r.stderr


def test_rerun_gives_identical_numbers_and_mismatched_rows_are_refused(tiny_run, tmp_path, fid_cnn):
    models = tmp_path / "unl"
    r = run_cli("unlearn", "--ckpt", str(tiny_run["pruned"]), "--masks", str(tiny_run["masks"]),
                   "--indices", "0:3", "--out", str(models), "--steps", "3", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    args = ["compute_fid", "--models", str(models), "--masks", str(tiny_run["masks"]), "--n-samples", "50",
            "--n-ref", "300", "--loss-draws", "1", "--ddim-steps", "4", "--cache", str(tmp_path)]  # (300: the seconds)
    for cache in ("c1", "c2", "c3"):  # the session's feature network; each cache makes its own statistics
        fid_cnn(tmp_path / cache)
    outs = []
    for name, cache in (("a", "c1"), ("b", "c2"), ("a2", "c1")):  # a2 reuses a's per-model statistics
        r = run_cli(*args[:-1], str(tmp_path / cache), "--out", str(tmp_path / f"{name}.npz"))
        assert r.returncode == 0, r.stderr
        outs.append(dict(np.load(tmp_path / f"{name}.npz")))
    a, b, a2 = outs
    # two caches computed from scratch agree: the numbers do not depend on the cache, for every behaviour
    import metrics
    keys = [("class_share" if k == "class" else k) for k in metrics.BEHAVIORS]
    for k in keys + ["class_hist"]:
        assert np.isfinite(a[k]).all() and np.array_equal(a[k], b[k]), k
    assert np.allclose(a["class_share"].sum(1), 1.0) and ((a["precision"] >= 0) & (a["coverage"] <= 1)).all()
    assert (a["loss_seconds"] > 0).all() and (a["behavior_macs"] > 0).all()
    assert list(a["index"]) == [0, 1, 2] and a["class_hist"].sum(1).tolist() == [50] * 3
    # the cached run did not sample again: its sampling times are the first run's, to the bit
    assert np.array_equal(a2["fid"], a["fid"]) and np.array_equal(a2["seconds"], a["seconds"])
    assert not np.array_equal(b["seconds"], a["seconds"])
    samples = lambda cache: [p for p in runfolder.stats(tmp_path / cache).iterdir() if "-loss-" not in p.name]  # noqa: E731
    assert len(samples("c1")) == 3
    # --stats-only (the pipeline's second lane): fills a cache, last model first, and writes no behaviours
    r = run_cli(*args[:-1], str(tmp_path / "c3"), "--out", str(tmp_path / "s.npz"), "--stats-only")
    assert r.returncode == 0 and not (tmp_path / "s.npz").exists(), r.stderr
    assert len(samples("c3")) == 3
    r = run_cli(*args[:-1], str(tmp_path / "c3"), "--out", str(tmp_path / "s.npz"))
    assert r.returncode == 0 and np.array_equal(np.load(tmp_path / "s.npz")["fid"], a["fid"])
    # FID2 of the folder against itself: every model against its own cached statistics
    r = run_cli(*args[:-1], str(tmp_path / "c1"), "--ref-models", str(models), "--out", str(tmp_path / "self.npz"))
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "self.npz")["fid"]).max() < 1e-5 * a["fid"].min()
    # another mask file: every consumer refuses
    other = tmp_path / "other.npy"
    np.save(other, data.make_masks(1797, 4, 0.5, seed=99))
    r = run_cli(*args[:4], str(other), *args[5:], "--out", str(tmp_path / "c.npz"))
    assert r.returncode == 2 and "sha256" in r.stderr
    assert not [f for f in tmp_path.iterdir() if runfolder.is_reference_cache(f.name) or f == runfolder.stats(tmp_path)]
    r = run_cli("fit_datamodel", "--masks", str(other), "--behaviors", str(tmp_path / "a.npz"),
                   "--out", str(tmp_path / "att.npz"))
    assert r.returncode == 2 and "does not match" in r.stderr and not (tmp_path / "att.npz").exists()
    r = run_cli("fit_datamodel", "--masks", str(tiny_run["masks"]), "--behaviors", str(tmp_path / "a.npz"),
                   "--out", str(tmp_path / "att.npz"), "--method", "banzhaf")
    assert r.returncode == 0, r.stderr
    r = run_cli("eval_lds", "--attributions", str(tmp_path / "att.npz"), "--masks", str(other),
                   "--behaviors", str(tmp_path / "a.npz"))
    assert r.returncode == 2 and "does not match" in r.stderr


def test_ref_data_changes_the_reference_statistics_and_nothing_else(tiny_run, tmp_path, fid_cnn):
    """FID against a curated reference (here: the digits 0-4) instead of the training data: the FID
    changes; the samples (their cached statistics and sampling time), class shares and rows do not;
    the behaviours file names the reference by its sha256, and a run mixing references is refused."""
    ds = data.load_dataset("digits")
    np.savez(tmp_path / "curated.npz", images=ds.images[ds.labels < 5].transpose(0, 2, 3, 1), labels=ds.labels[ds.labels < 5])
    args = ["compute_fid", "--models", tiny_run["full"], "--n-samples", "60", "--ddim-steps", "3", "--loss-draws", "1",
            "--cache", fid_cnn(tmp_path)]
    r = run_cli(*args, "--out", tmp_path / "b" / "train.npz")
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, "--ref-data", f"npz:{tmp_path / 'curated.npz'}", "--out", tmp_path / "b" / "curated.npz")
    assert r.returncode == 0, r.stderr
    a, b = (dict(np.load(tmp_path / "b" / f"{name}.npz")) for name in ("train", "curated"))
    assert abs(a["fid"][0] - b["fid"][0]) > 1.0
    for key in ("class_hist", "seconds", "index", "mask_sha256", "train_seconds"):
        assert np.array_equal(a[key], b[key]), key
    assert str(a["ref_data"]) == "digits" and str(b["ref_data"]).startswith("npz:")
    assert str(b["ref_sha256"]) == data.images_sha256(ds.images[ds.labels < 5]) != str(a["ref_sha256"])
    import eval_lds
    with pytest.raises(data.DataError, match="different FID reference sets"):
        eval_lds.check_one_reference([a, b])
    eval_lds.check_one_reference([a, a])


def test_an_npz_corrupted_array_names_the_known_bad_images(tmp_path):
    """Known-bad images of an npz dataset reach corrupted.npy and the report's detection AUC."""
    ds = data.load_dataset("digits")
    np.savez(tmp_path / "d.npz", images=ds.images[:200], labels=ds.labels[:200], corrupted=np.array([7, 3, 150]))
    spec = f"npz:{tmp_path / 'd.npz'}"
    assert data.load_dataset(spec).corrupted.tolist() == [3, 7, 150]
    # with --corrupt on top, both sets are scored
    both = data.load_dataset(spec, corrupt=0.05, corrupt_seed=0).corrupted
    assert {3, 7, 150} <= set(both.tolist()) and len(both) >= 10
    run = tmp_path / "run"
    r = run_cli("make_subsets", "--data", spec, "--count", "40", "--seed", "1", "--out", runfolder.masks(run, "unlearn"),
                "--corrupted-out", runfolder.corrupted(run))
    assert r.returncode == 0, r.stderr
    assert np.load(runfolder.corrupted(run)).tolist() == [3, 7, 150]
    # a run whose planted FID rises with those three images: the report's AUC scores exactly them
    rng = np.random.default_rng(0)
    effect = np.zeros(200)
    effect[[3, 7, 150]] = 4.0
    pools = {"unlearn": np.load(runfolder.masks(run, "unlearn")), "lds": data.make_masks(200, 20, 0.5, seed=2)}
    pools["retrain"] = pools["unlearn"][:6]
    for name, masks in pools.items():
        write_pool(run, name, masks, 30 + masks @ effect + rng.normal(0, 0.3, len(masks)),
                   1.0 if name == "unlearn" else 10.0)
    r = run_cli("eval_lds", "--run", run, "--data", spec, "--draws", "10")
    assert r.returncode == 0, r.stderr
    import json
    auc = json.loads((runfolder.results(run)).read_text())["auc"]
    assert auc["unlearn_all_banzhaf"] > 0.9 and "3 of 200 training images" in (runfolder.report(run)).read_text()


def test_loss_behaviours_draw_no_samples_and_equal_a_direct_computation(tiny_run, tmp_path, monkeypatch):
    """--behaviors loss,elbo: no sample is drawn and no feature network trained; the values are ddpm's
    denoising errors of the EMA weights on the clean digits with the shared draws (seed, draws), averaged per
    pixel, and the ELBO the same errors weighted by T w_t; a second computation from scratch repeats them."""
    import compute_fid
    import ddpm

    def no_sampling(*a, **k):
        raise AssertionError("sampled")
    monkeypatch.setattr(compute_fid, "sample_models", no_sampling)
    monkeypatch.setattr(compute_fid, "cnn_extractor", no_sampling)
    args = ["compute_fid", "--models", tiny_run["full"], "--behaviors", "loss,elbo", "--loss-draws", "2",
            "--loss-seed", "5"]
    for cache in ("c1", "c2"):
        r = run_cli(*args, "--cache", tmp_path / cache, "--out", tmp_path / f"{cache}.npz")
        assert r.returncode == 0, r.stderr
    a, b = (dict(np.load(tmp_path / f"{c}.npz")) for c in ("c1", "c2"))
    assert a["loss"] == b["loss"] and a["elbo"] == b["elbo"] and a["seconds"][0] == 0 and a["loss_seconds"][0] > 0
    assert "fid" not in a and not list(tmp_path.glob("c1/fid_*"))
    ckpt = torch.load(tiny_run["full"], weights_only=True)
    model, schedule = ddpm.build_model(ckpt, "ema"), ddpm.Schedule(**ckpt["schedule"])
    x0 = data.to_model_space(data.load_dataset("digits").images)
    t, errors = ddpm.denoising_errors(model, schedule, x0, seed=5, draws=2)
    assert a["loss"][0] == pytest.approx(float(errors.mean()) / 64, rel=1e-12)
    assert a["elbo"][0] == pytest.approx(float((1000 * ddpm.elbo_weights(schedule)[t] * errors).mean()) / 64, rel=1e-12)
