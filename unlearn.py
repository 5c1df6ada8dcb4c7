"""Sparsified unlearning: for each mask row i, start from the pruned model and run gradient descent
with the ordinary DDPM loss (Algorithm 1) on the subset S_i only, approximating a model retrained
from scratch without the other images (the paper: 4k steps, 2% of the 200k training steps).

    python unlearn.py --ckpt runs/x/pruned.pt --data digits --masks runs/x/masks/unlearn.npy \\
        --indices 0:64 --out runs/x/models/unlearn
    python unlearn.py --ckpt runs/x/pruned.pt --data digits --masks runs/x/masks/unlearn.npy \\
        --out runs/x/models/neggrad --method neggrad --ascent-weight 0.5 --batches epoch
    python unlearn.py --ckpt runs/x/full.pt --method gd-full ...        # from the unpruned model

Methods (--method; METHODS below): gd (the paper's), gd-full (the same from the unpruned model: what
pruning costs), ga (gradient ascent on the removed images, the complement of S_i), neggrad (descent on
S_i plus a weighted ascent on the removed images), lora (gd through low-rank adapters, merged after), guda
(GUDA's group unlearning from the full model: descent on S_i plus a forget term that redirects each removed
image's denoising toward its nearest kept images; run on masks/loo.npy, one contributor removed a row).

One process handles a range of rows, loading data and model once; it writes <out>/<row:05d>.pt per
row, each with its row, the row's sha256, its method and settings, its wall time and its training
compute, and skips rows already done (refusing a row made for another subset or by another method).
Every row uses the same seed for minibatch positions and noise (common random numbers), so two rows
differ only by their data. Unstructured pruning masks stay applied (pruned weights stay exactly zero).
"""
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

from data import (ArgumentParser, DataError, Progress, add_data_args, add_speed_args, dataset_from_args, fraction,
                  images_of, nonnegative_float, nonnegative_int, parse_range, positive_float, positive_int,
                  row_sha256, run, script_settings, to_model_space)
from runfolder import load_groups, load_masks
from ddpm import (Schedule, build_model, draw_t_eps, file_sha256, load_checkpoint, pick_device, q_sample,
                  save_checkpoint)
from train_ddpm import new_state, stack_states, state_to_checkpoint, train, train_stack, unstack


# ----------------------------------------------------------------------------------------------
# The methods: one table. A method says which checkpoint it starts from and its objective, a weighted sum
# of DDPM losses over the kept images (S_i) and the removed ones (the rest): weight > 0 descends, < 0 ascends.

@dataclass(frozen=True)
class Method:
    start: str  # "pruned" (prune.py's output: sparsified unlearning) or "full" (the unpruned trained model)
    objective: tuple  # ((which set, weight), ...): "kept" or "removed"; weight "w" is --ascent-weight's negative
    how: str
    stack: bool = True  # --stack can unlearn several rows at once with this method


METHODS = {
    "gd": Method("pruned", (("kept", 1.0),), "gradient descent with the DDPM loss on S_i only, from the pruned model "
                 "(the paper's sparsified unlearning)"),
    "gd-full": Method("full", (("kept", 1.0),), "the same from the unpruned model: what pruning costs in fidelity"),
    "ga": Method("pruned", (("removed", -1.0),), "gradient ascent on the removed images only (the authors' ga): "
                 "unbounded, so keep it short and its learning rate small"),
    "neggrad": Method("pruned", (("kept", 1.0), ("removed", "w")), "descent on S_i plus --ascent-weight x ascent on "
                      "the removed images (NegGrad+, Kurmanji et al. 2023): contrasting the two halves moves the model "
                      "further toward what S_i holds than descent alone in the same steps"),
    "guda": Method("full", (("all", "kept"), ("removed", "forget")), "GUDA's unlearning (ICML 2026; sony/guda's "
                   "ReTrack): from the full model, descent on S_i plus --forget-weight x a forget term whose target for "
                   "a removed image's x_t is the noise that would have made it from its --neighbours nearest kept "
                   "images, clipped and weighted by their posterior given x_t (redirect_loss); ours: the descent's "
                   "minibatches are drawn from all images with the removed ones masked out (kept_loss), so that two "
                   "rows see the same images and noise but the removed ones", stack=False),
    "lora": Method("pruned", (("kept", 1.0),), "gd through low-rank adapters W + (alpha / r) B A on every convolution "
                   "and linear weight (Hu et al. 2022; the authors' lora, there on attention only), merged into the "
                   "weights when done: a low-rank update, so less of the minibatches' noise", stack=False),
}


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--ckpt", required=True, help="the checkpoint to start from: pruned (prune.py) for every method but "
                   "gd-full and guda, which start from the unpruned model (train_ddpm.py)")
    add_data_args(p)
    p.add_argument("--masks", required=True, help="mask file (make_subsets.py)")
    p.add_argument("--indices", default=None, help="half-open range of rows START:STOP (default: all)")
    p.add_argument("--out", required=True, help="folder for one checkpoint per row")
    p.add_argument("--method", choices=sorted(METHODS), default="gd", help="how to unlearn: " + "; ".join(
        f"{name}: {m.how}" for name, m in METHODS.items()))
    p.add_argument("--steps", type=positive_int, default=100, help="unlearning steps per row (paper: 4k = 2%% of the "
                   "training steps; run_pipeline.sh's presets: see their comments)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per minibatch of each term (neggrad "
                   "draws one of the kept and one of the removed images a step)")
    p.add_argument("--batches", choices=["random", "epoch"], default="random", help="random: each minibatch drawn "
                   "with replacement (as train_ddpm.py trains); epoch: every image once an epoch, reshuffled (a "
                   "DataLoader with shuffle=True, as the paper's authors unlearn)")
    p.add_argument("--lr", type=positive_float, default=3e-4, help="Adam learning rate, cosine decay to 0 (on digits, "
                   "100 steps: 1e-3 made unlearned FID mostly optimisation noise, Pearson with retrained FID 0.05 vs "
                   "0.48 at 3e-4)")
    p.add_argument("--warmup", type=nonnegative_int, default=10)
    p.add_argument("--ema-decay", type=fraction, default=0.999, help="EMA of the unlearned weights (warmed up: decay "
                   "min(d, (1 + step) / (10 + step))); 0: the last weights")
    p.add_argument("--ascent-weight", type=nonnegative_float, default=0.5, help="neggrad: the ascent's weight against "
                   "the descent's 1 (0: gd exactly)")
    p.add_argument("--forget-weight", type=nonnegative_float, default=0.03, help="guda: the forget term's weight "
                   "against the kept images' descent (sony/guda's lambda_forget for CIFAR-10)")
    p.add_argument("--neighbours", type=positive_int, default=10, help="guda: the kept images (nearest in pixels) "
                   "each removed image's denoising is redirected toward (sony/guda's k_neighbors)")
    p.add_argument("--kl-cap", type=positive_float, default=1.0, help="guda: each redirection's correction is clipped "
                   "to the norm sqrt(2 kl_cap) (sony/guda's KL trust region)")
    p.add_argument("--rank", type=positive_int, default=4, help="lora: rank r of each adapter (alpha = r)")
    p.add_argument("--seed", type=int, default=0, help="one seed for every row: minibatch positions and noise")
    p.add_argument("--device", default="auto")
    add_speed_args(p, "unlearn this many rows together (vmap over stacked weights: 12.6x on an H200 for 64 digits "
                   "models; 2 CPU cores about break even); each row's checkpoint is what it would be alone")
    p.add_argument("--keep-train-state", action="store_true", help="keep the unlearned (non-EMA) weights in each "
                   "row's checkpoint too (by default it keeps the EMA weights the later stages read: half the size)")
    p.add_argument("--force", action="store_true", help="redo rows whose checkpoint exists")
    return p.parse_args(argv)


SETTINGS = ("method", "steps", "batch_size", "batches", "lr", "warmup", "ema_decay", "ascent_weight", "rank",
            "forget_weight", "neighbours", "kl_cap", "seed")


def settings_of(args):
    """What makes two unlearned models of one row the same: the method and the settings it uses."""
    s = {k: getattr(args, k) for k in SETTINGS}
    if args.method != "neggrad":
        s.pop("ascent_weight")
    if args.method != "lora":
        s.pop("rank")
    if args.method != "guda":
        s.pop("forget_weight"), s.pop("neighbours"), s.pop("kl_cap")
    return s


def row_path(out, i):
    return os.path.join(out, f"{i:05d}.pt")


def check_done(path, sha, settings):
    """True if the row's checkpoint exists for this very row and method; refuse one of another subset or method
    (a pool of mixed methods would be attributed as one)."""
    if not os.path.exists(path):
        return False
    ckpt = load_checkpoint(path)
    if (ckpt.get("subset") or {}).get("sha256") != sha:
        raise DataError(f"{path} was made for another subset than its mask row (the mask file changed?); "
                        f"use --force to redo it")
    recorded = dict(dict(method="gd"), **(ckpt.get("args") or {}))  # a row written before methods existed: gd
    made = {k: recorded[k] for k in settings if k in recorded}  # (and it records no settings it did not have)
    if any(made[k] != settings[k] for k in made):
        differ = ", ".join(f"{k} {made[k]} (now {settings[k]})" for k in made if made[k] != settings[k])
        raise DataError(f"{path} was unlearned with other settings: {differ}; use another --out, or --force")
    return True


def check_start(method, ckpt, path):
    """Each method starts from the model it names: refuse gd-full from a pruned checkpoint and the others from an
    unpruned one (their names would misreport what was measured)."""
    pruned = bool(ckpt["config"].get("widths") or ckpt.get("masks"))
    if METHODS[method].start == "full" and pruned:
        raise DataError(f"--method {method} starts from the unpruned model, but {path} is pruned: pass the "
                        f"full model (train_ddpm.py's output)")
    if METHODS[method].start == "pruned" and not pruned:
        raise DataError(f"--method {method} starts from a pruned model (prune.py), but {path} is not pruned; "
                        f"to unlearn from the unpruned model use --method gd-full")
    if method == "lora" and ckpt.get("masks"):
        raise DataError("--method lora adapts whole weights: not with unstructured pruning masks")


def objective(method, kept, removed, args, device, seed, everything=None):
    """train()'s terms for one row: [(images, weight, generator[, loss])], the first term drawing from the row's
    generator (seeded as gd's), the second from a generator of its own, so that the first term's draws are gd's.
    `everything`: (all images, the row's keep mask), for a term drawn from all images."""
    sets = {"kept": kept, "removed": removed, "all": everything[0] if everything else None}
    terms = []
    for k, (which, weight) in enumerate(METHODS[method].objective):
        if len(sets[which]) == 0:
            raise DataError(f"--method {method} needs {which} images, but a row has none")
        g = torch.Generator(device=device).manual_seed(seed if k == 0 else seed + 1_000_003 * k)
        if weight == "forget":
            terms.append((sets[which], args.forget_weight, g, redirect_loss(kept, args.neighbours, args.kl_cap)))
        elif weight == "kept":
            terms.append((sets[which], 1.0, g, kept_loss(everything[1])))
        else:
            terms.append((sets[which], -args.ascent_weight if weight == "w" else weight, g))
    return terms


def kept_loss(keep):
    """The DDPM loss of a minibatch drawn from all images (t and eps drawn as ddpm_loss draws them), averaged over
    the images `keep` (a bool per image) marks: the same minibatches and noise for every row, each row's loss
    leaving out its own removed images (common random numbers for leave-one-out rows)."""
    def term(net, schedule, x0, generator, index):
        t, eps = draw_t_eps(schedule, x0, generator)
        errors = ((net(q_sample(schedule, x0, t, eps), t) - eps) ** 2).flatten(1).mean(1)
        weight = keep[index].to(errors.dtype)
        return (errors * weight).sum() / weight.sum().clamp(min=1)
    return term


def redirect_loss(kept, k, kl_cap):
    """GUDA's forget term (ReTrack, as sony/guda runs it) for a minibatch of removed images x0: with t and eps drawn
    as ddpm_loss draws them and x_t = gamma x0 + sigma eps (gamma = sqrt(a_t), sigma = sqrt(1 - a_t)), the target
    for x_t is not eps but the noise that would have made it from one of x0's k nearest kept images x_r (pixels),
    eps + delta_r with delta_r = (gamma / sigma) (x0 - x_r), averaged with the weights w_r ~ exp(-||x_t - gamma x_r||^2
    / (2 sigma^2)) (x_r's posterior given x_t: at small t the nearest, at large t all alike). Each delta_r is clipped
    to the norm sqrt(2 kl_cap), their KL trust region: unclipped, at small t it is up to 100x a noise's size (on the
    default run, without the clip and their weight, the unlearned models' FID went from 38 to 41-129). Mean squared
    error, as the DDPM loss."""
    flat = kept.flatten(1)
    k, cap = min(k, len(kept)), math.sqrt(2 * kl_cap)

    def term(net, schedule, x0, generator, index):
        t, eps = draw_t_eps(schedule, x0, generator)
        xt = q_sample(schedule, x0, t, eps)
        near = kept[torch.cdist(x0.flatten(1), flat).topk(k, largest=False).indices]  # (B, k, C, H, W)
        a = schedule.at("alphas_cumprod", t, x0)[:, None]  # (B, 1, 1, 1, 1)
        gamma, sigma = a.sqrt(), (1 - a).sqrt()
        w = torch.softmax(-((xt[:, None] - gamma * near) ** 2).flatten(2).sum(2) / (2 * sigma.flatten(1) ** 2), 1)
        delta = gamma / sigma * (x0[:, None] - near)
        delta = delta * (cap / (delta.flatten(2).norm(dim=2) + 1e-8)).clamp(max=1)[..., None, None, None]
        target = (w[..., None, None, None] * (eps[:, None] + delta)).sum(1)
        return ((net(xt, t) - target) ** 2).mean()
    return term


class LoRA(nn.Module):
    """A weight W0 (out, ...) as W0 + (alpha / r) B A, with A (r, fan_in) and B (out, r) trainable and W0 frozen
    (Hu et al. 2022, as a parametrization: the layer itself is unchanged). B starts at 0, so the model starts as it
    was; A as nn.Linear's default initialisation, from a seeded generator."""

    def __init__(self, weight, rank, generator):
        super().__init__()
        out, fan_in = weight.shape[0], weight[0].numel()
        bound = 1 / math.sqrt(fan_in)
        a = (torch.rand((rank, fan_in), generator=generator, device=generator.device) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(weight.device, weight.dtype))
        self.B = nn.Parameter(torch.zeros(out, rank, device=weight.device, dtype=weight.dtype))
        self.scale = 1.0  # alpha = r

    def forward(self, w0):
        return w0 + self.scale * (self.B @ self.A).view_as(w0)


def add_lora(model, rank, seed, device):
    """Adapters on every convolution and linear weight of `model`, in place; only they train. Returns model."""
    g = torch.Generator(device=device).manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", LoRA(m.weight, min(rank, *m.weight.flatten(1).shape), g))
    return model


def merge_lora(model):
    """Fold the adapters into plain weights (W0 + (alpha / r) B A), so the checkpoint is an ordinary UNet."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def unlearn_row(start, schedule, kept, removed, args, device, everything=None):
    """One unlearned model: the start checkpoint's weights, trained on the method's objective. Returns its state."""
    model = build_model(start, "ema").to(device)
    if args.method != "lora":
        state = new_state(model, lr=args.lr, seed=args.seed, device=device)
    else:  # the EMA twin gets the same adapters (a parametrized module cannot be deep-copied); Adam trains them only
        add_lora(model, args.rank, args.seed, device)
        ema = add_lora(build_model(start, "ema").to(device), args.rank, args.seed, device)
        state = new_state(model, lr=args.lr, seed=args.seed, device=device, ema=ema)
        state["optimizer"] = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                              foreach=True)
    terms = objective(args.method, kept, removed, args, device, args.seed, everything)
    train(state, schedule, None, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
          warmup=args.warmup, lr_schedule="cosine", ema_decay=args.ema_decay, masks=_on(start.get("masks"), device),
          progress=False, precision=args.precision, compile=args.compile, channels_last=args.channels_last,
          terms=terms, batches=args.batches)
    if args.method == "lora":
        merge_lora(state["model"]), merge_lora(state["ema"])
    return state


def unlearn(start, kept, removed, *, method="gd", device="cpu", everything=None, **settings):
    """The paper's step with plain arguments: the model `start` (a checkpoint dict, e.g. ddpm.load_checkpoint(path):
    the pruned model for gd) fine-tuned by `method` on the kept images (B, C, H, W in model space, data.to_model_space)
    and away from the removed ones (methods that read them). `settings` are this script's flags by their Python names
    (steps=24, lr=3e-4, batch_size=64, seed=0, ...; `python unlearn.py --help`), the rest its defaults; `everything`
    (all images, the kept mask) for methods that draw from all images (guda). Returns the unlearned checkpoint dict.

        unlearned = unlearn.unlearn(pruned, x0[mask], x0[~mask], steps=24)"""
    args = script_settings(parse_args, ["--ckpt", "-", "--masks", "-", "--out", "-", "--method", method], **settings)
    check_start(method, start, "the start checkpoint")
    schedule = Schedule(**start["schedule"])
    state = unlearn_row(start, schedule, kept.to(device), removed.to(device), args, device, everything)
    return state_to_checkpoint(state, schedule=schedule, args=vars(args), masks=start.get("masks"),
                               passes=len(METHODS[method].objective), train_state=False)


def unlearn_rows(start, schedule, sets, args, device):
    """unlearn_row for several rows at once (train_stack): every row starts from the same weights with the same
    seeds, as unlearn_row starts it. `sets`: [(kept, removed)] per row. Returns their states."""
    model = build_model(start, "ema").to(device)
    stack = stack_states([model] * len(sets), lr=args.lr, seeds=[args.seed] * len(sets), device=device)
    terms = []
    for g, (kept, removed) in enumerate(sets):
        row_terms = objective(args.method, kept, removed, args, device, args.seed)
        stack["generators"][g] = row_terms[0][2]  # the row's first term draws from the row's generator
        terms.append(row_terms)
    train_stack(stack, schedule, None, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                warmup=args.warmup, lr_schedule="cosine", ema_decay=args.ema_decay,
                masks=_on(start.get("masks"), device), precision=args.precision, terms=terms, batches=args.batches)
    return unstack(stack, model)


def _on(masks, device):
    return {k: v.to(device) for k, v in masks.items()} if masks else masks


def main(args):
    device = pick_device(args.device)
    if args.stack > 1 and not METHODS[args.method].stack:
        raise DataError(f"--method {args.method} cannot be stacked (its adapters are not one UNet's weights): "
                        f"use --stack 1")
    start = load_checkpoint(args.ckpt)
    check_start(args.method, start, args.ckpt)
    parent = file_sha256(args.ckpt)
    schedule = Schedule(**start["schedule"])
    ds = dataset_from_args(args)
    masks = load_masks(args.masks, n=len(ds))
    groups = load_groups(args.masks)  # a contributor-level run: rows choose contributors
    rows = parse_range(args.indices, len(masks)) if args.indices else range(len(masks))
    x0_all = to_model_space(ds.images).to(device)
    settings = settings_of(args)
    todo = [i for i in rows if args.force or not check_done(row_path(args.out, i), row_sha256(masks[i]), settings)]
    seconds = 0.0
    passes = len(METHODS[args.method].objective)  # minibatches a step: the training compute recorded
    progress = Progress(len(todo), f"unlearn {os.path.basename(args.masks)}")
    for begin in range(0, len(todo), args.stack):
        group = todo[begin:begin + args.stack]
        sets = []
        for i in group:
            kept = torch.from_numpy(images_of(masks[i], groups)).to(device)
            sets.append((x0_all[kept], x0_all[~kept]))
        everything = (x0_all, kept)  # (the last row's mask: a method drawing from all images is never stacked)
        states = ([unlearn_row(start, schedule, *sets[0], args, device, everything)] if len(group) == 1 else
                  unlearn_rows(start, schedule, sets, args, device))
        for i, state in zip(group, states):
            subset = dict(masks=os.path.basename(args.masks), index=i, sha256=row_sha256(masks[i]))
            save_checkpoint(row_path(args.out, i), state_to_checkpoint(
                state, schedule=schedule, args=vars(args), subset=subset, parent=parent, masks=start.get("masks"),
                passes=passes, train_state=args.keep_train_state))
            seconds += state["seconds"]
            progress.update(f"row {i}", state["seconds"])
    progress.close()
    mean = f", {seconds / len(todo):.1f} s per row" if todo else ""
    print(f"wrote {len(todo)} unlearned models ({args.method}) to {args.out} ({len(rows) - len(todo)} already "
          f"done{mean})")


if __name__ == "__main__":
    run(main, parse_args())
