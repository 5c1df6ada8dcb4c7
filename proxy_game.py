"""SurrogateSHAP's proxy game (the seed authors' lab, 2026) at the contributor level: coalitions valued without any
retraining or unlearning, by sampling one model conditioned on the contributor id.

    python proxy_game.py --run runs/default --data digits --corrupt 0.15 --fault blur,duplicate,watermark
    python proxy_game.py --run runs/default ... --rows 32        # the first 32 coalitions only

1. One model conditioned on the contributor id of each training image (groups.npy), trained once with the full
   model's recipe (what its checkpoint records) and seed, each id replaced by "no id" with probability
   --id-dropout, so that one network is both conditional and unconditional (classifier-free guidance, Ho and
   Salimans 2022): <run>/proxy.pt. SurrogateSHAP conditions on classes or prompts; our contributors are neither,
   so their ids are the labels.
2. Each coalition S (the rows of masks/unlearn.npy, the unlearned models' subsets, and the full coalition) is
   valued by as many samples of that model as the full model's behaviours were measured on (the same DDIM steps
   too), from compute_fid's shared initial noise, the ids of S's contributors given in proportion to their images
   (largest remainders), each denoising step guided as
   eps_u + w (eps_c - eps_u) with w = --guidance (SurrogateSHAP's 1.4); the samples' behaviours are measured as
   compute_fid.py measures a model's: behaviors/proxy.npz (one entry per row) and behaviors/proxy_full.npz. Only
   the sampled behaviours: loss and elbo are a model's error on the reference images, which a set of ids is not.

baselines.py's `proxy` fits SurrogateSHAP's trees (fit_datamodel.fit_surrogate_shap) to these values. At the image
level the game does not apply (an id per image asks the model to memorise which image each id names): the script
refuses a run without contributors. Its compute: one training, and per coalition a sampling pass at twice a
model's cost (the guided and the unguided prediction).
"""
import hashlib
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import compute_fid
import runfolder
from data import (ArgumentParser, DataError, Progress, add_data_args, dataset_from_args, nonnegative_int,
                  positive_int, row_sha256, run, save_npz, to_model_space)
from ddpm import (Schedule, UNet, build_model, ddim_sample, draw_t_eps, file_sha256, load_checkpoint, pick_device,
                  q_sample, save_checkpoint)
from features import features_of
from metrics import BEHAVIORS, behavior_table
from runfolder import behavior_keys, load_behaviors, load_groups, load_masks
from train_ddpm import RECIPE, new_state, state_to_checkpoint, train


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--run", required=True, help="run folder: full.pt (its recipe), masks/unlearn.npy and groups.npy "
                   "(the coalitions and the ids), behaviors/full.npz (the behaviours and how they were sampled)")
    p.add_argument("--rows", type=nonnegative_int, default=0, help="value the first N coalitions of masks/unlearn.npy "
                   "(0: all)")
    p.add_argument("--guidance", type=float, default=1.4, help="classifier-free guidance w: eps_u + w (eps_c - eps_u) "
                   "(SurrogateSHAP samples with 1.4; 1: the conditional model alone)")
    p.add_argument("--id-dropout", type=float, default=0.1, help="the probability that a training image's id is "
                   "replaced by 'no id' (the unconditional model guidance needs)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="samples per forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="retrain the conditional model and value every coalition "
                   "again")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The conditional model

def id_loss(ids, dropout):
    """train()'s loss for the conditional model: the DDPM loss (t and eps drawn as ddpm_loss draws them) of each image
    given its id, the id replaced by "no id" (the last label) with probability `dropout`."""
    def term(net, schedule, x0, generator, index):
        t, eps = draw_t_eps(schedule, x0, generator)
        y = ids[index]
        dropped = torch.rand(y.shape, generator=generator, device=x0.device) < dropout
        y = torch.where(dropped, net.label_emb.num_embeddings - 1, y)
        return F.mse_loss(net(q_sample(schedule, x0, t, eps), t, y), eps)
    return term


def train_conditional(full, ds, groups, dropout, device):
    """The id-conditioned model's checkpoint: the full model's architecture, schedule, recipe and seed."""
    recipe = {k: v for k, v in (full.get("args") or {}).items() if k in RECIPE}
    missing = [k for k in RECIPE if k not in recipe]
    if missing:
        raise DataError(f"the full model records no training recipe ({', '.join(missing)} missing: an imported "
                        f"model?): the proxy game trains with the full model's")
    seed = int((full.get("args") or {}).get("seed", 0))
    torch.manual_seed(seed)
    model = UNet(**dict(full["config"], widths=None, num_labels=int(groups.max()) + 1)).to(device)
    schedule = Schedule(**full["schedule"])
    state = new_state(model, lr=recipe["lr"], seed=seed, device=device)
    x0 = to_model_space(ds.images).to(device)
    term = (x0, 1.0, state["generator"], id_loss(torch.as_tensor(groups, device=device), dropout))
    train(state, schedule, None, steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"],
          warmup=recipe["warmup"], lr_schedule=recipe["lr_schedule"], ema_decay=recipe["ema_decay"],
          grad_clip=recipe["grad_clip"], hflip=recipe["hflip"], desc="proxy model", terms=[term])
    return state_to_checkpoint(state, schedule=schedule, args=dict(recipe, seed=seed, id_dropout=dropout,
                                                                   groups_sha256=groups_sha256(groups)),
                               train_state=False)


def groups_sha256(groups):
    return hashlib.sha256(np.asarray(groups, np.int64).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The game: a coalition's samples and their behaviours

def coalition_ids(members, sizes, n):
    """n ids of the coalition's contributors (an index array), each in proportion to its images (largest
    remainders, ties to the lower id), in id order."""
    members = np.sort(np.asarray(members))
    share = sizes[members] / sizes[members].sum() * n
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[:n - counts.sum()]] += 1
    return np.repeat(members, counts)


@torch.no_grad()
def sample_coalition(model, schedule, noise, ids, guidance, steps, batch_size, device):
    """DDIM samples from `noise`, sample i given id ids[i], each step's prediction guided: eps_u + w (eps_c - eps_u),
    the conditional and the unconditional prediction from one forward pass of both."""
    model.eval()
    none = model.label_emb.num_embeddings - 1
    out = []
    for i in range(0, len(noise), batch_size):
        y = torch.as_tensor(ids[i:i + batch_size], device=device)

        def eps_theta(x, t, y=y):
            cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, none)])).chunk(2)
            return uncond + guidance * (cond - uncond)
        out.append(ddim_sample(eps_theta, schedule, noise=noise[i:i + batch_size].to(device), steps=steps,
                               device=device).float().cpu())
    return torch.cat(out).clamp(-1, 1)  # as compute_fid's samples


def measurer(args, run_dir, full_beh):
    """compute_fid's arguments and plan for the run's sampled behaviours, with the settings its full model was
    measured with (samples, DDIM steps, features, reference set): what every coalition's samples are measured
    against. Cheap; the ModelCache they build (feature network, reference statistics) is not, so main builds it
    only when there is something to value."""
    keys = [k for k in behavior_keys(full_beh) if BEHAVIORS[k].source == "samples"]
    if not keys:
        raise DataError("the run measured no sampled behaviour: the proxy game values coalitions by their samples")
    argv = ["--data", args.data, "--models", runfolder.checkpoint(run_dir, "full"), "--out",
            runfolder.behaviors(run_dir, "proxy"), "--n-samples", str(int(full_beh["n_samples"])), "--ddim-steps",
            str(int(full_beh["ddim_steps"])), "--features", str(full_beh["features"]), "--behaviors", ",".join(keys),
            "--device", args.device]
    if str(full_beh.get("ref_data", "")) not in ("", args.data):
        argv += ["--ref-data", str(full_beh["ref_data"])]
    cargs = compute_fid.parse_args([str(a) for a in argv])
    return cargs, compute_fid.plan(cargs)


def value(cache, x):
    """{behaviour: value} of a set of samples, as compute_fid.py measures a model's."""
    feats, logits = features_of(cache.extract, x, cache.args.batch_size)
    sample = compute_fid.sampled_values(feats, logits, cache.num_classes, cache.knn, cache.ref_key)
    return compute_fid.model_values(cache, None, sample, {}, None)


def write(path, pool, cache, rows, values, extra):
    out = {("class_share" if k == "class" else k): np.asarray(v, np.float64) for k, v in values.items()}
    save_npz(path, **{k: np.asarray(v) for k, v in rows.items()}, **out, behaviors=json.dumps(pool.keys),
             behavior_table=json.dumps(behavior_table(pool.keys)), features=cache.meta["kind"],
             n_samples=cache.args.n_samples, ddim_steps=cache.args.ddim_steps, method="proxy-game", **extra)


def main(args):
    run_dir, device = args.run, pick_device(args.device)
    ds = dataset_from_args(args)
    if not os.path.exists(runfolder.masks(run_dir, "unlearn")):
        raise DataError(f"{runfolder.masks(run_dir, 'unlearn')} not found: the proxy game values the coalitions of a "
                        f"run's masks stage (bash run_pipeline.sh)")
    groups = load_groups(runfolder.masks(run_dir, "unlearn"), n=len(ds))
    if groups is None:
        raise DataError("the proxy game values coalitions of contributors: this run attributes images (no groups.npy)")
    masks = load_masks(runfolder.masks(run_dir, "unlearn"), n=len(ds))
    full_path = runfolder.checkpoint(run_dir, "full")
    full_beh = load_behaviors(runfolder.behaviors(run_dir, "full"))
    proxy_path = runfolder.checkpoint(run_dir, "proxy")
    if args.force or not os.path.exists(proxy_path):
        save_checkpoint(proxy_path, train_conditional(load_checkpoint(full_path), ds, groups, args.id_dropout, device))
    proxy = load_checkpoint(proxy_path)
    if proxy["args"].get("groups_sha256") != groups_sha256(groups):
        raise DataError(f"{proxy_path} was trained on other contributors than groups.npy's: use --force")
    model, schedule = build_model(proxy, "ema").to(device), Schedule(**proxy["schedule"])
    cargs, pool = measurer(args, run_dir, full_beh)
    sizes = np.bincount(groups)
    n_rows = min(args.rows or len(masks), len(masks))
    settings = dict(guidance=args.guidance, rows=n_rows, proxy=file_sha256(proxy_path)[:16], keys=pool.keys,
                    n_samples=cargs.n_samples, ddim_steps=cargs.ddim_steps)
    out_path = runfolder.behaviors(run_dir, "proxy")
    if not args.force and os.path.exists(out_path):
        with np.load(out_path) as f:
            if "settings" in f.files and json.loads(str(f["settings"])) == settings:
                print(f"skip: {out_path} exists for these {n_rows} coalitions (use --force to value them again)")
                return
    cache = compute_fid.ModelCache(cargs, pool, device)
    coalitions = [(-1, np.arange(len(sizes)))] + [(i, np.flatnonzero(masks[i])) for i in range(n_rows)]
    behavior_macs = 2 * float(proxy["macs"]) * cache.args.n_samples * cache.args.ddim_steps  # guided: two passes
    rows = {k: [] for k in ("index", "mask_sha256", "seconds", "behavior_macs")}
    values = {k: [] for k in pool.keys}
    full_values = None
    progress = Progress(len(coalitions), "proxy game: coalitions")
    for index, members in coalitions:
        t0 = time.perf_counter()
        x = sample_coalition(model, schedule, cache.noise, coalition_ids(members, sizes, len(cache.noise)),
                             args.guidance, cache.args.ddim_steps, args.batch_size, device)
        v = value(cache, x)
        if index < 0:
            full_values = v
        else:
            for k in pool.keys:
                values[k].append(v[k])
            rows["index"].append(index)
            rows["mask_sha256"].append(row_sha256(masks[index]))
            rows["seconds"].append(time.perf_counter() - t0)
            rows["behavior_macs"].append(behavior_macs)
        progress.update(f"row {index}" if index >= 0 else "all", time.perf_counter() - t0)
    progress.close()
    n = len(rows["index"])
    cost = dict(train_macs=np.array([float(proxy["train_macs"])] + [0.0] * (n - 1)),  # the one training, once
                train_seconds=np.array([float(proxy["seconds"])] + [0.0] * (n - 1)))
    write(runfolder.behaviors(run_dir, "proxy_full"), pool, cache,
          dict(index=[-1], mask_sha256=[""], seconds=[0.0], behavior_macs=[behavior_macs]),
          {k: [full_values[k]] for k in pool.keys}, dict(guidance=args.guidance))
    write(out_path, pool, cache, rows, values, dict(**cost, guidance=args.guidance, settings=json.dumps(settings)))
    summary = ", ".join(f"{k} mean {np.mean(values[k]):.4g}" for k in pool.keys if k != "class")
    print(f"wrote {out_path}: {n} coalitions valued by {proxy_path} (guidance {args.guidance:g}); {summary}; "
          f"{np.mean(rows['seconds']):.1f} s per coalition")


if __name__ == "__main__":
    run(main, parse_args())
