"""Import a DDPM you already have as a checkpoint of this project, so every script can attribute it:

    python -m tools.import_model path/to/ddpm-cifar10-32 --out runs/cifar/full.pt    # a diffusers UNet2DModel folder
    python -m tools.import_model ema_cifar10.ckpt --out runs/cifar/full.pt           # a pytorch_diffusion checkpoint
    FULL=runs/cifar/full.pt K=0 R=0 bash run_pipeline.sh cifar10                     # then attribute it

SOURCE is either
  - a folder of a diffusers UNet2DModel of the DDPM family (Ho et al.'s UNet): config.json and
    diffusion_pytorch_model.safetensors (or .bin), and optionally its scheduler's scheduler_config.json beside
    it, one level up, or in ../scheduler/ (the layout of a pipeline's unet/ folder);
  - a checkpoint of pesser/pytorch_diffusion (the port of Ho et al.'s TensorFlow models, e.g. ema_cifar10):
    a plain state dict; its architecture is read from the weights' shapes, its resolution from --resolution.

The output holds the imported weights as both `model` and `ema`, the UNet config (Ho et al.'s "SAME" padding of
the stride-2 convolutions and GroupNorm eps where the source has them), the noise schedule (from the scheduler
config: linear betas only; Ho et al.'s when there is none), whether the source's sampler clips x0, and
`parent` = the sha256 of the source's weights file. No pickle is ever unpickled: safetensors, or torch.load with
weights_only=True. A config the hand-written UNet cannot represent is refused with one line naming the field.
"""
import json
import os
import re

import torch

from data import ArgumentParser, DataError, positive_int, run
from ddpm import UNet, file_sha256, forward_macs, save_checkpoint

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("source", help="a diffusers UNet2DModel folder, or a pytorch_diffusion checkpoint file")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    p.add_argument("--resolution", type=positive_int, default=32, help="pytorch_diffusion: the image side the model "
                   "was trained at (its weights do not say; ema_cifar10: 32)")
    p.add_argument("--dropout", type=float, default=0.1, help="pytorch_diffusion: the dropout rate (Ho et al. on "
                   "CIFAR-10: 0.1); only fine-tuning sees it")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    return p.parse_args(argv)


def refuse(field, value, why):
    raise DataError(f"cannot import: {field} = {value!r}: {why}")


# ----------------------------------------------------------------------------------------------
# diffusers UNet2DModel

def unet_config_of(cfg):
    """UNet(**config) of a diffusers UNet2DModel config, or a refusal naming the field it cannot represent."""
    expect = dict(act_fn="silu", time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
                  center_input_sample=False, resnet_time_scale_shift="default", class_embed_type=None,
                  num_class_embeds=None, add_attention=True, mid_block_scale_factor=1, downsample_type="conv",
                  upsample_type="conv", mid_block_type="UNetMidBlock2D")
    why = {"act_fn": "the UNet uses SiLU", "time_embedding_type": "the UNet embeds time sinusoidally",
           "flip_sin_to_cos": "the UNet's embedding is [sin, cos]", "freq_shift": "the UNet's embedding divides by "
           "half - 1 (Ho et al.)", "class_embed_type": "the UNet is unconditional", "num_class_embeds": "the UNet "
           "is unconditional", "mid_block_type": "the UNet's middle is resnet, attention, resnet"}
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        refuse("_class_name", cfg["_class_name"], "only UNet2DModel (an unconditional DDPM UNet) is imported")
    for field, value in expect.items():
        if field in cfg and cfg[field] != value and not (field == "mid_block_scale_factor" and cfg[field] == 1.0):
            refuse(field, cfg[field], why.get(field, f"the UNet has {value!r}"))
    down, up, chans = cfg["down_block_types"], cfg["up_block_types"], list(cfg["block_out_channels"])
    for field, types, allowed in (("down_block_types", down, ("DownBlock2D", "AttnDownBlock2D")),
                                  ("up_block_types", up, ("UpBlock2D", "AttnUpBlock2D"))):
        for t in types:
            if t not in allowed:
                refuse(field, t, f"the UNet's blocks are {' and '.join(allowed)} (no cross-attention, no other "
                                 f"kind of block)")
    attn_down = [t.startswith("Attn") for t in down]
    if [t.startswith("Attn") for t in reversed(up)] != attn_down or len(up) != len(down) != len(chans):
        refuse("up_block_types", up, "the UNet attends at the same resolutions going up as going down")
    ch = chans[0]
    if any(c % ch for c in chans):
        refuse("block_out_channels", chans, "each must be a multiple of the first")
    if cfg.get("out_channels", cfg["in_channels"]) != cfg["in_channels"]:
        refuse("out_channels", cfg["out_channels"], "the UNet predicts noise of the input's channels")
    head = cfg.get("attention_head_dim", 8)
    if any(attn_down) and head is not None and any(head != c for c, a in zip(chans, attn_down) if a):
        refuse("attention_head_dim", head, "the UNet attends with one head (attention_head_dim null, or the "
                                           "block's channels)")
    if cfg.get("attn_norm_num_groups") not in (None, cfg.get("norm_num_groups", 32)):
        refuse("attn_norm_num_groups", cfg["attn_norm_num_groups"], "the UNet's attention normalises as its resnets")
    pad = cfg.get("downsample_padding", 1)
    if pad not in (0, 1):
        refuse("downsample_padding", pad, "0 (Ho et al.'s SAME padding) or 1 only")
    size = cfg.get("sample_size", 32)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return dict(resolution=int(size), in_channels=int(cfg["in_channels"]), ch=int(ch),
                ch_mult=tuple(c // ch for c in chans), num_res_blocks=int(cfg["layers_per_block"]),
                attn_resolutions=tuple(int(size) // 2 ** level for level, a in enumerate(attn_down) if a),
                dropout=float(cfg.get("dropout", 0.0)), num_groups=int(cfg.get("norm_num_groups", 32)),
                mid_attn=True, downsample_pad="same" if pad == 0 else "symmetric",
                norm_eps=float(cfg.get("norm_eps", 1e-5)))


RESNET = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "temb_proj", "norm2": "norm2", "conv2": "conv2",
          "conv_shortcut": "nin_shortcut"}
ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}  # the second row: older diffusers names


def diffusers_key(key, levels):
    """The UNet's name of a diffusers UNet2DModel weight (None for a weight it has no place for)."""
    fixed = {"time_embedding.linear_1": "temb.dense0", "time_embedding.linear_2": "temb.dense1",
             "conv_norm_out": "norm_out"}
    stem, _, leaf = key.rpartition(".")
    if stem in fixed:
        return f"{fixed[stem]}.{leaf}"
    if stem in ("conv_in", "conv_out"):
        return key
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", stem)
    if m:
        side, block, kind, i, rest = m.groups()
        level = int(block) if side == "down" else levels - 1 - int(block)  # diffusers' up blocks go up from the bottom
        if kind in ("downsamplers", "upsamplers"):
            return f"{side}.{level}.{kind[:-2]}.{rest}.{leaf}" if rest == "conv" else None
        table = RESNET if kind == "resnets" else ATTENTION
        return f"{side}.{level}.{'block' if kind == 'resnets' else 'attn'}.{i}.{table[rest]}.{leaf}" if rest in table else None
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", stem)
    if m:
        kind, i, rest = m.groups()
        table = RESNET if kind == "resnets" else ATTENTION
        name = f"block_{int(i) + 1}" if kind == "resnets" else "attn_1"
        return f"mid.{name}.{table[rest]}.{leaf}" if rest in table else None
    return None


def read_diffusers(folder):
    """(config, state dict in the UNet's names, weights file, scheduler config or None) of a UNet2DModel folder."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {os.path.join(folder, 'config.json')}: {type(e).__name__}")
    config = unet_config_of(cfg)  # judged before any weights are read
    files = [os.path.join(folder, w) for w in WEIGHT_FILES if os.path.isfile(os.path.join(folder, w))]
    if not files:
        raise DataError(f"{folder} has config.json but no {' or '.join(WEIGHT_FILES)}")
    try:
        if files[0].endswith(".safetensors"):
            from safetensors.torch import load_file
            weights = load_file(files[0])
        else:
            weights = torch.load(files[0], map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"cannot read {files[0]}: {type(e).__name__}")
    state = {}
    for key, value in weights.items():
        name = diffusers_key(key, len(config["ch_mult"]))
        if name is None:
            raise DataError(f"cannot import: weight {key} has no place in the UNet")
        if re.search(r"\.attn(_1|\.\d+)\.(q|k|v|proj_out)\.weight$", name) and value.dim() == 2:
            value = value[:, :, None, None]  # a (C, C) linear projection is the UNet's 1x1 convolution
        state[name] = value
    scheduler = None
    for where in (folder, os.path.dirname(os.path.abspath(folder)),
                  os.path.join(os.path.dirname(os.path.abspath(folder)), "scheduler")):
        path = os.path.join(where, "scheduler_config.json")
        if os.path.isfile(path):
            with open(path) as f:
                scheduler = json.load(f)
            break
    return config, state, files[0], scheduler


def schedule_of(scheduler):
    """(Schedule's arguments, clip x0 when sampling) of a diffusers scheduler config; Ho et al.'s without one."""
    if scheduler is None:
        print("no scheduler_config.json: the schedule is Ho et al.'s (T = 1000, linear betas 1e-4 .. 0.02)")
        return dict(T=1000, beta_1=1e-4, beta_T=0.02), False
    if scheduler.get("beta_schedule", "linear") != "linear":
        refuse("beta_schedule", scheduler["beta_schedule"], "the noise schedule is linear (Ho et al.)")
    if scheduler.get("trained_betas") is not None:
        refuse("trained_betas", "...", "the noise schedule is linear (Ho et al.)")
    if scheduler.get("prediction_type", "epsilon") != "epsilon":
        refuse("prediction_type", scheduler["prediction_type"], "the UNet predicts the noise eps")
    return (dict(T=int(scheduler.get("num_train_timesteps", 1000)), beta_1=float(scheduler.get("beta_start", 1e-4)),
                 beta_T=float(scheduler.get("beta_end", 0.02))), bool(scheduler.get("clip_sample", False)))


# ----------------------------------------------------------------------------------------------
# pytorch_diffusion

def read_pytorch_diffusion(path, resolution, dropout):
    """(config, state dict in the UNet's names) of a pytorch_diffusion checkpoint: Ho et al.'s names, but for the
    time embedding's ModuleList (temb.dense.0 / .1); the architecture from the weights' shapes."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"cannot read {path} as a plain state dict (weights_only): {type(e).__name__}")
    if not isinstance(weights, dict) or "conv_in.weight" not in weights:
        raise DataError(f"{path} is not a pytorch_diffusion checkpoint (no conv_in.weight)")
    state = {re.sub(r"^temb\.dense\.(\d)\.", r"temb.dense\1.", k): v for k, v in weights.items()}
    ch, in_channels = state["conv_in.weight"].shape[:2]
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
    blocks = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("down.0.block."))
    ch_mult = tuple(state[f"down.{level}.block.0.conv1.weight"].shape[0] // ch for level in range(levels))
    if any(f"down.{level}.downsample.conv.weight" not in state for level in range(levels - 1)):
        refuse("resamp_with_conv", False, "the UNet downsamples with a strided convolution")
    if state["conv_out.weight"].shape[0] != in_channels:
        refuse("out_ch", state["conv_out.weight"].shape[0], "the UNet predicts noise of the input's channels")
    attn = tuple(resolution // 2 ** level for level in range(levels) if f"down.{level}.attn.0.q.weight" in state)
    return dict(resolution=resolution, in_channels=int(in_channels), ch=int(ch), ch_mult=ch_mult,
                num_res_blocks=blocks, attn_resolutions=attn, dropout=dropout, num_groups=32,
                mid_attn="mid.attn_1.q.weight" in state, downsample_pad="same", norm_eps=1e-6), state


# ----------------------------------------------------------------------------------------------

def import_model(source, resolution=32, dropout=0.1):
    """The project checkpoint of a diffusers folder or a pytorch_diffusion file."""
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise DataError(f"{source} has no config.json: not a diffusers UNet2DModel folder")
        config, state, weights_file, scheduler = read_diffusers(source)
        schedule, clip = schedule_of(scheduler)
        kind = "diffusers"
    elif os.path.isfile(source):
        config, state = read_pytorch_diffusion(source, resolution, dropout)
        schedule, clip, weights_file, kind = dict(T=1000, beta_1=1e-4, beta_T=0.02), False, source, "pytorch_diffusion"
    else:
        raise DataError(f"no such model folder or checkpoint: {source}")
    model = UNet(**config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError("cannot import: the weights do not fit the UNet their config describes ("
                        + (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
                        + f"{' and more' if len(missing) + len(unexpected) > 1 else ''})")
    weights = model.state_dict()
    return dict(model=weights, ema=weights, config=dict(model.config), schedule=schedule, step=0, seconds=0.0,
                subset=None, parent=file_sha256(weights_file), masks=None, sampler=dict(clip_x0=clip),
                macs=forward_macs(model), train_macs=float("nan"),
                args=dict(imported=os.path.abspath(source), format=kind))


def main(args):
    if os.path.exists(args.out) and not args.force:
        raise DataError(f"{args.out} exists (use --force to overwrite it)")
    ckpt = import_model(args.source, args.resolution, args.dropout)
    save_checkpoint(args.out, ckpt)
    n = sum(v.numel() for v in ckpt["model"].values())
    print(f"wrote {args.out}: {ckpt['args']['format']} model of {n:,} parameters, resolution "
          f"{ckpt['config']['resolution']}, T = {ckpt['schedule']['T']}, x0 clipped when sampling: "
          f"{ckpt['sampler']['clip_x0']}")


if __name__ == "__main__":
    run(main, parse_args())
