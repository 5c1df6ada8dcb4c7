"""The global behaviour of every model in a folder: sample it with DDIM from the same initial noise
(common random numbers) and compute its FID against the real, uncorrupted training data (or the
reference set --ref-data, recorded with its sha256 in the output), and the class histogram of its
samples.

    python compute_fid.py --data digits --models runs/x/models/unlearn --masks runs/x/masks/unlearn.npy \\
        --out runs/x/behaviors/unlearn.npz --n-samples 1000 --ddim-steps 100
    python compute_fid.py --data digits --models runs/x/full.pt --out runs/x/behaviors/full.npz
    python compute_fid.py --data digits --models runs/x/models/unlearn --ref-models runs/x/models/retrain \\
        --masks runs/x/masks/retrain.npy --out runs/x/behaviors/fid2.npz        # the paper's FID2

Features (--features):
    cnn        a small classifier trained here on the real training data (seeded, cached in the run
               folder, held-out accuracy printed); its penultimate layer (64-d) gives FID features and
               its predictions each model's class histogram. Default for data with labels (digits).
    inception  pytorch-fid's InceptionV3 pool features (2048-d), the paper's FID. Weights from the
               torch hub cache or --inception-weights PATH (`random`: random weights, to test plumbing).

Each model's feature mean and covariance are cached under <run>/stats/ by checkpoint sha256 and
sampling settings: FID2 reuses the pools' samples, and a killed run resumes model by model.

Output npz, one entry per checkpoint: index (mask row), seed (training seed), fid, class_hist (if
classes), seconds (sampling), train_seconds (the checkpoint's), mask_sha256, files.
"""
import copy
import os
import re
import time
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from filelock import FileLock  # comes with torch
from data import (ArgumentParser, DataError, Progress, add_data_args, add_speed_args, at_least_two, images_sha256,
                  load_dataset, load_masks,
                  nonnegative_int, positive_int, row_sha256, run, save_npz, to_model_space)
from ddpm import (Schedule, autocast, build_model, ddim_sample, file_sha256, load_checkpoint, pick_device,
                  save_checkpoint)

PAPER_DDIM_STEPS = 100  # the paper samples with DDIM, 100 steps
MODEL_FILE = re.compile(r"^(\d{5})(?:-s(\d+))?\.pt$")  # 00042.pt or 00003-s0.pt


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_data_args(p)
    p.add_argument("--models", required=True, help="folder of per-row checkpoints, or one checkpoint")
    p.add_argument("--masks", default=None, help="mask file the folder's rows come from (checked by sha256)")
    p.add_argument("--out", required=True, help="behaviours file to write (.npz)")
    p.add_argument("--ref-data", default=None, help="FID reference set, any --data form (a test split, a curated "
                   "clean set); default: the uncorrupted training data. Changes the reference statistics only")
    p.add_argument("--ref-models", default=None, help="FID between each model and the same row's model here (FID2)")
    p.add_argument("--n-samples", type=at_least_two, default=1000,
                   help="samples per model, at least 2 for a covariance (FID noise falls as 1/sqrt(n))")
    p.add_argument("--ddim-steps", type=positive_int, default=PAPER_DDIM_STEPS, help="DDIM steps (paper: 100)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="samples per forward pass")
    p.add_argument("--features", choices=["auto", "cnn", "inception"], default="auto",
                   help="auto: cnn when the data has labels, else inception")
    p.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth, or `random`")
    p.add_argument("--n-ref", type=nonnegative_int, default=0, help="reference statistics from this many real images "
                   "(seeded choice; 0: all)")
    p.add_argument("--cache", default=None, help="where the feature network, the reference statistics and each "
                   "model's feature statistics (stats/, keyed by checkpoint sha256; d^2 floats a model: 32 KB for "
                   "cnn, 32 MB for Inception) are cached (default: the run folder, the parent of --out's folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise shared by all models")
    p.add_argument("--device", default="auto")
    add_speed_args(p, "sample this many models together (vmap over stacked weights; for many small models on a GPU)",
                   training=False)
    p.add_argument("--force", action="store_true", help="recompute even if --out exists and matches")
    p.add_argument("--stats-only", action="store_true", help="only fill the per-model statistics cache, last model "
                   "first, and write no --out: a second process shares a large pool's sampling with the one that "
                   "writes it (they meet in the middle; the pipeline's behaviour stage does this)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The Frechet distance

def frechet_distance(mu1, sigma1, mu2, sigma2, root1=None, factor2=None):
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) (Dowson & Landau 1982; Heusel et al.
    2017). tr((S1 S2)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S1^1/2 S2 S1^1/2, in float64: finite and accurate when the covariances are
    rank-deficient (fewer samples than feature dimensions), where scipy's sqrtm is not. `root1`
    (sqrt_psd(sigma1)) spares the eigendecomposition of a reference used for many models. `factor2`
    (low_rank_factor: F of n < d rows with sigma2 = F^T F) turns the d x d eigenproblem into an n x n
    one: S1^1/2 F^T F S1^1/2 and F S1 F^T have the same nonzero eigenvalues (2048-d Inception features
    of a few hundred samples: milliseconds instead of seconds)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if factor2 is not None:
        f = np.asarray(factor2, np.float64)
        m = f @ s1 @ f.T
    else:
        root1 = sqrt_psd(s1) if root1 is None else root1
        m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def sqrt_psd(sigma):
    """The symmetric square root of a covariance matrix (negative rounding noise clipped to 0)."""
    s = np.asarray(sigma, np.float64)
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def feature_stats(features):
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def low_rank_factor(features):
    """F (n, d) with F^T F = the features' covariance (ddof 1), when there are fewer samples than feature
    dimensions (n < d); None otherwise (then the d x d covariance is the cheaper form)."""
    f = np.asarray(features, np.float64)
    if len(f) >= f.shape[1]:
        return None
    return (f - f.mean(0)) / np.sqrt(len(f) - 1)


# ----------------------------------------------------------------------------------------------
# Feature networks

class SmallCNN(nn.Module):
    """A digit-sized classifier; its 64-d penultimate activations are the FID features."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):  # x (B, C, H, W) in [-1, 1] -> (features (B, 64), logits (B, classes))
        f = self.features(x)
        return f, self.head(f)


def train_cnn(ds, *, seed=0, epochs=30, device="cpu"):
    """Train SmallCNN on 80% of the real images (seeded); returns (model, held-out accuracy)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = to_model_space(ds.images), torch.from_numpy(ds.labels)
    order = torch.randperm(len(x), generator=g)
    cut = int(0.8 * len(x))
    train_idx, test_idx = order[:cut], order[cut:]
    model = SmallCNN(x.shape[1], int(y.max()) + 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=g)]
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(model(x[b].to(device))[1], y[b].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test_idx].to(device))[1].argmax(1).cpu() == y[test_idx]).float().mean().item()
    return model, acc


def cnn_extractor(ds, cache, seed, device, epochs=30):
    """The cached classifier of this dataset, trained on first use (for `epochs` epochs)."""
    if ds.labels is None:
        raise DataError(f"{ds.name} has no labels, so the cnn features cannot be trained; use --features inception")
    path = os.path.join(cache, f"fid_cnn_{_safe(ds.name)}.pt")
    num_classes = int(ds.labels.max()) + 1
    model = SmallCNN(ds.images.shape[1], num_classes).to(device)
    os.makedirs(cache, exist_ok=True)
    # the pipeline's two behaviour lanes start together: one trains (~10 s on a core), the other waits and loads
    with FileLock(os.path.join(cache, f".fid_cnn_{_safe(ds.name)}.lock")):
        if os.path.exists(path):
            saved = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(saved["model"])
            acc = saved["accuracy"]
        else:
            model, acc = train_cnn(ds, seed=seed, epochs=epochs, device=device)
            save_checkpoint(path, dict(model=model.state_dict(), accuracy=acc, num_classes=num_classes, seed=seed))
    model.eval()
    print(f"cnn features: held-out accuracy {acc:.3f} ({path})")

    @torch.no_grad()
    def extract(x):  # x in [-1, 1] -> (features, predicted classes)
        f, logits = model(x.to(device))
        return f.cpu().numpy(), logits.argmax(1).cpu().numpy()
    return extract, num_classes, dict(kind="cnn", accuracy=acc)


def inception_extractor(weights, device):
    """pytorch-fid's InceptionV3 (2048-d pool features); `weights` is a path or 'random'."""
    import pytorch_fid.inception as pi
    import torchvision
    if weights == "random":  # plumbing tests: the real network, random weights
        patches = [mock.patch.object(pi, "load_state_dict_from_url", lambda *a, **k: {}),
                   mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda *a, **k: None)]
    else:
        path = weights or os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(pi.FID_WEIGHTS_URL))
        if not os.path.isfile(path):
            raise DataError(f"Inception weights not found at {path}: download {pi.FID_WEIGHTS_URL} there "
                            f"or pass --inception-weights PATH")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DataError(f"cannot read Inception weights {path}: {type(e).__name__}")
        patches = [mock.patch.object(pi, "load_state_dict_from_url", lambda *a, **k: state)]
    for p in patches:
        p.start()
    try:
        model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    finally:
        for p in patches:
            p.stop()

    @torch.no_grad()
    def extract(x):  # x in [-1, 1], 1 or 3 channels -> (features (B, 2048), no classes)
        x = (x.to(device) + 1) / 2  # InceptionV3 expects [0, 1] and resizes to 299 itself
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return model(x)[0][:, :, 0, 0].cpu().numpy(), None
    return extract, None, dict(kind="inception", weights=str(weights or "hub cache"))


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def features_of(extract, images, batch_size):
    """Features (and predicted classes) of model-space images, in batches."""
    feats, classes = [], []
    for i in range(0, len(images), batch_size):
        f, c = extract(images[i:i + batch_size])
        feats.append(f)
        if c is not None:
            classes.append(c)
    return np.concatenate(feats), (np.concatenate(classes) if classes else None)


def reference_stats(extract, ref, cache, kind, batch_size, n_ref=0, seed=0):
    """Mean and covariance of the features of the reference images (the real, uncorrupted training
    images, or --ref-data; all, or a seeded choice of n_ref of them), cached with the images' sha256."""
    n = n_ref if 0 < n_ref < len(ref) else len(ref)
    path = os.path.join(cache, f"fid_ref_{kind}_{_safe(ref.name)}_{n}.npz")
    sha = images_sha256(ref.images)
    if os.path.exists(path):
        with np.load(path) as f:
            if "sha256" in f.files and str(f["sha256"]) == sha:
                return f["mu"], f["sigma"]
    images = ref.images if n == len(ref) else ref.images[np.random.default_rng(seed).choice(len(ref), n, replace=False)]
    feats, _ = features_of(extract, to_model_space(images), batch_size)
    mu, sigma = feature_stats(feats)
    save_npz(path, mu=mu, sigma=sigma, n=n, sha256=sha)
    return mu, sigma


# ----------------------------------------------------------------------------------------------
# Models

def list_models(models, masks_path):
    """[(path, row index, training seed)] of a folder (or one checkpoint: row -1)."""
    if os.path.isfile(models):
        return [(models, -1, -1)]
    if not os.path.isdir(models):
        raise DataError(f"no such model folder or checkpoint: {models}")
    found = []
    for f in sorted(os.listdir(models)):
        m = MODEL_FILE.match(f)
        if m:
            found.append((os.path.join(models, f), int(m.group(1)), int(m.group(2)) if m.group(2) else -1))
    if not found:
        raise DataError(f"no checkpoints named NNNNN.pt or NNNNN-sK.pt in {models}")
    if masks_path is None:
        raise DataError(f"{models} is a folder of per-row models: --masks is needed to check their rows")
    return found


def check_row(ckpt, path, masks, index, masks_path):
    if index >= len(masks):
        raise DataError(f"{path} is for row {index} but {masks_path} has {len(masks)} rows")
    sha = (ckpt.get("subset") or {}).get("sha256")
    if sha != row_sha256(masks[index]):
        raise DataError(f"{path} was not trained on row {index} of {masks_path} (sha256 differs)")
    return sha


@torch.no_grad()
def sample_model(ckpt, schedule, noise, ddim_steps, batch_size, device, precision="fp32"):
    """DDIM (eta = 0) samples of a checkpoint's EMA weights from the given initial noise, in [-1, 1]."""
    return sample_models([ckpt], schedule, noise, ddim_steps, batch_size, device, precision)[0]


@torch.no_grad()
def sample_models(ckpts, schedule, noise, ddim_steps, batch_size, device, precision="fp32"):
    """sample_model for G checkpoints of one architecture, sampled together (vmap over their stacked
    weights), each from the same initial noise. Returns G tensors (n, C, H, W)."""
    models = [build_model(c, "ema").to(device).eval() for c in ckpts]
    G = len(models)
    if G == 1:
        eps_theta = models[0]
    else:
        params, buffers = torch.func.stack_module_state(models)
        template = copy.deepcopy(models[0]).to("meta")
        batched = torch.func.vmap(lambda p, b, x, t: torch.func.functional_call(template, (p, b), (x, t)))

        def eps_theta(x, t):  # x (G * B, C, H, W): model g sees rows g * B .. (g + 1) * B - 1
            return batched(params, buffers, x.unflatten(0, (G, -1)), t.unflatten(0, (G, -1))).flatten(0, 1)
    out = []
    with autocast(precision, device):
        for i in range(0, len(noise), batch_size):
            x = noise[i:i + batch_size].to(device)
            x = ddim_sample(eps_theta, schedule, noise=x.repeat(G, 1, 1, 1), steps=ddim_steps, device=device)
            out.append(x.float().unflatten(0, (G, -1)).cpu())
    # as images: an undertrained model's outliers stay bounded
    return [torch.cat([o[g] for o in out]).clamp(-1, 1) for g in range(G)]


def up_to_date(args, entries, masks, ref_sha):
    """An existing behaviours file covers the same checkpoints, rows, sample count and FID reference."""
    try:
        with np.load(args.out, allow_pickle=False) as f:
            files, shas, n = [str(p) for p in f["files"]], [str(s) for s in f["mask_sha256"]], int(f["n_samples"])
            if str(f["ref_sha256"]) != ref_sha:
                return False
    except Exception:
        return False
    expected = [row_sha256(masks[i]) if i >= 0 else "" for _, i, _ in entries]
    return files == [os.path.basename(p) for p, _, _ in entries] and shas == expected and n == args.n_samples


def main(args):
    device = pick_device(args.device)
    if args.n_ref == 1:
        raise DataError("--n-ref must be 0 (all images) or at least 2 (a covariance needs two)")
    cache = args.cache or os.path.dirname(os.path.dirname(os.path.abspath(args.out)))
    clean = load_dataset(args.data)  # FID is against the uncorrupted data unless --ref-data
    ref = load_dataset(args.ref_data) if args.ref_data else clean
    if ref.images.shape[1:] != clean.images.shape[1:]:
        raise DataError(f"--ref-data {args.ref_data} has images of shape {ref.images.shape[1:]}, the training data "
                        f"{clean.images.shape[1:]}")
    ref_sha = "" if args.ref_models else images_sha256(ref.images)
    masks = load_masks(args.masks, n=len(clean)) if args.masks else None
    entries = list_models(args.models, args.masks)
    if args.ref_models:  # FID2 only where both folders have the row
        entries = [e for e in entries if os.path.exists(os.path.join(args.ref_models, os.path.basename(e[0])))]
        if not entries:
            raise DataError(f"no model of {args.models} has a partner in {args.ref_models}")
    if os.path.exists(args.out) and not args.force and up_to_date(args, entries, masks, ref_sha):
        print(f"skip: {args.out} exists for these {len(entries)} models (use --force to recompute)")
        return
    if masks is not None:  # every model's mask row, once, first: a pool of another mask file writes nothing, not even a cache
        for path, index, _ in (e for e in entries if e[1] >= 0):
            for p in [path] + ([os.path.join(args.ref_models, os.path.basename(path))] if args.ref_models else []):
                check_row(load_checkpoint(p, mmap=True), p, masks, index, args.masks)
    kind = args.features if args.features != "auto" else ("cnn" if clean.labels is not None else "inception")
    torch.manual_seed(args.seed)
    if kind == "cnn":
        extract, num_classes, meta = cnn_extractor(clean, cache, args.seed, device)
    else:
        extract, num_classes, meta = inception_extractor(args.inception_weights, device)
    mu_ref, sigma_ref = (None, None) if args.ref_models else reference_stats(extract, ref, cache, kind, args.batch_size,
                                                                                  args.n_ref, args.seed)
    root_ref = None  # sqrt_psd(sigma_ref), once for all models that need it (those without a low-rank factor)
    c, h = clean.images.shape[1:3]
    noise = torch.randn((args.n_samples, c, h, h), generator=torch.Generator().manual_seed(args.seed))

    # A model's statistics depend only on its weights and the sampling settings, so they are cached
    # per checkpoint: FID2 and the seed pairs reuse the samples of the pools, and a killed stage
    # resumes model by model.
    weights = _safe(os.path.basename(meta.get("weights", "")))
    setting = f"{meta['kind']}-{weights}-n{args.n_samples}-ddim{args.ddim_steps}-seed{args.seed}"
    stats_dir = os.path.join(cache, "stats")

    cache_paths = {}

    def cache_of(path):  # hashed once per checkpoint (286 MB each for cifar10)
        if path not in cache_paths:
            cache_paths[path] = os.path.join(stats_dir, f"{file_sha256(path)[:32]}-{setting}.npz")
        return cache_paths[path]

    def sample_and_cache(paths, ckpts):
        """Sample G checkpoints of one architecture together; cache each one's feature statistics
        (sampling seconds: the group's wall time / G)."""
        schedule = Schedule(**ckpts[0]["schedule"])
        if args.ddim_steps > schedule.T:
            raise DataError(f"--ddim-steps must lie in 1..{schedule.T} (the model's T), got {args.ddim_steps}")
        t0 = time.perf_counter()
        xs = sample_models(ckpts, schedule, noise, args.ddim_steps, args.batch_size, device, args.precision)
        seconds = (time.perf_counter() - t0) / len(ckpts)
        os.makedirs(stats_dir, exist_ok=True)
        for path, x in zip(paths, xs):
            feats, classes = features_of(extract, x, args.batch_size)
            mu, sigma = feature_stats(feats)
            extra = {"class_hist": np.bincount(classes, minlength=num_classes)} if classes is not None else {}
            factor = low_rank_factor(feats)
            if factor is not None:
                extra["factor"] = factor
            save_npz(cache_of(path), mu=mu, sigma=sigma, seconds=seconds, **extra)

    def behaviour(path, index):
        """(checkpoint, row sha256, feature mean, feature covariance, class histogram or None, sampling
        seconds, low-rank factor of the covariance or None); its row was checked before anything was built."""
        ckpt = load_checkpoint(path)
        sha = row_sha256(masks[index]) if index >= 0 else ""
        cached = cache_of(path)
        if not os.path.exists(cached):
            sample_and_cache([path], [ckpt])
        with np.load(cached) as f:
            return (ckpt, sha, f["mu"], f["sigma"], (f["class_hist"] if num_classes else None), float(f["seconds"]),
                    f["factor"] if "factor" in f.files else None)

    if args.stack > 1:  # sample the models not cached yet in groups of --stack, one architecture a group
        group = []
        for path, index, _ in entries + [(None, -1, -1)]:
            ckpt = None
            if path is not None and not os.path.exists(cache_of(path)):
                ckpt = load_checkpoint(path)
            if group and (ckpt is None or len(group) == args.stack or
                          (ckpt["config"], ckpt["schedule"]) != (group[0][1]["config"], group[0][1]["schedule"])):
                sample_and_cache(*zip(*group))
                group = []
            if ckpt is not None:
                group.append((path, ckpt))

    if args.stats_only:
        progress = Progress(len(entries), f"statistics of {os.path.basename(os.path.normpath(args.models))}, last first")
        for path, index, _ in reversed(entries):
            t0 = time.perf_counter()
            behaviour(path, index)
            progress.update(os.path.basename(path), time.perf_counter() - t0)
        progress.close()
        print(f"cached the statistics of {len(entries)} models of {args.models}")
        return

    rows = {k: [] for k in ("index", "seed", "fid", "class_hist", "seconds", "train_seconds", "mask_sha256", "files")}
    progress = Progress(len(entries), f"behaviours {os.path.basename(args.out)}")
    for path, index, seed in entries:
        t0 = time.perf_counter()
        ckpt, sha, mu, sigma, hist, seconds, factor = behaviour(path, index)
        if args.ref_models:
            _, _, mu_other, sigma_other, _, _, factor_other = behaviour(
                os.path.join(args.ref_models, os.path.basename(path)), index)
            fid = frechet_distance(mu, sigma, mu_other, sigma_other, factor2=factor_other)
        else:
            if factor is None and root_ref is None:
                root_ref = sqrt_psd(sigma_ref)
            fid = frechet_distance(mu_ref, sigma_ref, mu, sigma, root1=root_ref, factor2=factor)
        rows["index"].append(index)
        rows["seed"].append(seed if seed >= 0 else (ckpt.get("args") or {}).get("seed", -1))
        rows["fid"].append(fid)
        rows["class_hist"].append(hist if hist is not None else [])
        rows["seconds"].append(seconds)
        rows["train_seconds"].append(float(ckpt.get("seconds", 0.0)))
        rows["mask_sha256"].append(sha)
        rows["files"].append(os.path.basename(path))
        progress.update(os.path.basename(path), time.perf_counter() - t0)
    progress.close()
    out = {k: np.asarray(v) for k, v in rows.items() if not (k == "class_hist" and num_classes is None)}
    save_npz(args.out, **out, features=meta["kind"], n_samples=args.n_samples, ddim_steps=args.ddim_steps,
             masks=os.path.basename(args.masks) if args.masks else "", ref_models=args.ref_models or "",
             ref_data="" if args.ref_models else ref.name, ref_sha256=ref_sha)
    fids = out["fid"]
    print(f"wrote {args.out}: {len(fids)} models, FID{'2' if args.ref_models else ''} mean {fids.mean():.2f} "
          f"(min {fids.min():.2f}, max {fids.max():.2f}), {np.mean(rows['seconds']):.1f} s sampling per model")


if __name__ == "__main__":
    run(main, parse_args())
