"""Magnitude pruning of a trained DDPM (Han et al. 2015), as the paper does it (Fang et al. 2023,
ratio 0.3), optionally followed by a short fine-tune on all data.

    python prune.py --ckpt runs/x/full.pt --ratio 0.3 --mode structured --out runs/x/pruned.pt \\
        --data digits --steps 400

structured    removes the lowest-magnitude channels (L1 or L2 norm of each channel's weights) across
              the whole UNet through torch-pruning's dependency graph, so skip connections, GroupNorm
              groups and the decoder's concatenations stay consistent; conv_out and the attention
              projections q, k, v keep their output widths. The model really shrinks.
unstructured  global L1 magnitude masks over all convolution and linear weights
              (torch.nn.utils.prune); the masks are stored and stay applied while unlearning.

The paper's "threshold of 0.05" is Diff-Pruning's cut-off for its Taylor importance accumulated
over timesteps; it has no meaning for magnitude pruning, so there is no such flag here.
The pruned EMA weights become both `model` and `ema` of the output; its `seconds` (pruning plus
fine-tune) is part of the unlearning method's cost.
"""
import os
import time

import torch
import torch.nn as nn

from data import (ArgumentParser, DataError, add_data_args, dataset_from_args, fraction, nonnegative_int,
                  open_fraction, positive_float, positive_int, run, to_model_space)
from ddpm import (AttnBlock, Schedule, build_model, file_sha256, fixed_noise_loss, forward_macs, layer_widths,
                  load_checkpoint, pick_device, save_checkpoint)
from train_ddpm import new_state, sample_grid, state_to_checkpoint, train, training_macs

PAPER_RATIO = 0.3  # the paper's pruning ratio (following Fang et al. 2023)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--ckpt", required=True, help="trained checkpoint (train_ddpm.py)")
    p.add_argument("--out", required=True, help="pruned checkpoint to write")
    p.add_argument("--ratio", type=open_fraction, default=PAPER_RATIO,
                   help="fraction of channels (structured) or weights (unstructured) removed; paper: 0.3")
    p.add_argument("--mode", choices=["structured", "unstructured"], default="structured")
    p.add_argument("--norm", type=int, choices=[1, 2], default=2, help="channel importance: L1 or L2 norm")
    add_data_args(p)
    p.add_argument("--steps", type=nonnegative_int, default=0, help="fine-tune steps on all data after pruning (0: none)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="fine-tune Adam learning rate")
    p.add_argument("--warmup", type=nonnegative_int, default=20)
    p.add_argument("--ema-decay", type=fraction, default=0.999)
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tune's minibatches and noise")
    p.add_argument("--device", default="auto")
    p.add_argument("--grid", type=nonnegative_int, default=100, help="DDIM samples in the PNG beside the checkpoint (0: none)")
    p.add_argument("--ddim-steps", type=positive_int, default=100)
    p.add_argument("--force", action="store_true", help="redo even if --out exists")
    return p.parse_args(argv)


def example_inputs(config, device="cpu"):
    x = torch.randn(1, config["in_channels"], config["resolution"], config["resolution"], device=device)
    return x, torch.ones(1, dtype=torch.long, device=device)


def count_macs(model):
    """(multiply-accumulates, parameters) of one forward pass on one image, by torch-pruning's counter."""
    import torch_pruning as tp
    macs, params = tp.utils.count_ops_and_params(model, example_inputs(model.config, next(model.parameters()).device))
    return int(macs), int(params)


def prune_structured(model, ratio, norm=2):
    """Remove `ratio` of the channels of every prunable group by magnitude (in place); returns model
    with its config updated so that UNet(**model.config) rebuilds the new shapes."""
    import torch_pruning as tp
    ignored = [model.conv_out]  # the output must keep the image's channels
    for m in model.modules():
        if isinstance(m, AttnBlock):
            ignored += [m.q, m.k, m.v]  # attention projections keep their widths
    # torch-pruning removes the same channels from every GroupNorm group and keeps
    # int(group_size * (1 - ratio)) of each group's channels: with Ho et al.'s 4-channel groups,
    # ratio 0.3 would keep 2 of 4 (50% pruned). Asking each layer for the ratio that keeps
    # round(group_size * (1 - ratio)) channels per group prunes as close to `ratio` as groups allow.
    groups = model.config["num_groups"]
    per_layer = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m not in ignored and m.out_channels % groups == 0:
            size = m.out_channels // groups
            keep = max(1, round(size * (1 - ratio)))
            per_layer[m] = 1 - (keep + 0.5) / size if keep < size else 0.0
    pruner = tp.pruner.MagnitudePruner(
        model, example_inputs(model.config, next(model.parameters()).device),
        importance=tp.importance.MagnitudeImportance(p=norm), pruning_ratio=ratio,
        pruning_ratio_dict=per_layer, ignored_layers=ignored)
    pruner.step()
    model.config = dict(model.config, widths=layer_widths(model))
    return model


def prune_unstructured(model, ratio):
    """Global L1 magnitude pruning of all conv/linear weights; returns {parameter name: bool mask}."""
    import torch.nn.utils.prune as tprune
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=ratio)
    names = {id(m): n for n, m in model.named_modules()}
    masks = {}
    for m, _ in layers:
        masks[f"{names[id(m)]}.weight"] = m.weight_mask.bool().clone()
        tprune.remove(m, "weight")  # makes the zeros permanent, back to a plain `weight` parameter
    return masks


def pruned_fraction(model, masks):
    """Fraction of the masked weights that are exactly zero."""
    params = dict(model.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in masks)
    return zeros / sum(params[n].numel() for n in masks)


def main(args):
    if os.path.exists(args.out) and not args.force:
        load_checkpoint(args.out)
        print(f"skip: {args.out} exists (use --force to redo)")
        return
    device = pick_device(args.device)
    full = load_checkpoint(args.ckpt)
    if full["config"].get("widths") or full.get("masks"):
        raise DataError(f"{args.ckpt} is already pruned")
    schedule = Schedule(**full["schedule"])
    model = build_model(full, "ema").to(device)
    base_macs, base_params = count_macs(model)
    t0 = time.perf_counter()
    masks = None
    if args.mode == "structured":
        model = prune_structured(model, args.ratio, args.norm)
    else:
        masks = prune_unstructured(model, args.ratio)
    seconds = time.perf_counter() - t0
    macs, params = count_macs(model)
    report = dict(mode=args.mode, ratio=args.ratio, params_before=base_params, params_after=params,
                  macs_before=base_macs, macs_after=macs)
    print(f"parameters {base_params / 1e6:.3f}M -> {params / 1e6:.3f}M ({1 - params / base_params:.1%} fewer); "
          f"MACs {base_macs / 1e9:.4f}G -> {macs / 1e9:.4f}G ({1 - macs / base_macs:.1%} fewer)")
    if masks:
        print(f"unstructured: {pruned_fraction(model, masks):.4f} of conv/linear weights are zero")

    state = new_state(model, lr=args.lr, seed=args.seed, device=device)
    if args.steps:
        ds = dataset_from_args(args)
        x0_all = to_model_space(ds.images).to(device)
        full_model = build_model(full, "ema").to(device)
        # one (t, eps) draw per image, the same for the three models: their ratios are what is read, and on the
        # quick preset they move by ~0.5 points between seeds with one draw as with four (four took 7 of a quick
        # run's 13 s of pruning)
        report["loss_full"] = fixed_noise_loss(full_model, schedule, x0_all, repeats=1)
        report["loss_pruned"] = fixed_noise_loss(model, schedule, x0_all, repeats=1)
        train(state, schedule, x0_all, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
              lr_schedule="cosine", ema_decay=args.ema_decay, masks=masks, desc="fine-tune")
        report["loss_finetuned"] = fixed_noise_loss(state["ema"], schedule, x0_all, repeats=1)
        print(f"DDPM loss on fixed held-out noise: full {report['loss_full']:.4f}, pruned {report['loss_pruned']:.4f}, "
              f"fine-tuned {report['loss_finetuned']:.4f} ({report['loss_finetuned'] / report['loss_full'] - 1:+.1%} vs full)")
    state["seconds"] += seconds
    fine_tune_steps, state["step"] = state["step"], 0  # unlearning counts its own steps
    ckpt = state_to_checkpoint(state, schedule=schedule, args=vars(args), parent=file_sha256(args.ckpt), masks=masks,
                               train_macs=training_macs(forward_macs(model), fine_tune_steps, args.batch_size))
    ckpt["prune"] = report
    save_checkpoint(args.out, ckpt)
    if args.grid:
        sample_grid(state["ema"], schedule, os.path.splitext(args.out)[0] + ".png", n=args.grid,
                    ddim_steps=args.ddim_steps, device=device)
    print(f"wrote {args.out}: {args.mode} ratio {args.ratio}, {params / 1e6:.3f}M parameters, "
          f"pruning + fine-tune {state['seconds']:.1f} s")


if __name__ == "__main__":
    run(main, parse_args())
