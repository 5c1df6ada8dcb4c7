"""Train a DDPM (Ho et al. 2020, Algorithm 1) on all training images, or retrain it from scratch on
one row of a mask file (the ground truth the attributions are judged against).

    python train_ddpm.py --data digits --out runs/demo/full.pt
    python train_ddpm.py --data digits --masks runs/x/masks/lds.npy --index 3 --seed 0 \\
        --out runs/x/models/lds/00003-s0.pt
    python train_ddpm.py --data digits --masks runs/x/masks/lds.npy --indices 0:8 --seed 0 \\
        --out runs/x/models/lds --suffix -s0          # rows 0..7 in one process: 00000-s0.pt, ...

A killed run resumes from `<out>.partial` (saved every --ckpt-every steps) and ends with the same
weights as an uninterrupted one. An existing, loadable output is skipped unless --force. A PNG grid
of DDIM samples from the EMA weights is written beside the checkpoint.
"""
import copy
import math
import os
import time

import torch
from tqdm import tqdm

from data import (ArgumentParser, DataError, Progress, add_data_args, add_speed_args, dataset_from_args, fraction,
                  images_of, nonnegative_float, nonnegative_int, parse_range, positive_float, positive_int,
                  row_sha256, run, save_grid, to_model_space, to_uint8)
from runfolder import load_groups, load_masks
from ddpm import (ARCHS, Schedule, UNet, apply_masks, autocast, count_params, ddim_sample, ddpm_loss, draw_t_eps,
                  ema_update, forward_macs, load_checkpoint, pick_device, q_sample, save_checkpoint)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--out", required=True, help="checkpoint to write (with --indices: a folder)")
    p.add_argument("--arch", choices=sorted(ARCHS), default=None,
                   help="named architecture (default: digits for digits, cifar10 otherwise, resized to the data)")
    p.add_argument("--masks", default=None, help="mask file: retrain on one of its rows only")
    p.add_argument("--index", type=nonnegative_int, default=None, help="row of --masks to train on")
    p.add_argument("--indices", default=None, help="rows START:STOP (half-open) of --masks, one model each, in this "
                   "one process: <out>/<row:05d><suffix>.pt")
    p.add_argument("--suffix", default="", help="with --indices: appended to each file name (e.g. -s0 for the seed)")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps (Ho et al.: 800k on CIFAR-10; "
                   "the paper's models: 200k)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="minibatch size (Ho et al.: 128)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (Ho et al.: 2e-4 on CIFAR-10)")
    p.add_argument("--warmup", type=nonnegative_int, default=100,
                   help="linear learning-rate warm-up steps (Ho et al.: 5000)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="after warm-up: cosine decay to 0 (fast short runs) or constant (Ho et al.)")
    p.add_argument("--ema-decay", type=fraction, default=0.999, help="EMA decay of the sampled weights "
                   "(Ho et al.: 0.9999)")
    p.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="gradient norm clip, 0: none "
                   "(Ho et al.: 1.0)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (Ho et al. on CIFAR-10)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial weights, minibatch order and noise")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--ckpt-every", type=nonnegative_int, default=500,
                   help="save <out>.partial every this many steps (0: never)")
    p.add_argument("--grid", type=nonnegative_int, default=100,
                   help="DDIM samples in the PNG beside the checkpoint (0: none)")
    p.add_argument("--ddim-steps", type=positive_int, default=100, help="DDIM steps for the grid (the paper: 100)")
    add_speed_args(p, "with --indices: train this many rows together (vmap over stacked weights; a GPU gains, "
                   "2 CPU cores about break even); each row's checkpoint is what it would be alone")
    p.add_argument("--recipe-from", default=None, help="a full model's checkpoint: train its architecture and noise "
                   "schedule with the recipe it records (steps, batch size, lr, ...: what made it), or, for an imported "
                   "model that records none, with this command line's")
    p.add_argument("--init-only", action="store_true", help="write the model at its initialisation (seeded), "
                   "untrained: the model that saw no data, v(empty) of contributor Shapley values")
    p.add_argument("--keep-train-state", action="store_true", help="with --masks: keep the trained (non-EMA) weights "
                   "in each finished row's checkpoint too (by default it keeps the EMA weights the later stages read: "
                   "half the size; a killed row resumes from its .partial file, which keeps everything)")
    p.add_argument("--force", action="store_true", help="retrain even if --out exists")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The training loop, shared by train_ddpm.py, prune.py (fine-tune) and unlearn.py

def lr_at(step, *, lr, warmup, steps, schedule):
    """Linear warm-up, then constant or cosine decay to 0 at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class Batches:
    """Minibatch indices into a set of n images, drawn from `generator`: "random" draws each minibatch with
    replacement (train_ddpm.py's training); "epoch" takes them in turn from a shuffled order, reshuffled when it
    runs out, so that every image is seen once an epoch (a DataLoader with shuffle=True, as the paper's authors
    unlearn): over a short unlearning run, how often each image of the subset is seen then hardly varies."""

    def __init__(self, n, batch_size, generator, mode="random"):
        if mode not in ("random", "epoch"):
            raise ValueError(f"unknown batch mode {mode!r}")
        self.n, self.batch_size, self.g, self.mode = n, batch_size, generator, mode
        self.order = torch.empty(0, dtype=torch.long, device=generator.device)

    def next(self):
        if self.mode == "random":
            return torch.randint(0, self.n, (self.batch_size,), generator=self.g, device=self.g.device)
        while len(self.order) < self.batch_size:
            self.order = torch.cat([self.order, torch.randperm(self.n, generator=self.g, device=self.g.device)])
        idx, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return idx


def train(state, schedule, x0_all, *, steps, batch_size, lr, warmup, lr_schedule, ema_decay, grad_clip=1.0,
          hflip=False, masks=None, save_every=0, save=None, desc="train", progress=True, precision="fp32",
          compile=False, channels_last=False, terms=None, batches="random"):
    """Run Algorithm 1 from state["step"] to `steps`, in place on `state`: model, ema, optimizer,
    generator (minibatch order and noise), step, seconds. Minibatches are drawn from x0_all (N, C, H, W) in
    model space (`batches`: "random" with replacement, or "epoch": see Batches). With `masks` (unstructured
    pruning), pruned weights are re-zeroed after every update. `save(state)` is called every `save_every` steps.
    `terms` (unlearning methods) replaces the one objective by a weighted sum: [(x0 set, weight, generator)], each
    term's minibatch, t and eps drawn from its own generator, loss = sum weight x DDPM loss (a negative weight
    ascends); a term's optional fourth entry replaces the DDPM loss by loss(net, schedule, x0, generator, index),
    index the minibatch's positions in its set (GUDA's terms); the default is [(x0_all, 1, state's generator)].
    GPU options: `precision` "bf16" (autocast of the forward pass), `compile` (torch.compile of the
    forward pass), `channels_last` memory format. Nothing in the loop waits for the device except the
    progress bar's loss, read every 50 steps only when the bar is shown."""
    model, ema, opt, g = state["model"], state["ema"], state["optimizer"], state["generator"]
    terms = terms or [(x0_all, 1.0, g)]
    device = terms[0][0].device
    if channels_last:
        model.to(memory_format=torch.channels_last)
        terms = [(x.contiguous(memory_format=torch.channels_last), *rest) for x, *rest in terms]
    draws = [Batches(len(x), batch_size, gen, batches) for x, _, gen, *_ in terms]
    net = torch.compile(model) if compile else model  # shares model's weights
    model.train()
    # disable=None: no bar when the output is not a terminal (pipeline logs)
    bar = tqdm(range(state["step"], steps), desc=desc, disable=None if progress else True, leave=False,
               mininterval=2.0, initial=state["step"], total=steps)
    t_start = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, steps=steps, schedule=lr_schedule)
        loss = 0.0
        for (x_set, weight, gen, *loss_fn), batch in zip(terms, draws):
            index = batch.next().to(device)
            x0 = x_set[index]
            if hflip:
                flip = torch.rand(batch_size, generator=gen, device=gen.device).to(device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
            with autocast(precision, device):
                term = loss_fn[0](net, schedule, x0, gen, index) if loss_fn else ddpm_loss(net, schedule, x0, gen)
            loss = loss + weight * term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
        opt.step()
        if masks:
            apply_masks(model, masks)
        ema_update(ema, model, ema_decay, step)
        state["step"] = step + 1
        if not bar.disable and step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if save and save_every and state["step"] % save_every == 0 and state["step"] < steps:
            state["seconds"] += time.perf_counter() - t_start
            t_start = time.perf_counter()
            save(state)
    state["seconds"] += time.perf_counter() - t_start
    model.eval()
    return state


def stack_states(models, *, lr, seeds, device):
    """G models of one architecture as one stacked state for train_stack(): each parameter becomes one
    (G, ...) leaf tensor (torch.func.stack_module_state), each model keeps its own generator."""
    params, buffers = torch.func.stack_module_state(models)
    ema = {k: v.detach().clone() for k, v in params.items()}
    return dict(template=copy.deepcopy(models[0]).to("meta"), params=params, buffers=buffers, ema=ema,
                optimizer=torch.optim.Adam(list(params.values()), lr=lr, foreach=True),
                generators=[torch.Generator(device=device).manual_seed(s) for s in seeds], step=0, seconds=0.0)


def train_stack(stack, schedule, subsets, *, steps, batch_size, lr, warmup, lr_schedule, ema_decay, grad_clip=1.0,
                hflip=False, masks=None, precision="fp32", terms=None, batches="random"):
    """train() for G models at once (vmap over stacked weights): model g trains on subsets[g] only and
    draws its minibatches and noise from its own generator in train()'s order, so each model ends as
    it would alone, up to float rounding (with dropout > 0 the dropout masks are drawn differently).
    `terms[g]`, as train()'s terms for model g (every model the same number of terms and weights), replaces
    subsets[g]."""
    params, buffers, opt, gens = stack["params"], stack["buffers"], stack["optimizer"], stack["generators"]
    G = len(gens)
    terms = terms or [[(subsets[g], 1.0, gens[g])] for g in range(G)]
    weights = [w for _, w, _ in terms[0]]
    draws = [[Batches(len(x), batch_size, gen, batches) for x, _, gen in model_terms] for model_terms in terms]
    template = stack["template"]

    def eps_theta(p, b, xt, t):  # one model: (B, C, H, W), (B,) -> (B, C, H, W)
        return torch.func.functional_call(template, (p, b), (xt, t))

    batched = torch.func.vmap(eps_theta, randomness="different")
    names = list(params)
    t_start = time.perf_counter()
    for step in range(stack["step"], steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, steps=steps, schedule=lr_schedule)
        loss = 0.0
        for k, weight in enumerate(weights):
            x0s, ts, epss = [], [], []
            for g in range(G):  # the draws of train() and ddpm_loss(), in their order
                x_set, _, gen = terms[g][k]
                x0 = x_set[draws[g][k].next().to(x_set.device)]
                if hflip:
                    flip = torch.rand(batch_size, generator=gen, device=gen.device).to(x0.device) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
                t, eps = draw_t_eps(schedule, x0, gen)
                ts.append(t)
                epss.append(eps)
                x0s.append(x0)
            x0, t, eps = torch.stack(x0s), torch.stack(ts), torch.stack(epss)  # (G, B, C, H, W), (G, B), (G, B, ...)
            xt = q_sample(schedule, x0.flatten(0, 1), t.flatten(), eps.flatten(0, 1)).view_as(x0)
            with autocast(precision, x0.device):
                pred = batched(params, buffers, xt, t)
            term = ((pred.float() - eps) ** 2).mean(dim=(1, 2, 3, 4))  # (G,): each model's DDPM loss
            loss = loss + weight * term
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # the models share no weights, so each gets its own loss's gradient
        if grad_clip:  # clip_grad_norm_ per model: the norm over that model's slice of every parameter
            norms = torch.stack([params[k].grad.reshape(G, -1).pow(2).sum(1) for k in names]).sum(0).sqrt()
            coef = (grad_clip / (norms + 1e-6)).clamp(max=1.0)
            for k in names:
                params[k].grad.mul_(coef.view(-1, *[1] * (params[k].dim() - 1)))
        opt.step()
        with torch.no_grad():
            if masks:
                for name, mask in masks.items():
                    params[name].mul_(mask.to(params[name]))  # broadcast over the G models
            d = min(ema_decay, (1 + step) / (10 + step))  # ema_update's warmed-up decay
            torch._foreach_lerp_([stack["ema"][k] for k in names], [params[k].detach() for k in names], 1 - d)
        stack["step"] = step + 1
    stack["seconds"] += time.perf_counter() - t_start
    return stack


def unstack(stack, model):
    """The G models of a stack as train() states (model, ema, step, seconds: the stack's wall time / G)."""
    G = len(stack["generators"])
    states = []
    for g in range(G):
        m, e = copy.deepcopy(model), copy.deepcopy(model)
        m.load_state_dict({**{k: v[g].detach() for k, v in stack["params"].items()},
                           **{k: v[g] for k, v in stack["buffers"].items()}})
        e.load_state_dict({**{k: v[g] for k, v in stack["ema"].items()},
                           **{k: v[g] for k, v in stack["buffers"].items()}})
        states.append(dict(model=m.eval(), ema=e.eval(), step=stack["step"], seconds=stack["seconds"] / G))
    return states


def new_state(model, *, lr, seed, device, ema=None):
    """Fresh optimizer and generator for `model`; the EMA starts as a copy of the model."""
    g = torch.Generator(device=device).manual_seed(seed)
    return dict(model=model, ema=ema if ema is not None else copy.deepcopy(model),
                # foreach: one fused update for all parameters (torch's CPU default loops over them)
                optimizer=torch.optim.Adam(model.parameters(), lr=lr, foreach=True), generator=g, step=0,
                seconds=0.0)


def training_macs(macs, steps, batch_size, passes=1):
    """Training compute of `steps` steps of `passes` minibatches of `batch_size` images each: forward and backward,
    counted as 3 x the forward MACs per image (the backward pass costs about twice the forward)."""
    return 3 * macs * batch_size * steps * passes


def state_to_checkpoint(state, *, schedule, args, subset=None, parent=None, masks=None, partial=False, passes=1,
                        train_macs=None, train_state=True):
    """The checkpoint dict of DESIGN.md; a partial one also carries what resuming needs. `macs` (forward MACs per
    image) and `train_macs` (the compute of this checkpoint's own training: its steps x batch x `passes`
    minibatches a step) let budgets be counted in compute that no clock changes. train_state=False keeps only
    what the later stages read, the EMA weights and the metadata (`model` is None): a finished per-row model at
    half the size (the cifar10 preset's 374 models: ~76 GB -> ~38 GB)."""
    macs = forward_macs(state["model"])
    ckpt = dict(model=state["model"].state_dict() if train_state or partial else None, ema=state["ema"].state_dict(),
                config=dict(state["model"].config), schedule=schedule.as_dict(), step=state["step"],
                seconds=state["seconds"], subset=subset, parent=parent, masks=masks, args=dict(args), macs=macs,
                train_macs=train_macs if train_macs is not None else
                training_macs(macs, state["step"], args.get("batch_size") or 0, passes))
    if partial:
        ckpt.update(optimizer=state["optimizer"].state_dict(), generator=state["generator"].get_state(),
                    torch_rng=torch.get_rng_state())
    return ckpt


def restore_state(state, ckpt):
    """Continue a partial run exactly where it stopped."""
    state["model"].load_state_dict(ckpt["model"])
    state["ema"].load_state_dict(ckpt["ema"])
    state["optimizer"].load_state_dict(ckpt["optimizer"])
    state["generator"].set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    state["step"], state["seconds"] = ckpt["step"], ckpt["seconds"]


@torch.no_grad()
def sample_grid(model, schedule, path, *, n, ddim_steps, seed=0, device="cpu"):
    """DDIM samples from fixed noise, saved as a PNG grid."""
    model.eval()
    shape = (n, model.config["in_channels"], model.config["resolution"], model.config["resolution"])
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(shape, generator=g)
    x = ddim_sample(model, schedule, noise=noise.to(device), steps=ddim_steps, device=device)
    save_grid(to_uint8(x), path)


def arch_config(arch, ds):
    """The named architecture, or the cifar10 one resized to the data's channels and resolution."""
    name = arch or ("digits" if ds.name == "digits" else "cifar10")
    if name not in ARCHS:
        raise DataError(f"unknown architecture {name!r}: use one of {', '.join(sorted(ARCHS))}")
    config = dict(ARCHS[name])
    c, h = ds.images.shape[1], ds.images.shape[2]
    if (config["in_channels"], config["resolution"]) != (c, h):
        if h < 2 ** (len(config["ch_mult"]) - 1) * 2:
            raise DataError(f"images of side {h} are too small for the {name} architecture")
        config.update(in_channels=c, resolution=h)
    return config


def subset_images(ds, masks, index, masks_path):
    """The training images (all, or one mask row's, through its contributors when the run has groups)
    and the checkpoint's `subset` record."""
    if masks is None:
        return ds.images, None
    row = masks[index]
    return (ds.images[images_of(row, load_groups(masks_path))],
            dict(masks=os.path.basename(masks_path), index=index, sha256=row_sha256(row)))


def existing_done(path, subset):
    """True if `path` is a finished checkpoint for the same subset; refuse one for another subset."""
    if not os.path.exists(path):
        return False
    ckpt = load_checkpoint(path)
    if subset is not None and (ckpt.get("subset") or {}).get("sha256") != subset["sha256"]:
        raise DataError(f"{path} was trained on another subset than row {subset['index']} of {subset['masks']} "
                        f"(the mask file changed?); use --force to retrain")
    return True


def jobs_of(args, ds):
    """[(row index or None, output path)]: one model on all data, one mask row, or a range of rows.
    Every argument is checked here, before anything is trained or written."""
    if args.masks is None:
        if args.index is not None or args.indices is not None:
            raise DataError("--index and --indices need --masks")
        return None, [(None, args.out)]
    if args.init_only:
        raise DataError("--init-only writes one untrained model: not with --masks")
    masks = load_masks(args.masks, n=len(ds))
    if (args.index is None) == (args.indices is None):
        raise DataError("with --masks give exactly one of --index N and --indices START:STOP")
    if args.index is not None:
        if args.index >= len(masks):
            raise DataError(f"--index {args.index} is out of range for {args.masks} ({len(masks)} rows)")
        return masks, [(args.index, args.out)]
    if os.path.isfile(args.out):
        raise DataError(f"with --indices, --out is a folder, but {args.out} is a file")
    return masks, [(i, os.path.join(args.out, f"{i:05d}{args.suffix}.pt"))
                   for i in parse_range(args.indices, len(masks))]


def train_one(args, ds, masks, index, out, schedule, config, device):
    """Train (or resume) one model and write its checkpoint; returns its training seconds."""
    images, subset = subset_images(ds, masks, index, args.masks)
    torch.manual_seed(args.seed)  # initial weights and dropout
    model = UNet(**config).to(device)
    state = new_state(model, lr=args.lr, seed=args.seed, device=device)
    partial = out + ".partial"
    if os.path.exists(partial) and not args.force:
        ckpt = load_checkpoint(partial)
        if ckpt.get("subset") == subset and ckpt["args"].get("seed") == args.seed and ckpt["args"].get("steps") == args.steps:
            restore_state(state, ckpt)
            print(f"resuming {partial} at step {state['step']}")
    x0_all = to_model_space(images).to(device)
    run_args = dict(vars(args), out=out, index=index)  # the checkpoint records its own row and path

    def save(st):
        save_checkpoint(partial, state_to_checkpoint(st, schedule=schedule, args=run_args, subset=subset, partial=True))

    if not args.init_only:
        train(state, schedule, x0_all, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
              lr_schedule=args.lr_schedule, ema_decay=args.ema_decay, grad_clip=args.grad_clip, hflip=args.hflip,
              save_every=args.ckpt_every, save=save, desc=os.path.basename(out), progress=index is None,
              precision=args.precision, compile=args.compile, channels_last=args.channels_last)
    save_checkpoint(out, state_to_checkpoint(state, schedule=schedule, args=run_args, subset=subset,
                                             train_state=subset is None or args.keep_train_state))
    if os.path.exists(partial):
        os.remove(partial)
    if args.grid:
        sample_grid(state["ema"], schedule, os.path.splitext(out)[0] + ".png", n=args.grid,
                    ddim_steps=args.ddim_steps, seed=args.seed, device=device)
    return state["seconds"], count_params(model), len(images)


def train_group(args, ds, masks, group, schedule, config, device):
    """Several rows from scratch at once (train_stack): the same initial weights and seed as train_one
    gives each; no partial checkpoints (a killed group starts again; finished rows stay)."""
    torch.manual_seed(args.seed)  # initial weights, as train_one draws them for every row
    model = UNet(**config).to(device)
    subsets = [subset_images(ds, masks, i, args.masks) for i, _ in group]
    stack = stack_states([model] * len(group), lr=args.lr, seeds=[args.seed] * len(group), device=device)
    train_stack(stack, schedule, [to_model_space(images).to(device) for images, _ in subsets], steps=args.steps,
                batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, lr_schedule=args.lr_schedule,
                ema_decay=args.ema_decay, grad_clip=args.grad_clip, hflip=args.hflip, precision=args.precision)
    results = []
    for (i, out), state, (images, subset) in zip(group, unstack(stack, model), subsets):
        run_args = dict(vars(args), out=out, index=i)
        save_checkpoint(out, state_to_checkpoint(state, schedule=schedule, args=run_args, subset=subset,
                                                 train_state=args.keep_train_state))
        if args.grid:
            sample_grid(state["ema"], schedule, os.path.splitext(out)[0] + ".png", n=args.grid,
                        ddim_steps=args.ddim_steps, seed=args.seed, device=device)
        results.append((state["seconds"], count_params(model), len(images)))
    return results


RECIPE = ("steps", "batch_size", "lr", "warmup", "lr_schedule", "ema_decay", "grad_clip", "hflip")


def recipe_from(args, path, ds):
    """(UNet config, Schedule) of the model at `path`, and its training recipe copied into args where the checkpoint
    records one: retraining with what made a model (an imported one records none: the command line's recipe)."""
    ckpt = load_checkpoint(path, mmap=True)
    if ckpt["config"].get("widths") or ckpt.get("masks"):
        raise DataError(f"--recipe-from {path} is pruned: give the full model")
    config = dict(ckpt["config"], widths=None)
    if (config["in_channels"], config["resolution"]) != tuple(ds.images.shape[1:3]):
        raise DataError(f"--recipe-from {path} models {config['in_channels']}x{config['resolution']}^2 images, the "
                        f"data has {ds.images.shape[1]}x{ds.images.shape[2]}^2")
    recorded = {k: v for k, v in (ckpt.get("args") or {}).items() if k in RECIPE}
    if recorded:
        for k, v in recorded.items():
            setattr(args, k, v)
    else:
        print(f"{path} records no training recipe (an imported model): retraining with the command line's "
              f"({args.steps} steps, batch {args.batch_size}, lr {args.lr:g})")
    return config, Schedule(**ckpt["schedule"])


def main(args):
    device = pick_device(args.device)
    ds = dataset_from_args(args)
    masks, jobs = jobs_of(args, ds)
    if args.recipe_from:
        config, schedule = recipe_from(args, args.recipe_from, ds)
    else:
        config, schedule = arch_config(args.arch, ds), Schedule()  # T = 1000, beta 1e-4 .. 0.02 (Ho et al., Sec. 4)
    if args.ddim_steps > schedule.T:
        raise DataError(f"--ddim-steps must lie in 1..{schedule.T}, got {args.ddim_steps}")
    todo = [(i, out) for i, out in jobs if args.force or not existing_done(out, subset_images(ds, masks, i, args.masks)[1])]
    if not todo:
        print(f"skip: {args.out if len(jobs) == 1 else f'all {len(jobs)} models in {args.out}'} exist "
              f"(use --force to retrain)")
        return
    per_row = len(jobs) > 1 or args.indices  # a per-row stage's share (one row, too) shows each finished model
    progress = Progress(len(todo), f"train {os.path.basename(args.masks or 'all data')}") if per_row else None
    total = 0.0
    for start in range(0, len(todo), args.stack):
        group = todo[start:start + args.stack]
        if len(group) == 1:
            results = [train_one(args, ds, masks, *group[0], schedule, config, device)]
        else:
            results = train_group(args, ds, masks, group, schedule, config, device)
        for (i, _), (seconds, params, n_images) in zip(group, results):
            total += seconds
            if progress:
                progress.update(f"row {i}", seconds)
    if progress:
        progress.close()
    where = todo[0][1] if len(jobs) == 1 else f"{len(todo)} models to {args.out} ({len(jobs) - len(todo)} already done)"
    print(f"wrote {where}: {params / 1e6:.3f}M parameters, {0 if args.init_only else args.steps} steps on {n_images} images, "
          f"{total / len(todo):.1f} s each")


if __name__ == "__main__":
    run(main, parse_args())
