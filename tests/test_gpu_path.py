"""The GPU options, checked on the CPU: bf16 training follows fp32, a stack of models trained together
equals the same models trained one by one, stacked sampling equals sampling one model at a time, and
torch.compile gives the eager loss."""
import numpy as np
import pytest
import torch

import data
import runfolder
import ddpm
import prune
from conftest import run_cli
from train_ddpm import new_state, state_to_checkpoint, train


@pytest.fixture(scope="module")
def digits():
    return data.to_model_space(data.load_dataset("digits").images)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """A structurally pruned digits-small checkpoint (as prune.py writes it), an unpruned one, and a 4-row mask
    file."""
    d = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    model = prune.prune_structured(ddpm.UNet(**ddpm.ARCHS["digits-small"]), 0.3)
    ddpm.save_checkpoint(runfolder.checkpoint(d, "pruned"), state_to_checkpoint(new_state(model, lr=1e-3, seed=0, device="cpu"),
                                                              schedule=ddpm.Schedule(), args={}))
    full = ddpm.UNet(**ddpm.ARCHS["digits-small"])  # gd-full starts from an unpruned model
    ddpm.save_checkpoint(runfolder.checkpoint(d, "full"), state_to_checkpoint(new_state(full, lr=1e-3, seed=0, device="cpu"),
                                                            schedule=ddpm.Schedule(), args={}))
    np.save(d / "masks.npy", data.make_masks(1797, 4, 0.5, seed=1))
    return d


def assert_same_weights(a, b, rel=1e-4):
    """Every tensor of checkpoint a within rel of that tensor's largest magnitude in b."""
    for which in ("model", "ema"):
        if a[which] is None:  # a finished row keeps its EMA weights only
            assert b[which] is None
            continue
        assert a[which].keys() == b[which].keys()
        for k, v in a[which].items():
            scale = float(v.abs().max()) or 1.0
            assert float((v - b[which][k]).abs().max()) <= rel * scale, (which, k)


def test_bf16_training_follows_fp32(digits):
    schedule = ddpm.Schedule()
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        state = new_state(ddpm.UNet(**ddpm.ARCHS["digits-small"]), lr=2e-3, seed=0, device="cpu")
        before = ddpm.fixed_noise_loss(state["model"], schedule, digits[:512], repeats=1)
        train(state, schedule, digits, steps=30, batch_size=32, lr=2e-3, warmup=10, lr_schedule="cosine",
              ema_decay=0.999, progress=False, precision=precision)
        losses[precision] = ddpm.fixed_noise_loss(state["model"], schedule, digits[:512], repeats=1)
        assert losses[precision] < 0.7 * before  # it trained
    assert abs(losses["bf16"] - losses["fp32"]) <= 0.05 * losses["fp32"], losses


@pytest.mark.parametrize("method, extra, rows", [("gd", [], 4), ("neggrad", ["--batches", "epoch"], 2), ("ga", [], 2),
                                                 ("gd-full", ["--batches", "epoch"], 2)])
def test_a_stack_of_unlearned_models_equals_the_models_unlearned_one_by_one(pruned_run, method, extra, rows):
    d = pruned_run
    start = runfolder.checkpoint(d, "full" if method == "gd-full" else "pruned")
    common = ["--ckpt", start, "--masks", d / "masks.npy", "--indices", f"0:{rows}", "--steps", "20" if rows == 4 else "8",
              "--batch-size", "16", "--method", method, *extra]
    for name, stack in (("alone", "1"), ("stacked", str(rows))):
        r = run_cli("unlearn", *common, "--out", d / method / name, "--stack", stack)
        assert r.returncode == 0, r.stderr
    for i in range(rows):
        a, b = (torch.load(d / method / name / f"{i:05d}.pt", weights_only=True) for name in ("alone", "stacked"))
        assert_same_weights(a, b)
        assert {k: v for k, v in a.items() if k not in ("model", "ema", "seconds", "args")} == \
               {k: v for k, v in b.items() if k not in ("model", "ema", "seconds", "args")}
    # and the rows differ from each other, so the comparison could fail
    a0, a1 = (torch.load(d / method / "alone" / f"{i:05d}.pt", weights_only=True) for i in (0, 1))
    assert any(not torch.equal(a0["ema"][k], a1["ema"][k]) for k in a0["ema"])


def test_lora_cannot_be_stacked(pruned_run, tmp_path):
    d = pruned_run
    r = run_cli("unlearn", "--ckpt", runfolder.checkpoint(d, "pruned"), "--masks", d / "masks.npy", "--out", tmp_path / "u",
                "--method", "lora", "--stack", "2")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --method lora cannot be stacked (its "
                                                                  "adapters are not one UNet's weights): use --stack 1"]
    assert not (tmp_path / "u").exists()


def test_stacked_retraining_and_stacked_sampling_equal_one_at_a_time(pruned_run, tmp_path, fid_cnn):
    d = pruned_run
    common = ["--masks", d / "masks.npy", "--indices", "0:2", "--steps", "10", "--batch-size", "16", "--grid", "0",
              "--arch", "digits-small"]
    for name, stack in (("alone", "1"), ("stacked", "2")):
        r = run_cli("train_ddpm", *common, "--out", tmp_path / name, "--stack", stack)
        assert r.returncode == 0, r.stderr
    for i in range(2):
        assert_same_weights(*(torch.load(tmp_path / name / f"{i:05d}.pt", weights_only=True)
                              for name in ("alone", "stacked")))
    fids = {}
    for stack in ("1", "2"):
        r = run_cli("compute_fid", "--models", tmp_path / "alone", "--masks", d / "masks.npy", "--n-samples", "40",
                    "--ddim-steps", "3", "--cache", fid_cnn(tmp_path / f"cache{stack}"), "--stack", stack,
                    "--out", tmp_path / f"beh{stack}.npz")
        assert r.returncode == 0, r.stderr
        fids[stack] = np.load(tmp_path / f"beh{stack}.npz")["fid"]
    assert fids["1"][0] != fids["1"][1]
    np.testing.assert_allclose(fids["2"], fids["1"], rtol=1e-4)


def test_compiled_and_eager_give_the_same_loss(digits):
    torch.manual_seed(0)
    model = ddpm.UNet(**ddpm.ARCHS["digits"]).eval()
    schedule = ddpm.Schedule()
    try:
        compiled = torch.compile(model)
        with torch.no_grad():
            got = ddpm.ddpm_loss(compiled, schedule, digits[:64], generator=torch.Generator().manual_seed(0))
    except Exception as e:  # no compiler toolchain, or a platform torch.compile does not support
        pytest.skip(f"torch.compile is unavailable here: {type(e).__name__}: {str(e)[:200]}")
    with torch.no_grad():
        expected = ddpm.ddpm_loss(model, schedule, digits[:64], generator=torch.Generator().manual_seed(0))
    assert float(got) == pytest.approx(float(expected), rel=1e-4)


def test_the_gpu_bench_prints_its_table(capsys):
    """bench/gpu.py end to end at the CPU sizes, with the small digits UNet standing in for cifar10."""
    from conftest import load_bench
    bench = load_bench("gpu")
    bench.main(bench.parse_args(["--small", "--device", "cpu", "--arch", "digits-small"]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 6 + 1 + 3  # header, 6 training rows, one sampling row (fp32 on CPU), 3 unlearning rows
    assert sum(" ms |" in r for r in rows) == 2 and "images/s" in rows[8] and "G = 8 stacked" in rows[-1]
