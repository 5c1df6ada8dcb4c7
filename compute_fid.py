"""The global behaviours of every model in a folder. One DDIM sampling pass per model, from the same
initial noise for every model (common random numbers), gives FID against the real, uncorrupted training
data (or the reference set --ref-data, recorded with its sha256 in the output) and the field's other
sample-based behaviours; `loss` and `elbo` need no samples at all: the model's noise predictions on the
reference images, with (t, eps) draws shared by every model.

    python compute_fid.py --data digits --models runs/x/models/unlearn --masks runs/x/masks/unlearn.npy \\
        --out runs/x/behaviors/unlearn.npz --n-samples 1000 --ddim-steps 100
    python compute_fid.py --data digits --models runs/x/full.pt --out runs/x/behaviors/full.npz
    python compute_fid.py --data digits --models runs/x/models/unlearn --masks runs/x/masks/unlearn.npy \\
        --out runs/x/behaviors/unlearn.npz --behaviors loss,elbo --loss-draws 16      # no sampling
    python compute_fid.py --data digits --models runs/x/models/unlearn --ref-models runs/x/models/retrain \\
        --masks runs/x/masks/retrain.npy --out runs/x/behaviors/fid2.npz        # the paper's FID2

Behaviours (--behaviors, keys of the output; metrics.BEHAVIORS says how each is computed and which way is
better): fid, kid, is, precision, recall, density, coverage, class (soft class shares class:K), entropy
(from the samples), loss, elbo (from the reference images, no sampling).

Features (--features; the networks and the reference statistics: features.py):
    cnn        a small classifier trained here on the real training data (seeded, cached in the run
               folder, held-out accuracy printed); its penultimate layer (64-d) gives the features and
               its softmax the class shares and the Inception Score. Default for data with labels (digits).
    inception  pytorch-fid's InceptionV3 pool features (2048-d), the paper's FID, and its classifier's
               logits for the Inception Score. Weights from the torch hub cache or --inception-weights PATH
               (`random`: random weights, to test plumbing).

Each model's behaviours are cached under <run>/stats/ by checkpoint sha256 and settings: FID2 reuses
the pools' samples, and a killed run resumes model by model.

Output npz, one entry per checkpoint: index (mask row), seed (training seed), one array per behaviour
(class_share (models, classes) for class, and class_hist, the argmax counts), seconds (sampling) and
feature_seconds (the samples' features and the values read off them), loss_seconds, train_seconds and train_macs
(the checkpoint's), macs (forward, per image), args (JSON of each checkpoint's arguments: the recipe and the
method), mask_sha256, files; behaviors and
behavior_table (JSON: each key's better direction and how it is computed), method; floor_fid and real_is, the
reference set's own floor (FID between two halves of it) and Inception Score, against which a model's are read.
"""
import copy
import json
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from data import (ArgumentParser, DataError, Progress, add_data_args, add_speed_args, at_least_two, images_sha256,
                  load_dataset, nonnegative_int, positive_int, row_sha256, run, save_npz, to_model_space)
from ddpm import (Schedule, autocast, build_model, ddim_sample, denoising_errors, elbo_weights, file_sha256,
                  load_checkpoint, pick_device)
from features import (_safe, cnn_extractor, features_of, inception_extractor, inception_weights_path, matched_floor,
                      reference_floor, reference_knn, reference_stats, softmax)
from metrics import (BEHAVIORS, DC_K, KNN_KEYS, behavior_table, density_coverage, entropy, feature_stats,
                     frechet_distance, inception_score, kid, low_rank_factor, parse_behaviors, precision_recall,
                     sqrt_psd)
import runfolder
from runfolder import load_masks

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
    p.add_argument("--behaviors", type=parse_behaviors, default=list(BEHAVIORS),
                   help="comma-separated behaviours (default all: " + ", ".join(BEHAVIORS) + "); the sampled ones "
                   "cost one sampling pass together, loss and elbo one pass of forward calls on the reference "
                   "images together; with --ref-models only fid (FID2)")
    p.add_argument("--loss-draws", type=positive_int, default=4, help="(t, eps) draws per reference image for loss "
                   "and elbo (their noise falls as 1/sqrt(draws); bench/behaviour_noise.py)")
    p.add_argument("--loss-seed", type=int, default=0, help="seed of the (t, eps) draws shared by every model")
    p.add_argument("--n-ref", type=nonnegative_int, default=0, help="reference statistics (and the loss) from this many "
                   "real images (seeded choice; 0: all)")
    p.add_argument("--n-ref-knn", type=nonnegative_int, default=10000, help="kid, precision, recall, density and "
                   "coverage against at most this many reference images (and at most --n-ref; seeded choice; 0: all): "
                   "their kNN radii cost n^2 distances")
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


FEATURES_KEPT = 1 << 22  # a model's sample features (float32) are cached up to this many numbers (16 MB): the CNN's
# 64-d features of up to 65k samples, Inception's 2048-d of up to 2k; another reference's kNN behaviours then need
# no new samples. Larger sets (the cifar10 preset's 10,000 Inception features: 80 MB a model) keep their kNN
# behaviours per reference only.


def knn_values(feats, knn, ref_key):
    """The kNN behaviours of one model's sample features against the reference `ref_key`."""
    values = {f"kid@{ref_key}": kid(feats, knn["features"], float(knn["kid_yy"]))}
    values[f"precision@{ref_key}"], values[f"recall@{ref_key}"] = precision_recall(feats, knn["features"],
                                                                                 knn["radii_pr"])
    values[f"density@{ref_key}"], values[f"coverage@{ref_key}"] = density_coverage(feats, knn["features"],
                                                                                 knn["radii_dc"])
    return values


def sampled_values(feats, logits, num_classes, knn, ref_key):
    """Every sampled behaviour of one model's samples (features, classifier logits), as cached: the Gaussian fit
    for FID (and its low-rank factor when n < d), the class shares and their entropy (data classes), the
    Inception Score, and the kNN behaviours against the reference `ref_key` (when knn is given)."""
    mu, sigma = feature_stats(feats)
    values = dict(mu=mu, sigma=sigma)
    factor = low_rank_factor(feats)
    if factor is not None:
        values["factor"] = factor
    probs = softmax(logits)
    values["is"] = inception_score(probs)
    if num_classes:
        values["class_hist"] = np.bincount(probs.argmax(1), minlength=num_classes)
        values["class_share"] = probs.mean(0)
        values["entropy"] = entropy(values["class_share"])
    if knn is not None:
        values.update(knn_values(feats, knn, ref_key))
    if feats.size <= FEATURES_KEPT:
        values["features"] = np.asarray(feats, np.float32)
    return values


def denoising_values(ckpt, x0, *, seed, draws, batch_size, device):
    """`loss` and `elbo` of a checkpoint's EMA weights on the reference images x0, from ddpm.denoising_errors's
    shared draws: the mean squared error per pixel, and the variational bound's weighted mean per pixel."""
    schedule = Schedule(**ckpt["schedule"])
    model = build_model(ckpt, "ema").to(device)
    t, errors = denoising_errors(model, schedule, x0, seed=seed, draws=draws, batch_size=batch_size)
    dims = x0[0].numel()
    weights = elbo_weights(schedule)[t]  # (draws, N)
    return dict(loss=float(errors.mean()) / dims, elbo=float((schedule.T * weights * errors).mean()) / dims)


def entry_args(ckpt):
    """A checkpoint's recorded arguments as JSON (the recipe and method the report reads without torch)."""
    return json.dumps(ckpt.get("args") or {}, sort_keys=True, default=str)


def method_of(ckpt):
    """How a model was made: the unlearning method of an unlearned model (older checkpoints: gd), else `train`."""
    a = ckpt.get("args") or {}
    if "method" in a or ckpt.get("parent") and ckpt.get("subset"):
        return str(a.get("method", "gd"))
    return "train"


def up_to_date(args, entries, masks, ref_sha, keys):
    """An existing behaviours file covers the same checkpoints, rows, behaviours and settings."""
    try:
        with np.load(args.out, allow_pickle=False) as f:
            files, shas, n = [str(p) for p in f["files"]], [str(s) for s in f["mask_sha256"]], int(f["n_samples"])
            if str(f["ref_sha256"]) != ref_sha or "behaviors" not in f.files:
                return False
            if json.loads(str(f["behaviors"])) != keys or int(f["loss_draws"]) != args.loss_draws or \
                    int(f["loss_seed"]) != args.loss_seed or int(f["ddim_steps"]) != args.ddim_steps:
                return False
    except Exception:
        return False
    expected = [row_sha256(masks[i]) if i >= 0 else "" for _, i, _ in entries]
    return files == [os.path.basename(p) for p, _, _ in entries] and shas == expected and n == args.n_samples


# ----------------------------------------------------------------------------------------------
# The script: what to compute (a Pool), each model's behaviours through a per-checkpoint cache (ModelCache),
# then one behaviours file

@dataclass
class Pool:
    """What compute_fid.py computes for one call: the behaviours, the models and what they are measured against."""
    keys: list  # behaviours of the output, in BEHAVIORS' order (FID2: fid only)
    kind: str  # feature network: cnn or inception
    clean: object  # the training data, uncorrupted (the cnn is trained on it)
    ref: object  # the FID reference set (clean, or --ref-data)
    ref_sha: str
    masks: np.ndarray  # the pool's mask file, or None for single checkpoints
    entries: list  # [(checkpoint path, mask row, training seed)]
    n_knn_ref: int

    @property
    def sampled(self):
        return [k for k in self.keys if BEHAVIORS[k].source == "samples"]

    @property
    def denoising(self):
        return [k for k in self.keys if BEHAVIORS[k].source == "reference"]


def datasets(args):
    """(the training data uncorrupted, the reference set, the feature network's kind): FID is against the
    uncorrupted data unless --ref-data, whose images must have the training data's shape."""
    if args.n_ref == 1:
        raise DataError("--n-ref must be 0 (all images) or at least 2 (a covariance needs two)")
    clean = load_dataset(args.data)
    ref = load_dataset(args.ref_data) if args.ref_data else clean
    if ref.images.shape[1:] != clean.images.shape[1:]:
        raise DataError(f"--ref-data {args.ref_data} has images of shape {ref.images.shape[1:]}, the training data "
                        f"{clean.images.shape[1:]}")
    return clean, ref, args.features if args.features != "auto" else ("cnn" if clean.labels is not None else "inception")


def check(args):
    """What main would refuse once it reads the data (tools/one_process.py --check): the data and the reference
    set load and match, and Inception's weights are where they are looked for when samples are to be measured in its
    features (or a path to them is given)."""
    kind = datasets(args)[2]
    sampled = any(BEHAVIORS[k].source == "samples" for k in args.behaviors)
    if args.inception_weights not in (None, "random") or (kind == "inception" and sampled and
                                                          args.inception_weights != "random"):
        inception_weights_path(args.inception_weights)


def plan(args):
    """The Pool of this call: its datasets, the behaviours left when some cannot be computed (class shares need the
    data's classes; kNN behaviours more than DC_K samples), and its checkpoints (FID2: the rows both folders have)."""
    clean, ref, kind = datasets(args)
    keys = ["fid"] if args.ref_models else list(args.behaviors)  # FID2: the Frechet distance between two models
    if kind != "cnn" and any(k in keys for k in ("class", "entropy")):  # Inception knows ImageNet's classes only
        keys = [k for k in keys if k not in ("class", "entropy")]
        print("class shares and entropy need the data's classes (--features cnn): not computed")
    if not keys:
        raise DataError("no behaviour left to compute (class and entropy need --features cnn)")
    n_knn_ref = min(len(ref), args.n_ref or len(ref), args.n_ref_knn or len(ref))
    if min(args.n_samples, n_knn_ref) <= DC_K and any(k in KNN_KEYS for k in keys):
        keys = [k for k in keys if k not in KNN_KEYS]  # a ball reaches the k-th neighbour: k + 1 points at least
        print(f"kid, precision, recall, density and coverage need more than {DC_K} samples and reference images: "
              f"not computed")
    masks = load_masks(args.masks, n=len(clean)) if args.masks else None
    entries = list_models(args.models, args.masks)
    if args.ref_models:  # FID2 only where both folders have the row
        entries = [e for e in entries if os.path.exists(os.path.join(args.ref_models, os.path.basename(e[0])))]
        if not entries:
            raise DataError(f"no model of {args.models} has a partner in {args.ref_models}")
    return Pool(keys=keys, kind=kind, clean=clean, ref=ref, ref_sha="" if args.ref_models else images_sha256(ref.images),
                masks=masks, entries=entries, n_knn_ref=n_knn_ref)


def check_pool(args, pool):
    """Every model's mask row and method, once, first: a pool of another mask file, or of two unlearning methods,
    writes nothing, not even a cache. Returns {method: a file made by it}."""
    methods = {}
    for path, index, _ in pool.entries:
        for p in [path] + ([os.path.join(args.ref_models, os.path.basename(path))] if args.ref_models else []):
            ckpt = load_checkpoint(p, mmap=True)
            if pool.masks is not None and index >= 0:
                check_row(ckpt, p, pool.masks, index, args.masks)
            if p == path:
                methods.setdefault(method_of(ckpt), os.path.basename(p))
    if len(methods) > 1:
        raise DataError(f"{args.models} mixes models made by different methods ("
                        + ", ".join(f"{m}: {f}" for m, f in sorted(methods.items())) + "): one pool, one method")
    return methods


class ModelCache:
    """Each model's behaviours depend only on its weights and the settings, so they are cached per checkpoint
    (<cache>/stats/<sha256>-<settings>.npz): FID2 and the seed pairs reuse the samples of the pools, and a killed
    stage resumes model by model. Holds what every model is measured against: the feature network, the reference
    statistics and kNN reference, the shared initial noise and the reference images of the loss."""

    def __init__(self, args, pool, device):
        self.args, self.pool, self.device = args, pool, device
        cache = args.cache or runfolder.run_of(args.out)
        self.extract, self.num_classes, self.meta = None, None, dict(kind="none")
        self.mu_ref = self.sigma_ref = self.knn = self.root_ref = self.x0_ref = None
        self.floor = (np.nan, np.nan)  # the reference's own FID floor and Inception Score (sampled behaviours only)
        self.matched, self.cache_dir = None, cache  # the floor at the model's sample size (one-model pools, lazily)
        if pool.sampled:
            self._references(cache)
        c, h = pool.clean.images.shape[1:3]
        self.noise = torch.randn((args.n_samples, c, h, h), generator=torch.Generator().manual_seed(args.seed))
        if pool.denoising:  # the reference images the loss is measured on: all, or the seeded choice of --n-ref
            ref = pool.ref
            n = args.n_ref if 0 < args.n_ref < len(ref) else len(ref)
            images = ref.images if n == len(ref) else \
                ref.images[np.random.default_rng(args.seed).choice(len(ref), n, replace=False)]
            self.x0_ref = to_model_space(images).to(device)
        self.ref_key = pool.ref_sha[:16]
        weights = _safe(os.path.basename(self.meta.get("weights", "")))
        self.setting = f"{self.meta['kind']}-{weights}-n{args.n_samples}-ddim{args.ddim_steps}-seed{args.seed}"
        self.loss_setting = (f"loss-d{args.loss_draws}-seed{args.loss_seed}-n{0 if self.x0_ref is None else len(self.x0_ref)}"
                             f"-{self.ref_key}")
        self.stats_dir, self.shas = runfolder.stats(cache), {}
        self.needed = ["mu", "sigma", "is"] + (["class_share", "entropy"] if self.num_classes else []) + \
            ([f"{k}@{self.ref_key}" for k in KNN_KEYS] if self.knn is not None else [])

    def _references(self, cache):
        args, pool = self.args, self.pool
        torch.manual_seed(args.seed)
        if pool.kind == "cnn":
            self.extract, self.num_classes, self.meta = cnn_extractor(pool.clean, cache, args.seed, self.device)
        else:
            self.extract, self.num_classes, self.meta = inception_extractor(args.inception_weights, self.device)
        if not args.ref_models:
            self.mu_ref, self.sigma_ref = reference_stats(self.extract, pool.ref, cache, pool.kind, args.batch_size,
                                                          args.n_ref, args.seed)
            self.floor = reference_floor(self.extract, pool.ref, cache, pool.kind, args.batch_size, args.n_ref,
                                         args.seed)
            if any(k in KNN_KEYS for k in pool.keys):
                self.knn = reference_knn(self.extract, pool.ref, cache, pool.kind, args.batch_size, pool.n_knn_ref,
                                         args.seed)

    def matched_floor(self):
        """matched_floor's values for this reference at the pool's sample size (computed once)."""
        if self.matched is None:
            self.matched = matched_floor(self.extract, self.pool.ref, self.cache_dir, self.pool.kind,
                                         self.args.batch_size, self.args.n_samples, self.args.n_ref, self.args.seed)
        return self.matched

    def path(self, checkpoint, what):
        """The cache file of a checkpoint's sampled ("samples") or loss behaviours; hashed once per checkpoint (286 MB
        each for cifar10)."""
        if checkpoint not in self.shas:
            self.shas[checkpoint] = file_sha256(checkpoint)[:32]
        return os.path.join(self.stats_dir, f"{self.shas[checkpoint]}-"
                                            f"{self.setting if what == 'samples' else self.loss_setting}.npz")

    def needs_sampling(self, checkpoint):
        if not self.pool.sampled:
            return False
        if not os.path.exists(self.path(checkpoint, "samples")):
            return True
        with np.load(self.path(checkpoint, "samples")) as f:  # kNN behaviours of another reference: kept features
            return any(k not in f.files and not ("@" in k and "features" in f.files) for k in self.needed)

    def sample(self, paths, ckpts):
        """Sample G checkpoints of one architecture together; cache each one's sampled behaviours (sampling
        seconds: the group's wall time / G), beside what the cache holds for other references."""
        args = self.args
        schedule = Schedule(**ckpts[0]["schedule"])
        if args.ddim_steps > schedule.T:
            raise DataError(f"--ddim-steps must lie in 1..{schedule.T} (the model's T), got {args.ddim_steps}")
        t0 = time.perf_counter()
        xs = sample_models(ckpts, schedule, self.noise, args.ddim_steps, args.batch_size, self.device, args.precision)
        seconds = (time.perf_counter() - t0) / len(ckpts)
        os.makedirs(self.stats_dir, exist_ok=True)
        for path, x in zip(paths, xs):
            t1 = time.perf_counter()
            feats, logits = features_of(self.extract, x, args.batch_size)
            values = {}
            if os.path.exists(self.path(path, "samples")):  # other references' kNN behaviours; or, where the
                with np.load(self.path(path, "samples")) as f:  # pipeline's two lanes meet, the other lane's values
                    values = {k: f[k] for k in f.files if "@" in k}
            values.update(sampled_values(feats, logits, self.num_classes, self.knn, self.ref_key), seconds=seconds)
            values.update(feature_seconds=time.perf_counter() - t1)  # the features and the values read off them
            save_npz(self.path(path, "samples"), **values)

    def losses(self, path, ckpt=None):
        if not os.path.exists(self.path(path, "loss")):
            t0 = time.perf_counter()
            values = denoising_values(ckpt or load_checkpoint(path), self.x0_ref, seed=self.args.loss_seed,
                                      draws=self.args.loss_draws, batch_size=self.args.batch_size, device=self.device)
            os.makedirs(self.stats_dir, exist_ok=True)
            save_npz(self.path(path, "loss"), **values, seconds=time.perf_counter() - t0)
        with np.load(self.path(path, "loss")) as f:
            return {k: float(f[k]) for k in f.files}

    def of(self, path):
        """(checkpoint, its cached sampled values or {}, its cached loss values or {}), computed when not cached."""
        ckpt = load_checkpoint(path)
        if self.needs_sampling(path):
            self.sample([path], [ckpt])
        values = {}
        if self.pool.sampled:
            with np.load(self.path(path, "samples")) as f:
                values = {k: f[k] for k in f.files}
            if self.knn is not None and f"kid@{self.ref_key}" not in values:  # a new reference: the kept features
                values.update(knn_values(values["features"].astype(np.float64), self.knn, self.ref_key))
                save_npz(self.path(path, "samples"), **values)
        return ckpt, values, (self.losses(path, ckpt) if self.pool.denoising else {})

    def sample_stacked(self, stack):
        """Sample the models not cached yet in groups of `stack`, one architecture a group."""
        group = []
        for path, _, _ in self.pool.entries + [(None, -1, -1)]:
            ckpt = load_checkpoint(path) if path is not None and self.needs_sampling(path) else None
            if group and (ckpt is None or len(group) == stack or
                          (ckpt["config"], ckpt["schedule"]) != (group[0][1]["config"], group[0][1]["schedule"])):
                self.sample(*zip(*group))
                group = []
            if ckpt is not None:
                group.append((path, ckpt))


def model_values(cache, path, sample, denoised, ref_models):
    """{behaviour: value} of one model from its cached values (FID2: the Frechet distance to the same row's model
    of --ref-models)."""
    out = {}
    for k in cache.pool.keys:
        if k == "fid" and ref_models:
            _, other, _ = cache.of(os.path.join(ref_models, os.path.basename(path)))
            out[k] = frechet_distance(sample["mu"], sample["sigma"], other["mu"], other["sigma"],
                                      factor2=other.get("factor"))
        elif k == "fid":
            if "factor" not in sample and cache.root_ref is None:  # sqrt_psd(sigma_ref), once for all models
                cache.root_ref = sqrt_psd(cache.sigma_ref)
            out[k] = frechet_distance(cache.mu_ref, cache.sigma_ref, sample["mu"], sample["sigma"], root1=cache.root_ref,
                                      factor2=sample.get("factor"))
        elif k == "class":
            out[k] = sample["class_share"]
        elif k in KNN_KEYS:
            out[k] = float(sample[f"{k}@{cache.ref_key}"])
        elif k in denoised:
            out[k] = denoised[k]
        else:
            out[k] = float(sample[k])
    return out


def measure(args, cache):
    """(per-model metadata, {behaviour: values}) of every model of the pool, in its order."""
    pool = cache.pool
    rows = {k: [] for k in ("index", "seed", "seconds", "feature_seconds", "loss_seconds", "train_seconds", "train_macs",
                            "macs", "behavior_macs", "mask_sha256", "files", "args")}
    # forward passes per model of the behaviours: DDIM steps x samples, and draws x reference images for the loss
    passes = (args.n_samples * args.ddim_steps if pool.sampled else 0) + \
        (len(cache.x0_ref) * args.loss_draws if pool.denoising else 0)
    values = {k: [] for k in pool.keys}
    progress = Progress(len(pool.entries), f"behaviours {os.path.basename(args.out)}")
    for path, index, seed in pool.entries:
        t0 = time.perf_counter()
        ckpt, sample, denoised = cache.of(path)
        for k, v in model_values(cache, path, sample, denoised, args.ref_models).items():
            values[k].append(v)
        rows["index"].append(index)
        rows["seed"].append(seed if seed >= 0 else (ckpt.get("args") or {}).get("seed", -1))
        rows["seconds"].append(float(sample["seconds"]) if sample else 0.0)
        rows["feature_seconds"].append(float(sample.get("feature_seconds", np.nan)) if sample else 0.0)  # (older caches)
        rows["loss_seconds"].append(denoised.get("seconds", 0.0))
        rows["train_seconds"].append(float(ckpt.get("seconds", 0.0)))
        rows["train_macs"].append(float(ckpt.get("train_macs", np.nan)))
        rows["macs"].append(float(ckpt.get("macs", np.nan)))
        rows["behavior_macs"].append(rows["macs"][-1] * passes)
        rows["mask_sha256"].append(row_sha256(pool.masks[index]) if index >= 0 else "")
        rows["files"].append(os.path.basename(path))
        rows["args"].append(entry_args(ckpt))
        if cache.num_classes and sample:
            values.setdefault("class_hist", []).append(sample["class_hist"])
        if pool.masks is None and "features" in sample and cache.mu_ref is not None:  # the full (pruned, quality) model
            matched = cache.matched_floor()
            if matched is not None:
                m = int(matched["m"])
                rows.setdefault("fid_matched", []).append(frechet_distance(
                    *feature_stats(sample["features"][:m].astype(np.float64)), matched["mu_b"], matched["sigma_b"]))
        progress.update(os.path.basename(path), time.perf_counter() - t0)
    progress.close()
    return rows, values


def write_behaviors(args, pool, cache, rows, values, methods):
    """The behaviours file, and the one-line summary of what it holds."""
    out = {k: np.asarray(v) for k, v in rows.items()}
    out.update({("class_share" if k == "class" else k): np.asarray(v, dtype=np.float64 if k != "class_hist" else None)
                for k, v in values.items()})
    save_npz(args.out, **out, features=cache.meta["kind"], n_samples=args.n_samples, ddim_steps=args.ddim_steps,
             loss_draws=args.loss_draws, loss_seed=args.loss_seed, behaviors=json.dumps(pool.keys),
             behavior_table=json.dumps(behavior_table(pool.keys)), method=next(iter(methods)),
             masks=os.path.basename(args.masks) if args.masks else "", ref_models=args.ref_models or "",
             ref_data="" if args.ref_models else pool.ref.name, ref_sha256=pool.ref_sha, n_ref=args.n_ref,
             ref_seed=args.seed, floor_fid=cache.floor[0],
             real_is=cache.floor[1], **matched_keys(cache, rows))
    summary = ", ".join(f"{'FID2' if args.ref_models else k} mean {np.mean(out['class_share' if k == 'class' else k]):.4g}"
                        for k in pool.keys if k != "class")
    cost = ", ".join(f"{np.mean(rows[s]):.2f} s {what} per model" for s, what in
                     (("seconds", "sampling"), ("loss_seconds", "loss")) if np.mean(rows[s]) > 0)
    print(f"wrote {args.out}: {len(pool.entries)} models; {summary}{'; ' + cost if cost else ''}")


def matched_keys(cache, rows):
    """The floor and the model's FID at matched sample sizes, for a one-model pool whose samples' features were kept:
    floor_matched (m images of half A vs half B), m and n_b; fid_matched per model (its first m samples vs half B)."""
    if "fid_matched" not in rows or cache.matched is None:
        return {}
    return dict(floor_matched=cache.matched["floor_matched"], matched_m=cache.matched["m"],
                matched_n_b=cache.matched["n_b"])


def main(args):
    device = pick_device(args.device)
    pool = plan(args)
    if os.path.exists(args.out) and not args.force and up_to_date(args, pool.entries, pool.masks, pool.ref_sha,
                                                                  pool.keys):
        print(f"skip: {args.out} exists for these {len(pool.entries)} models (use --force to recompute)")
        return
    methods = check_pool(args, pool)
    cache = ModelCache(args, pool, device)
    if args.stack > 1 and pool.sampled:
        cache.sample_stacked(args.stack)
    if args.stats_only:
        progress = Progress(len(pool.entries), f"statistics of {os.path.basename(os.path.normpath(args.models))}, "
                                               f"last first")
        for path, _, _ in reversed(pool.entries):
            t0 = time.perf_counter()
            cache.of(path)
            progress.update(os.path.basename(path), time.perf_counter() - t0)
        progress.close()
        print(f"cached the behaviours of {len(pool.entries)} models of {args.models}")
        return
    rows, values = measure(args, cache)
    write_behaviors(args, pool, cache, rows, values, methods)


if __name__ == "__main__":
    run(main, parse_args())
