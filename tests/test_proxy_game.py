"""SurrogateSHAP's proxy game (proxy_game.py) and its baseline row: the ids of a coalition by hand, the guided sampler
against one sample at a time, the conditional model's loss against its definition, and the whole game on a tiny run
against SurrogateSHAP's estimator applied directly."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import ddpm
import proxy_game
import runfolder
from conftest import TINY, run_cli, tiny_contributor_run


def test_a_coalitions_ids_follow_its_contributors_sizes():
    sizes = np.array([10, 30, 60, 20])
    # 10 : 60 of 7 samples: 1 and 6
    assert proxy_game.coalition_ids([2, 0], sizes, 7).tolist() == [0] + [2] * 6
    # 30 : 20 of 4 samples: 2.4 and 1.6, one left over for the larger remainder (contributor 3's .6)
    assert proxy_game.coalition_ids([1, 3], sizes, 4).tolist() == [1, 1, 3, 3]
    # equal remainders: the lower id first
    assert proxy_game.coalition_ids([0, 3], np.array([5, 0, 0, 5]), 3).tolist() == [0, 0, 3]
    assert len(proxy_game.coalition_ids(np.arange(4), sizes, 1000)) == 1000


def conditional():
    torch.manual_seed(0)
    return ddpm.UNet(**TINY, num_labels=3).eval(), ddpm.Schedule()


def test_the_conditional_model_without_an_id_is_its_no_id_label_and_rebuilds_from_its_config():
    model, _ = conditional()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 50, 400, 999])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), model(x, t, torch.full((4,), 3)))
        assert not torch.allclose(model(x, t, torch.zeros(4, dtype=torch.long)), model(x, t))
    again = ddpm.UNet(**model.config)
    again.load_state_dict(model.state_dict())
    assert model.config["num_labels"] == 3 and "num_labels" not in ddpm.UNet(**TINY).config  # old configs unchanged


def test_guided_sampling_gives_each_sample_its_own_id():
    """sample_coalition (batched, two ids mixed) against DDIM one sample at a time with its id: guidance w mixes the
    conditional and unconditional predictions as eps_u + w (eps_c - eps_u); w = 1 is the conditional model alone."""
    model, schedule = conditional()
    noise = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = np.array([0, 0, 2, 2, 2])
    for w in (1.0, 1.4):
        got = proxy_game.sample_coalition(model, schedule, noise, ids, w, 4, 2, "cpu")
        for i in range(5):
            y = torch.tensor([int(ids[i])])

            def eps_theta(x, t):
                return model(x, t) + w * (model(x, t, y) - model(x, t))
            with torch.no_grad():
                want = ddpm.ddim_sample(eps_theta, schedule, noise=noise[i:i + 1], steps=4).clamp(-1, 1)
            torch.testing.assert_close(got[i:i + 1], want, rtol=1e-4, atol=1e-5)


def test_the_conditional_models_loss_drops_ids_as_asked():
    """id_loss draws t and eps as ddpm_loss does; with dropout 0 every image keeps its id, with dropout 1 none does
    (the unconditional model)."""
    model, schedule = conditional()
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    ids, index = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)
    for dropout, y in ((0.0, ids), (1.0, torch.full((6,), 3))):
        with torch.no_grad():
            got = proxy_game.id_loss(ids, dropout)(model, schedule, x0, torch.Generator().manual_seed(2), index)
            g = torch.Generator().manual_seed(2)
            t = torch.randint(0, schedule.T, (6,), generator=g)
            eps = torch.randn(x0.shape, generator=g)
            want = F.mse_loss(model(ddpm.q_sample(schedule, x0, t, eps), t, y), eps)
        assert abs(float(got) - float(want)) < 1e-6 * float(want)


RECIPE = dict(steps=4, batch_size=8, lr=1e-3, warmup=1, lr_schedule="cosine", ema_decay=0.9, grad_clip=1.0, hflip=False,
              seed=0)


@pytest.fixture(scope="module")
def proxy_run(tmp_path_factory):
    """conftest.tiny_contributor_run (6 contributors, one of noise; 4 coalitions) with a recipe in its full model,
    valued by proxy_game.py with a conditional model of 4 training steps."""
    run = tiny_contributor_run(tmp_path_factory.mktemp("proxy"), RECIPE)
    r = run_cli("proxy_game", "--run", run, "--data", f"npz:{run / 'd.npz'}")
    assert r.returncode == 0, r.stderr
    return run


def test_the_proxy_game_values_every_coalition_and_its_row_is_surrogate_shap_of_those_values(proxy_run):
    from fit_datamodel import fit_surrogate_shap
    run = proxy_run
    beh = np.load(runfolder.behaviors(run, "proxy"))
    masks = np.load(runfolder.masks(run, "unlearn"))
    assert beh["index"].tolist() == [0, 1, 2, 3] and json.loads(str(beh["behaviors"])) == ["fid", "precision"]
    assert [str(s) for s in beh["mask_sha256"]] == [data.row_sha256(m) for m in masks]
    whole = np.load(runfolder.behaviors(run, "proxy_full"))
    proxy = ddpm.load_checkpoint(runfolder.checkpoint(run, "proxy"))
    assert proxy["config"]["num_labels"] == 6 and proxy["step"] == 4
    assert float(beh["train_macs"].sum()) == float(proxy["train_macs"]) > 0  # one training, counted once
    r = run_cli("proxy_game", "--run", run, "--data", f"npz:{run / 'd.npz'}")  # valued already: skipped
    assert r.returncode == 0 and "skip:" in r.stdout
    r = run_cli("baselines", "--run", run, "--data", f"npz:{run / 'd.npz'}", "--only", "proxy")
    assert r.returncode == 0, r.stderr
    f = np.load(runfolder.baseline(run, "proxy"))
    for k, name in enumerate(json.loads(str(f["behaviors"]))):
        want = fit_surrogate_shap(masks.astype(float), beh[name].astype(float), None, float(whole[name][0]))[0]
        np.testing.assert_allclose(f["scores_by_behavior"][k], want, rtol=1e-9, err_msg=name)


def test_the_proxy_game_needs_contributors_and_a_recipe(tmp_path):
    run = tiny_contributor_run(tmp_path)
    r = run_cli("proxy_game", "--run", run, "--data", f"npz:{run / 'd.npz'}")  # the fixture's model records none
    assert r.returncode == 2 and "records no training recipe" in r.stderr
    runfolder.groups(run).unlink()
    r = run_cli("proxy_game", "--run", run, "--data", f"npz:{run / 'd.npz'}")
    assert r.returncode == 2 and "contributors" in r.stderr
    r = run_cli("proxy_game", "--run", tmp_path / "nothing", "--data", f"npz:{run / 'd.npz'}")
    assert r.returncode == 2 and "masks stage" in r.stderr
