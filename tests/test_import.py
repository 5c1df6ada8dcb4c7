"""tools/import_model.py: a diffusers UNet2DModel with google/ddpm-cifar10-32's config (random weights, made here:
no download) computes the same noise prediction and the same DDIM samples as diffusers does; a pytorch_diffusion
checkpoint of the same weights imports to the same model; what the UNet cannot represent is refused with one line;
an imported model is pruned and measured like any other."""
import json

import numpy as np
import pytest
import torch

import diffusers  # the reference the import is checked against (requirements.txt); the UNet stays hand-written

import ddpm
from conftest import run_cli
import runfolder

CARD = dict(  # google/ddpm-cifar10-32's config.json
    act_fn="silu", attention_head_dim=None, block_out_channels=[128, 256, 256, 256], center_input_sample=False,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, in_channels=3, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-06,
    norm_num_groups=32, out_channels=3, sample_size=32, time_embedding_type="positional",
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                 variance_type="fixed_large", clip_sample=True)  # its scheduler_config.json (a DDPMScheduler)


def random_unet(config, seed=0):
    """A UNet2DModel of `config` whose every weight is random (no zero-initialised layer hides a wrong mapping)."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**config).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """The card's UNet saved as diffusers saves it, its scheduler config beside it, and the imported checkpoint."""
    d = tmp_path_factory.mktemp("card")
    unet = random_unet(CARD)
    unet.save_pretrained(d / "unet")  # diffusion_pytorch_model.safetensors + config.json
    diffusers.DDPMScheduler(**SCHEDULER).save_config(d / "unet")
    r = run_cli("import_model", d / "unet", "--out", d / "x.pt")
    assert r.returncode == 0, r.stderr
    return dict(dir=d, unet=unet, ckpt=torch.load(d / "x.pt", weights_only=True))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_imported_card_model_predicts_diffusers_noise_and_samples_diffusers_ddim(card):
    unet, ckpt = card["unet"], card["ckpt"]
    assert sum(v.numel() for v in ckpt["ema"].values()) == 35_746_307  # Ho et al.'s CIFAR-10 model
    assert ckpt["config"]["downsample_pad"] == "same" and ckpt["config"]["norm_eps"] == 1e-6
    model = ddpm.build_model(ckpt, "ema").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for t in (0, 10, 500, 999):
            ts = torch.full((2,), t)
            assert rel(model(x, ts), unet(x, ts).sample) <= 1e-5, t
    # DDIM-20 from the same noise (8x8 images: the same network, a sixteenth of the arithmetic), against diffusers'
    # DDIMScheduler built from the card's scheduler settings, which clip x0 to [-1, 1]: the same timestep spacing and
    # update at any step count (100 took four times as long). In float64: with clipping, where x0 is clipped the next
    # step follows eps alone, and this random network's float32 differences of 2e-6 grow ~5% a step (6e-4 after 100);
    # the float64 networks leave diffusers' float32 schedule as the only difference. And in float32 without
    # clipping, where the steps contract.
    schedule = ddpm.Schedule(**ckpt["schedule"])
    assert ckpt["sampler"]["clip_x0"]
    for dtype, clip in ((torch.float64, True), (torch.float32, False)):
        scheduler = diffusers.DDIMScheduler.from_config(diffusers.DDPMScheduler(**dict(SCHEDULER, clip_sample=clip)).config)
        scheduler.set_timesteps(20)
        net, ours_net = unet.to(dtype), model.to(dtype)
        noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=dtype)
        xt = noise
        with torch.no_grad():
            for t in scheduler.timesteps:
                xt = scheduler.step(net(xt, t).sample, t, xt, eta=0.0).prev_sample
            ours = ddpm.ddim_sample(ours_net, schedule, noise=noise, steps=20, clip_x0=clip)
        assert rel(ours, xt) <= 1e-4, (dtype, clip, rel(ours, xt))
    unet.float()


def test_pytorch_diffusion_checkpoint_and_bin_weights_import_to_the_same_model(card, tmp_path):
    """Ho et al.'s names (pesser/pytorch_diffusion: temb.dense.0 and .1) as a plain state dict, and the diffusers
    folder with .bin weights instead of safetensors: the same weights, the same config."""
    ckpt = card["ckpt"]
    pd = {k.replace("temb.dense0.", "temb.dense.0.").replace("temb.dense1.", "temb.dense.1."): v
          for k, v in ckpt["ema"].items()}
    torch.save(pd, tmp_path / "ema_cifar10.ckpt")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(CARD))
    torch.save(card["unet"].state_dict(), tmp_path / "bin" / "diffusion_pytorch_model.bin")
    for source in (tmp_path / "ema_cifar10.ckpt", tmp_path / "bin"):
        r = run_cli("import_model", source, "--out", tmp_path / "y.pt", "--force")
        assert r.returncode == 0, r.stderr
        y = torch.load(tmp_path / "y.pt", weights_only=True)
        assert {k: v for k, v in y["config"].items() if k != "dropout"} == \
               {k: v for k, v in ckpt["config"].items() if k != "dropout"}
        assert all(torch.equal(y["ema"][k], v) for k, v in ckpt["ema"].items())
    assert not y["sampler"]["clip_x0"]  # no scheduler config there: Ho et al.'s schedule, no clipping


@pytest.mark.parametrize("change, words", [
    (dict(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]),
     "down_block_types = 'CrossAttnDownBlock2D'"),
    (dict(resnet_time_scale_shift="scale_shift"), "resnet_time_scale_shift = 'scale_shift'"),
    (dict(attn_norm_num_groups=8), "attn_norm_num_groups = 8"),
    (dict(attention_head_dim=8), "attention_head_dim = 8: the UNet attends with one head"),
    (dict(act_fn="gelu"), "act_fn = 'gelu'"),
])
def test_configs_the_unet_cannot_represent_are_refused_with_one_line(tmp_path, change, words):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(dict(CARD, **change)))
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    r = run_cli("import_model", tmp_path / "unet", "--out", tmp_path / "x.pt")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith("error: cannot import: ") and words in r.stderr and not (tmp_path / "x.pt").exists()


SMALL = dict(CARD, in_channels=1, out_channels=1, sample_size=8, block_out_channels=[16, 32], layers_per_block=1,
             down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
             norm_num_groups=8)  # the card's kind of UNet, as wide as the digits-small architecture


def test_an_imported_model_is_pruned_and_measured_like_any_other(tmp_path, fid_cnn):
    """A digits-sized UNet2DModel (Ho et al.'s padding, attention at 4x4): imported, measured by compute_fid.py and
    structurally pruned by prune.py (through the padded stride-2 convolution); the pruned model still runs."""
    random_unet(SMALL).save_pretrained(tmp_path / "unet")
    r = run_cli("import_model", tmp_path / "unet", "--out", tmp_path / "x.pt")
    assert r.returncode == 0, r.stderr
    r = run_cli("compute_fid", "--models", tmp_path / "x.pt", "--n-samples", "20", "--ddim-steps", "2",
                "--cache", fid_cnn(tmp_path / "cache"), "--out", tmp_path / "b.npz", "--loss-draws", "1")
    assert r.returncode == 0, r.stderr
    assert np.isfinite(np.load(tmp_path / "b.npz")["fid"]).all()
    r = run_cli("prune", "--ckpt", tmp_path / "x.pt", "--out", tmp_path / "p.pt", "--grid", "0")
    assert r.returncode == 0, r.stderr
    pruned = ddpm.build_model(torch.load(tmp_path / "p.pt", weights_only=True), "ema")
    imported = ddpm.build_model(torch.load(tmp_path / "x.pt", weights_only=True))
    assert ddpm.count_params(pruned) < 0.7 * ddpm.count_params(imported)
    assert pruned(torch.zeros(2, 1, 8, 8), torch.tensor([3, 900])).shape == (2, 1, 8, 8)


def test_an_attribution_only_run_of_an_imported_model(tmp_path):
    """FULL= an imported digits-sized model, K=0 R=0: nothing is retrained; the run prunes, unlearns, measures and
    fits, and its report gives the attributions, the images and the detection AUC, and says first that no LDS was
    measured, and why."""
    from conftest import pipeline
    random_unet(SMALL).save_pretrained(tmp_path / "unet")
    r = run_cli("import_model", tmp_path / "unet", "--out", tmp_path / "mine.pt")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    p = pipeline("quick", run, FULL=tmp_path / "mine.pt", K=0, R=0, M=4, QUALITY_DDIM=0, JOBS=1, OMP_NUM_THREADS=1)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    assert not (runfolder.models(run, "retrain")).exists() and not (runfolder.models(run, "lds")).exists()
    assert (runfolder.checkpoint(run, "full")).read_bytes() == (tmp_path / "mine.pt").read_bytes()
    report = (runfolder.report(run)).read_text()
    assert report.splitlines()[2].startswith("Data: `digits`, 1797 images; **planted faults**: noise (90 images)")
    assert report.splitlines()[4].startswith("**No LDS was measured.**") and "recipe that made" in report
    assert report.splitlines()[6] == "## Which images hurt or help fid" and runfolder.verdicts(run).exists()
    assert "## Every behaviour" in report and "| loss |" in report and "Finding the corrupted images" in report
    results = json.loads((runfolder.results(run)).read_text())
    assert results["attribution_only"] and 0 <= results["auc"]["unlearn_all"] <= 1
    with np.load(runfolder.attributions(run, "all_behaviors")) as f:
        assert f["fid"].shape == (1797,) and np.isfinite(f["loss"]).all()
    assert "attribution only (no LDS: K = 0)" in out
