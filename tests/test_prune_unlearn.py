"""prune.py, make_subsets.py and unlearn.py: shapes, masks, data provenance, determinism."""
import os

import numpy as np
import torch

import data
import runfolder
import ddpm
import prune
from conftest import TINY, run_cli


def test_structured_pruning_of_the_cifar10_model_cuts_params_and_macs_by_40_percent():
    model = ddpm.UNet(**ddpm.ARCHS["cifar10"]).eval()
    macs0, params0 = prune.count_macs(model)
    prune.prune_structured(model, 0.3)
    macs1, params1 = prune.count_macs(model)
    assert params1 <= 0.6 * params0 and macs1 <= 0.6 * macs0
    assert abs(params0 - 35.7e6) < 0.1e6 and abs(macs0 - 6.07e9) < 0.05e9
    # every GroupNorm still divides its channels into equal groups
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0


def test_structured_pruned_checkpoint_rebuilds_the_same_model(tmp_path):
    from train_ddpm import new_state, state_to_checkpoint
    model = ddpm.UNet(**TINY).eval()  # has attention, dropout, skip concatenations
    prune.prune_structured(model, 0.3)
    assert ddpm.count_params(model) < ddpm.count_params(ddpm.UNet(**TINY))
    state = new_state(model, lr=1e-3, seed=0, device="cpu")
    ddpm.save_checkpoint(tmp_path / "p.pt", state_to_checkpoint(state, schedule=ddpm.Schedule(), args={}))
    rebuilt = ddpm.build_model(torch.load(tmp_path / "p.pt", weights_only=True), "model").eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 400, 999])
    torch.testing.assert_close(rebuilt(x, t), model(x, t), rtol=0, atol=0)
    assert ddpm.layer_widths(rebuilt) == ddpm.layer_widths(model)


def test_unstructured_fraction_is_exactly_the_ratio_after_pruning_and_after_unlearning(tiny_run, tmp_path):
    pruned = tmp_path / "u.pt"
    r = run_cli("prune", "--ckpt", str(tiny_run["full"]), "--out", str(pruned), "--mode", "unstructured",
                   "--ratio", "0.3", "--steps", "3", "--batch-size", "8", "--grid", "0")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(pruned, weights_only=True)
    masks = ckpt["masks"]
    total = sum(m.numel() for m in masks.values())
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == round(0.3 * total)
    r = run_cli("unlearn", "--ckpt", str(pruned), "--masks", str(tiny_run["masks"]), "--indices", "0:1",
                   "--out", str(tmp_path / "unl"), "--steps", "5", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    for path in (pruned, tmp_path / "unl" / "00000.pt"):
        c = torch.load(path, weights_only=True)
        for which in ("model", "ema"):
            if c[which] is None:  # a finished unlearned row keeps its EMA weights only
                continue
            zeros = sum(int((c[which][n][~m] == 0).sum()) for n, m in masks.items())
            assert zeros == removed, (path, which)
    # the unlearning really changed the surviving weights
    c = torch.load(tmp_path / "unl" / "00000.pt", weights_only=True)
    assert any(not torch.equal(c["ema"][n], ckpt["ema"][n]) for n in masks)


def planted_images(tmp_path, n=40):
    """n distinct constant images (image k has every pixel = 5 k, so each minibatch image names its
    index) as an npz dataset, and an untrained, structurally pruned TINY checkpoint to unlearn from; returns the --data spec."""
    images = (np.arange(n, dtype=np.uint8) * 5)[:, None, None, None].repeat(8, 2).repeat(8, 3)
    np.savez(tmp_path / "d.npz", images=images)
    from train_ddpm import new_state, state_to_checkpoint
    model = prune.prune_structured(ddpm.UNet(**TINY), 0.3)  # unlearning starts from a pruned model
    ddpm.save_checkpoint(tmp_path / "p.pt", state_to_checkpoint(new_state(model, lr=1e-3, seed=0, device="cpu"),
                                                                schedule=ddpm.Schedule(), args={}))
    return f"npz:{tmp_path / 'd.npz'}"


def spy_on_minibatches(monkeypatch):
    """The indices of the planted images in every minibatch the DDPM loss sees (a list, filled as it trains)."""
    import train_ddpm
    seen, original = [], train_ddpm.ddpm_loss

    def spy(model, schedule, x0, generator=None):
        seen.append(data.to_uint8(x0)[:, 0, 0, 0] // 5)
        return original(model, schedule, x0, generator)

    monkeypatch.setattr(train_ddpm, "ddpm_loss", spy)
    return seen


def test_unlearning_row_i_trains_on_images_of_s_i_only(tmp_path, monkeypatch):
    n = 40
    spec = planted_images(tmp_path, n)
    masks = data.make_masks(n, 2, 0.5, seed=0)
    np.save(tmp_path / "m.npy", masks)
    import unlearn
    seen = spy_on_minibatches(monkeypatch)
    for i in range(2):
        seen.clear()
        unlearn.main(unlearn.parse_args(["--ckpt", str(tmp_path / "p.pt"), "--data", spec, "--masks",
                                         str(tmp_path / "m.npy"), "--indices", f"{i}:{i + 1}", "--out",
                                         str(tmp_path / "u"), "--steps", "20", "--batch-size", "8"]))
        used = set(np.concatenate(seen).tolist())
        assert len(seen) == 20 and used <= set(np.flatnonzero(masks[i]).tolist())
        assert len(used) > 10  # and it does draw across the subset


def test_rerun_skips_finished_rows_and_a_changed_mask_row_is_refused(tiny_run, tmp_path):
    out = tmp_path / "unl"
    args = ["unlearn", "--ckpt", str(tiny_run["pruned"]), "--masks", str(tiny_run["masks"]), "--out", str(out),
            "--steps", "3", "--batch-size", "8"]
    r = run_cli(*args, "--indices", "0:2")
    assert r.returncode == 0 and "wrote 2 unlearned" in r.stdout, r.stderr
    stamp = os.stat(out / "00000.pt").st_mtime_ns
    r = run_cli(*args, "--indices", "0:3")
    assert r.returncode == 0 and "wrote 1 unlearned" in r.stdout and "2 already done" in r.stdout
    assert os.stat(out / "00000.pt").st_mtime_ns == stamp
    ckpt = torch.load(out / "00002.pt", weights_only=True)
    assert ckpt["subset"]["index"] == 2 and ckpt["seconds"] > 0
    assert ckpt["subset"]["sha256"] == data.row_sha256(np.load(tiny_run["masks"])[2])
    # the mask file changes under the finished models: refused, nothing overwritten
    changed = np.load(tiny_run["masks"])
    changed[1] = ~changed[1]
    changed_path = tmp_path / "unlearn.npy"
    np.save(changed_path, changed)
    before = (out / "00001.pt").read_bytes()
    r = run_cli(*args[:4], str(changed_path), *args[5:], "--indices", "0:3")
    assert r.returncode == 2 and "another subset" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (out / "00001.pt").read_bytes() == before
    # another method (or setting) into the same folder would make a pool of two methods: refused, nothing written
    r = run_cli(*args, "--indices", "0:4", "--method", "neggrad")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "method gd (now neggrad)" in r.stderr, r.stderr
    assert (out / "00001.pt").read_bytes() == before and not (out / "00003.pt").exists()
    # a row written before the methods existed (its arguments record no method and no batches) counts as gd's
    old = torch.load(out / "00000.pt", weights_only=True)
    for key in ("method", "batches"):
        del old["args"][key]
    torch.save(old, out / "00000.pt")
    r = run_cli(*args, "--indices", "0:1")
    assert r.returncode == 0 and "(1 already done" in r.stdout, r.stdout + r.stderr


def test_two_rows_with_identical_masks_give_identical_checkpoints(tiny_run, tmp_path):
    masks = np.load(tiny_run["masks"])[[1, 1]]
    np.save(tmp_path / "same.npy", masks)
    r = run_cli("unlearn", "--ckpt", str(tiny_run["pruned"]), "--masks", str(tmp_path / "same.npy"),
                   "--out", str(tmp_path / "u"), "--steps", "6", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    a, b = (torch.load(tmp_path / "u" / f"0000{i}.pt", weights_only=True) for i in (0, 1))
    assert a["model"] is None and b["model"] is None  # finished rows keep their EMA weights (what is sampled)
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k])
    # while another row gives other weights
    r = run_cli("unlearn", "--ckpt", str(tiny_run["pruned"]), "--masks", str(tiny_run["masks"]), "--indices",
                   "0:1", "--out", str(tmp_path / "v"), "--steps", "6", "--batch-size", "8")
    c = torch.load(tmp_path / "v" / "00000.pt", weights_only=True)
    assert any(not torch.equal(a["ema"][k], c["ema"][k]) for k in a["ema"])


def test_make_subsets_first_of_copies_rows(tiny_run, tmp_path):
    r = run_cli("make_subsets", "--count", "2", "--first-of", str(tiny_run["masks"]), "--out",
                   str(tmp_path / "r.npy"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "r.npy"), np.load(tiny_run["masks"])[:2])


def test_contributor_masks_expand_to_exactly_the_images_of_the_chosen_contributors(tmp_path, monkeypatch):
    """make_subsets.py --groups random:8 over 40 planted images (planted_images): each mask
    row chooses contributors, and unlearning row i draws only images of S_i's contributors."""
    n = 40
    spec = planted_images(tmp_path, n)
    r = run_cli("make_subsets", "--data", spec, "--groups", "random:8", "--count", "2", "--seed", "1",
                "--out", tmp_path / "m" / "unlearn.npy")
    assert r.returncode == 0, r.stderr
    groups, masks = np.load(runfolder.groups_beside(tmp_path / "m" / "unlearn.npy")), np.load(tmp_path / "m" / "unlearn.npy")
    assert masks.shape == (2, 8) and (masks.sum(1) == 4).all() and np.bincount(groups).tolist() == [5] * 8
    for row in masks:  # by hand: the images whose contributor the row chose
        assert set(np.flatnonzero(data.images_of(row, groups))) == {k for k in range(n) if row[groups[k]]}
    # a second mask file of the run (another subset seed) shares the contributors
    r = run_cli("make_subsets", "--data", spec, "--groups", "random:8", "--count", "3", "--seed", "2",
                "--out", tmp_path / "m" / "lds.npy")
    assert r.returncode == 0 and np.array_equal(np.load(runfolder.groups_beside(tmp_path / "m" / "unlearn.npy")), groups), r.stderr
    seen = spy_on_minibatches(monkeypatch)
    for i in range(2):
        seen.clear()
        r = run_cli("unlearn", "--ckpt", tmp_path / "p.pt", "--data", spec, "--masks", tmp_path / "m" / "unlearn.npy",
                    "--indices", f"{i}:{i + 1}", "--out", tmp_path / "u", "--steps", "20", "--batch-size", "8")
        assert r.returncode == 0, r.stderr
        used = set(np.concatenate(seen).tolist())
        chosen = set(np.flatnonzero(data.images_of(masks[i], groups)).tolist())
        assert used <= chosen and len(used) > 10
    assert torch.load(tmp_path / "u" / "00000.pt", weights_only=True)["subset"]["sha256"] == data.row_sha256(masks[0])
    # retraining from scratch expands the row the same way: 4 of 8 contributors of 5 images each
    r = run_cli("train_ddpm", "--data", spec, "--arch", "digits-small", "--masks", tmp_path / "m" / "unlearn.npy",
                "--index", "0", "--steps", "1", "--batch-size", "4", "--grid", "0", "--out", tmp_path / "r.pt")
    assert r.returncode == 0 and "1 steps on 20 images" in r.stdout, r.stdout + r.stderr


# ----------------------------------------------------------------------------------------------
# Unlearning methods (unlearn.METHODS)

def test_neggrad_with_ascent_weight_0_is_gd_bit_for_bit(tiny_run, tmp_path):
    """neggrad's descent term draws from the row's generator exactly as gd does, and its ascent term from a
    generator of its own: at weight 0 the two methods write the same weights to the last bit (at weight 0.5 not)."""
    common = ["--ckpt", tiny_run["pruned"], "--masks", tiny_run["masks"], "--indices", "0:1", "--steps", "6",
              "--batch-size", "8", "--keep-train-state"]
    for name, extra in (("gd", ["--method", "gd"]), ("ng0", ["--method", "neggrad", "--ascent-weight", "0"]),
                        ("ng", ["--method", "neggrad", "--ascent-weight", "0.5"])):
        r = run_cli("unlearn", *common, *extra, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
    gd, ng0, ng = (torch.load(tmp_path / n / "00000.pt", weights_only=True) for n in ("gd", "ng0", "ng"))
    for which in ("model", "ema"):  # --keep-train-state: the trained weights too
        assert all(torch.equal(gd[which][k], ng0[which][k]) for k in gd[which])
    assert not all(torch.equal(gd["model"][k], ng["model"][k]) for k in gd["model"])
    assert ng["args"]["method"] == "neggrad" and ng["train_macs"] == 2 * gd["train_macs"] > 0  # two minibatches a step


def test_ga_raises_the_loss_of_the_removed_images_and_barely_the_kept_ones():
    """A model trained on digits and on noise images; gradient ascent on the noise images (removed) raises their
    fixed-noise DDPM loss by more than 10%, while the loss of the digits (kept) rises by less than half as much."""
    from argparse import Namespace
    import unlearn
    from train_ddpm import new_state, state_to_checkpoint, train
    ds = data.load_dataset("digits", corrupt=0.1)
    x0 = data.to_model_space(ds.images)
    bad = np.zeros(len(ds), dtype=bool)
    bad[ds.corrupted] = True
    schedule = ddpm.Schedule()
    torch.manual_seed(0)
    state = new_state(ddpm.UNet(**ddpm.ARCHS["digits-small"]), lr=2e-3, seed=0, device="cpu")
    train(state, schedule, x0, steps=80, batch_size=32, lr=2e-3, warmup=10, lr_schedule="cosine", ema_decay=0.9,
          progress=False)
    start = state_to_checkpoint(state, schedule=schedule, args={})
    args = Namespace(method="ga", steps=10, batch_size=32, lr=1e-4, warmup=0, ema_decay=0.0, ascent_weight=0.5,
                     rank=4, seed=0, batches="random", precision="fp32", compile=False, channels_last=False)
    after = unlearn.unlearn_row(start, schedule, x0[~bad], x0[bad], args, "cpu")["ema"]
    before = ddpm.build_model(start, "ema")
    kept = [ddpm.fixed_noise_loss(m, schedule, x0[~bad], repeats=2) for m in (before, after)]
    removed = [ddpm.fixed_noise_loss(m, schedule, x0[bad], repeats=8) for m in (before, after)]
    assert removed[1] > 1.1 * removed[0], removed
    assert abs(kept[1] - kept[0]) < (removed[1] - removed[0]) / 2, (kept, removed)


def test_gd_full_starts_from_the_unpruned_weights(tiny_run, tmp_path):
    """With a vanishing learning rate, gd-full's model is the full model's EMA weights (its shapes unpruned) and
    records the full model as its parent; every other method refuses the unpruned model, gd-full a pruned one."""
    r = run_cli("unlearn", "--ckpt", tiny_run["full"], "--masks", tiny_run["masks"], "--indices", "0:1", "--steps", "2",
                "--batch-size", "8", "--lr", "1e-30", "--method", "gd-full", "--out", tmp_path / "u")
    assert r.returncode == 0, r.stderr
    full, unl = (torch.load(p, weights_only=True) for p in (tiny_run["full"], tmp_path / "u" / "00000.pt"))
    assert unl["parent"] == ddpm.file_sha256(tiny_run["full"]) and not unl["config"].get("widths")
    for k, v in full["ema"].items():
        torch.testing.assert_close(unl["ema"][k], v, rtol=0, atol=1e-6)


def test_lora_changes_each_weight_by_a_matrix_of_rank_at_most_r(tiny_run, tmp_path):
    """The adapters W + B A are folded into plain weights: the checkpoint is an ordinary UNet whose every weight
    moved by a matrix of rank <= r (the (r+1)-th singular value at float32 rounding), and moved at all."""
    r = run_cli("unlearn", "--ckpt", tiny_run["pruned"], "--masks", tiny_run["masks"], "--indices", "0:1", "--steps",
                "5", "--batch-size", "8", "--lr", "1e-3", "--method", "lora", "--rank", "2", "--out", tmp_path / "u")
    assert r.returncode == 0, r.stderr
    start, unl = (torch.load(p, weights_only=True) for p in (tiny_run["pruned"], tmp_path / "u" / "00000.pt"))
    ddpm.build_model(unl, "ema")  # loads as it is
    moved = 0
    for k, w0 in start["ema"].items():  # the EMA of the adapters, merged: B_ema A_ema has rank <= r too
        if k.endswith("bias") or w0.dim() < 2:
            assert torch.equal(unl["ema"][k], w0), k  # biases and norms are not adapted
            continue
        s = torch.linalg.svdvals((unl["ema"][k].double() - w0.double()).flatten(1))
        if len(s) > 2:
            assert s[2] <= 1e-4 * s[0], (k, s[:4])
        moved += int(s[0] > 1e-6)
    assert moved > 5


def test_forward_macs_agree_with_torch_pruning_s_counter():
    """Budgets count compute in ddpm.forward_macs's units (every convolution and linear layer, and attention's two
    products); torch-pruning's counter (which skips attention's products and counts normalisations) agrees within
    5% on the full and pruned models of both sizes of architecture."""
    for arch in ("digits-small", "cifar10"):
        for pruned in (False, True):
            model = ddpm.UNet(**ddpm.ARCHS[arch]).eval()
            if pruned:
                prune.prune_structured(model, 0.3)
            ratio = ddpm.forward_macs(model) / prune.count_macs(model)[0]
            assert 0.95 < ratio < 1.05, (arch, pruned, ratio)


def guda_terms_setup():
    torch.manual_seed(0)
    model, schedule = ddpm.UNet(**TINY).eval(), ddpm.Schedule()
    kept, removed = torch.rand(12, 1, 8, 8) * 2 - 1, torch.rand(5, 1, 8, 8) * 2 - 1
    return model, schedule, kept, removed


def test_guda_forget_term_equals_their_formula_written_as_a_loop():
    """redirect_loss against sony/guda's ReTrack forget loss written out one removed image and one neighbour at a
    time: the k nearest kept images by sorting distances, each target eps + delta_r with delta_r = (gamma / sigma)
    (x0 - x_r) clipped to norm sqrt(2 kl_cap), weighted by normalised exp(-||x_t - gamma x_r||^2 / (2 sigma^2))."""
    import math
    import unlearn
    model, schedule, kept, removed = guda_terms_setup()
    with torch.no_grad():
        got = unlearn.redirect_loss(kept, 3, 0.5)(model, schedule, removed, torch.Generator().manual_seed(4), None)
    g = torch.Generator().manual_seed(4)  # the draws of ddpm_loss
    t = torch.randint(0, schedule.T, (5,), generator=g)
    eps = torch.randn(removed.shape, generator=g)
    want = 0.0
    for i in range(5):
        a = float(schedule.alphas_cumprod[t[i]])
        gamma, sigma = math.sqrt(a), math.sqrt(1 - a)
        xt = gamma * removed[i] + sigma * eps[i]
        near = np.argsort([float(((removed[i] - k) ** 2).sum()) for k in kept])[:3]
        w = np.array([math.exp(-float(((xt - gamma * kept[r]) ** 2).sum()) / (2 * sigma ** 2)) for r in near])
        w = w / w.sum()
        target = 0
        for wr, r in zip(w, near):
            delta = gamma / sigma * (removed[i] - kept[r])
            delta = delta * min(1.0, math.sqrt(2 * 0.5) / float(delta.norm()))
            target = target + float(wr) * (eps[i] + delta)
        with torch.no_grad():
            want += float(((model(xt[None], t[i:i + 1])[0] - target) ** 2).mean()) / 5
    assert abs(float(got) - want) < 1e-5 * want


def test_guda_terms_reduce_to_the_ddpm_loss_where_nothing_is_redirected_or_left_out():
    """A removed image that is itself a kept image (its nearest, k = 1) has delta = 0: the forget term is then the
    DDPM loss of the same draws; kept_loss over all images with every one kept is the DDPM loss too, and with some
    left out the mean of the others' per-image errors (same draws)."""
    import unlearn
    model, schedule, kept, _ = guda_terms_setup()
    gen = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    with torch.no_grad():
        ddpm_loss = float(ddpm.ddpm_loss(model, schedule, kept[:4], gen()))
        forget = float(unlearn.redirect_loss(kept, 1, 1.0)(model, schedule, kept[:4], gen(), None))
        index = torch.tensor([0, 3, 5, 7])
        keep = torch.ones(12, dtype=torch.bool)
        every = float(unlearn.kept_loss(keep)(model, schedule, kept[index], gen(), index))
        every_ddpm = float(ddpm.ddpm_loss(model, schedule, kept[index], gen()))
        keep[[3, 7]] = False
        some = float(unlearn.kept_loss(keep)(model, schedule, kept[index], gen(), index))
        g = gen()
        t = torch.randint(0, schedule.T, (4,), generator=g)
        eps = torch.randn((4, 1, 8, 8), generator=g)
        errors = ((model(ddpm.q_sample(schedule, kept[index], t, eps), t) - eps) ** 2).flatten(1).mean(1)
    assert abs(forget - ddpm_loss) < 1e-6 * ddpm_loss and abs(every - every_ddpm) < 1e-6 * every_ddpm
    assert abs(some - float(errors[[0, 2]].mean())) < 1e-6 * some


def test_unlearning_with_plain_arguments_is_the_scripts_row(tiny_run, tmp_path):
    """unlearn.unlearn (the paper's step as a function: a checkpoint, the kept and the removed images, settings by
    name) gives the model unlearn.py writes for the same row, weight for weight; a misspelt setting is refused."""
    import pytest
    import unlearn
    r = run_cli("unlearn", "--ckpt", tiny_run["pruned"], "--masks", tiny_run["masks"], "--indices", "1:2",
                "--out", tmp_path / "cli", "--steps", "3", "--batch-size", "16", "--method", "neggrad")
    assert r.returncode == 0, r.stderr
    row = np.load(tiny_run["masks"])[1]
    x0 = data.to_model_space(data.load_dataset("digits").images)
    mine = unlearn.unlearn(ddpm.load_checkpoint(tiny_run["pruned"]), x0[row], x0[~row], method="neggrad", steps=3,
                           batch_size=16)
    script = ddpm.load_checkpoint(tmp_path / "cli" / "00001.pt")
    assert all(torch.equal(mine["ema"][k], script["ema"][k]) for k in script["ema"])
    with pytest.raises(TypeError, match="unknown setting stpes"):
        unlearn.unlearn(ddpm.load_checkpoint(tiny_run["pruned"]), x0[row], x0[~row], stpes=3)
