"""The GPU path, measured in one run: ms per training step of the cifar10 UNet (Ho et al., 35.7M
parameters; full and structurally pruned at ratio 0.3) in fp32, bf16 and bf16 + torch.compile;
DDIM-100 sampling in images per second; sparsified unlearning in model-steps per second with G digits
models trained one at a time (G = 1) or stacked (train_ddpm.train_stack, vmap over stacked weights).

    python -m bench.gpu                  # on CUDA: batch 128, DDIM-100 on 256 images, G = 1, 8, 64
    python -m bench.gpu --small          # CPU-sized (the default without CUDA): batch 2, DDIM-10, G = 1, 4, 8

The issue's goals on an H200: a training step <= 30 ms at batch 128, DDIM-100 >= 300 images/s,
stacked unlearning >= 10x the model-steps/s of one model at a time. On CPU the figures only show that
every path runs; bf16 and compile rows are skipped there unless --all-on-cpu (a CPU without bf16
units emulates it, ~16x slower than fp32 here; inductor compiles for minutes).
"""
import argparse
import copy
import time

import torch

from data import run
from ddpm import ARCHS, Schedule, UNet, autocast, count_params, ddim_sample, pick_device
from prune import PAPER_RATIO, prune_structured
from train_ddpm import new_state, stack_states, train, train_stack


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true", help="CPU sizes (default when there is no CUDA)")
    p.add_argument("--all-on-cpu", action="store_true", help="also time bf16 and torch.compile on the CPU")
    p.add_argument("--arch", default="cifar10", choices=sorted(ARCHS), help="the architecture of the training and "
                   "sampling rows (the tests run digits-small)")
    return p.parse_args(argv)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ms_per_step(model, schedule, batch, steps, warmup, device, precision="fp32", compile=False):
    """ms per step of train() (minibatch, loss, backward, clip, Adam, EMA) after `warmup` steps."""
    x0 = torch.randn(max(batch, 256), *batch_shape(model), device=device).clamp(-1, 1)
    state = new_state(model, lr=1e-4, seed=0, device=device)
    kwargs = dict(batch_size=batch, lr=1e-4, warmup=1, lr_schedule="constant", ema_decay=0.999, progress=False,
                  precision=precision, compile=compile, channels_last=device.startswith("cuda"))
    train(state, schedule, x0, steps=warmup, **kwargs)  # compilation and allocator warm-up
    sync(device)
    t0 = time.perf_counter()
    train(state, schedule, x0, steps=warmup + steps, **kwargs)
    sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def batch_shape(model):
    c = model.config
    return (c["in_channels"], c["resolution"], c["resolution"])


def images_per_second(model, schedule, n, ddim_steps, device, precision):
    noise = torch.randn(n, *batch_shape(model), generator=torch.Generator().manual_seed(0)).to(device)
    model.eval()
    with autocast(precision, device):
        ddim_sample(model, schedule, noise=noise[:min(n, 8)], steps=2, device=device)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        ddim_sample(model, schedule, noise=noise, steps=ddim_steps, device=device)
        sync(device)
    return n / (time.perf_counter() - t0)


def model_steps_per_second(G, schedule, steps, device, stacked):
    """Unlearning of G pruned digits models on G subsets: stacked, or one after the other."""
    torch.manual_seed(0)
    pruned = prune_structured(UNet(**ARCHS["digits"]), PAPER_RATIO).to(device)
    subsets = [torch.randn(898, 1, 8, 8, device=device).clamp(-1, 1) for _ in range(G)]
    kwargs = dict(batch_size=64, lr=3e-4, warmup=10, lr_schedule="cosine", ema_decay=0.999)
    sync(device)
    t0 = time.perf_counter()
    if stacked:
        stack = stack_states([pruned] * G, lr=3e-4, seeds=[0] * G, device=device)
        train_stack(stack, schedule, subsets, steps=steps, **kwargs)
    else:
        for g in range(G):
            state = new_state(copy.deepcopy(pruned), lr=3e-4, seed=0, device=device)
            train(state, schedule, subsets[g], steps=steps, progress=False, **kwargs)
    sync(device)
    return G * steps / (time.perf_counter() - t0)


def main(args):
    device = pick_device(args.device)
    small = args.small or not device.startswith("cuda")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" on a GPU means TF32 matmuls, as the peers ran it
        torch.backends.cudnn.allow_tf32 = True
    batch, steps, warmup = (2, 2, 1) if small else (128, 30, 10)
    n_images, ddim_steps = (2, 10) if small else (256, 100)
    groups, unlearn_steps = ((1, 4, 8), 5) if small else ((1, 8, 64), 50)
    every = device.startswith("cuda") or args.all_on_cpu
    schedule = Schedule()
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {'small (CPU) sizes' if small else 'full sizes'}")
    print("| what | setting | figure |")
    print("| --- | --- | --- |")
    torch.manual_seed(0)
    full = UNet(**ARCHS[args.arch]).to(device)
    pruned = prune_structured(UNet(**ARCHS[args.arch]).to(device), PAPER_RATIO)
    for label, model in (("full", full), ("pruned 0.3", pruned)):
        params = f"{count_params(model) / 1e6:.1f}M"
        for precision, compile in (("fp32", False), ("bf16", False), ("bf16", True)):
            if precision != "fp32" and not every:
                print(f"| train step, {args.arch} UNet {label} ({params}) | batch {batch}, {precision}"
                      f"{' + compile' if compile else ''} | skipped on CPU (--all-on-cpu) |")
                continue
            ms = ms_per_step(model, schedule, batch, steps, warmup, device, precision, compile)
            print(f"| train step, {args.arch} UNet {label} ({params}) | batch {batch}, {precision}"
                  f"{' + compile' if compile else ''} | {ms:.1f} ms |", flush=True)
    for precision in ("fp32", "bf16") if every else ("fp32",):
        ips = images_per_second(full, schedule, n_images, ddim_steps, device, precision)
        print(f"| DDIM-{ddim_steps} sampling, {args.arch} UNet full | {n_images} images, {precision} | {ips:.1f} images/s |",
              flush=True)
    one = model_steps_per_second(1, schedule, unlearn_steps, device, stacked=False)
    print(f"| unlearning, pruned digits UNet | G = 1, one at a time | {one:.0f} model-steps/s |", flush=True)
    for G in groups[1:]:
        rate = model_steps_per_second(G, schedule, unlearn_steps, device, stacked=True)
        print(f"| unlearning, pruned digits UNet | G = {G} stacked | {rate:.0f} model-steps/s ({rate / one:.1f}x) |",
              flush=True)


if __name__ == "__main__":
    run(main, parse_args())
