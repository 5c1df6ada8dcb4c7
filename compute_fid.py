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

Behaviours (--behaviors, keys of the output; BEHAVIORS below says how each is computed and which way is
better): fid, kid, is, precision, recall, density, coverage, class (soft class shares class:K), entropy
(from the samples), loss, elbo (from the reference images, no sampling).

Features (--features):
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
import argparse
import copy
import json
import os
import re
import time
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from filelock import FileLock  # comes with torch
from data import (ArgumentParser, DataError, Progress, add_data_args, add_speed_args, at_least_two, images_sha256,
                  load_dataset, load_masks,
                  nonnegative_int, positive_int, row_sha256, run, save_npz, to_model_space)
from ddpm import (Schedule, autocast, build_model, ddim_sample, denoising_errors, elbo_weights, file_sha256,
                  load_checkpoint, pick_device, save_checkpoint)

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
# The behaviours: one table. A key is one array of the behaviours file (class: one per class, class:K).
# `source`: "samples" (from the one DDIM sampling pass per model, common random numbers) or "reference"
# (from the model's noise predictions on the reference images: no sampling); `better`: which way is better,
# or None where neither is (a class share); it sets the sign of "harmful" in the report.

@dataclass(frozen=True)
class Behavior:
    source: str
    better: str  # "lower", "higher" or None
    how: str


PR_K, DC_K = 3, 5  # nearest neighbours: precision/recall (Kynkaanniemi et al. 2019), density/coverage (Naeem et al. 2020)
BEHAVIORS = {
    "fid": Behavior("samples", "lower", "Frechet distance between Gaussian fits of the sample and reference features "
                    "(Heusel et al. 2017)"),
    "kid": Behavior("samples", "lower", "kernel inception distance: the unbiased MMD^2 between sample and reference "
                    "features with the kernel (x.y / d + 1)^3, over all pairs (Binkowski et al. 2018)"),
    "is": Behavior("samples", "higher", "Inception Score exp(E_x KL(p(y|x) || p(y))) from the feature network's "
                   "classifier (the digits CNN's classes, or Inception's 1008 logits), one split (Salimans et al. 2016)"),
    "precision": Behavior("samples", "higher", f"share of samples inside the reference manifold (balls reaching each "
                          f"reference feature's {PR_K}rd nearest neighbour; Kynkaanniemi et al. 2019)"),
    "recall": Behavior("samples", "higher", f"share of reference images inside the samples' manifold (k = {PR_K}; "
                       f"Kynkaanniemi et al. 2019)"),
    "density": Behavior("samples", "higher", f"how many reference balls (k = {DC_K}) a sample falls in, on average, "
                        f"over k (Naeem et al. 2020)"),
    "coverage": Behavior("samples", "higher", f"share of reference balls (k = {DC_K}) that hold a sample "
                         f"(Naeem et al. 2020)"),
    "class": Behavior("samples", None, "class:K, the soft share of class K: the mean softmax probability of K over "
                      "the samples (less noisy than counting argmax labels; data with labels only)"),
    "entropy": Behavior("samples", "higher", "entropy (nats) of the soft class shares: diversity over classes"),
    "loss": Behavior("reference", "lower", "the DDPM loss (mean squared error per pixel) on the reference images, with "
                     "(t, eps) drawn from --loss-seed and shared by every model, --loss-draws per image (t stratified)"),
    "elbo": Behavior("reference", "lower", "the variational bound in nats per pixel (up to a constant): the same "
                     "draws, each weighted by ddpm.elbo_weights (Ho et al. eq. (5) with sigma_t^2 = beta_t)"),
}
KNN_KEYS = ("kid", "precision", "recall", "density", "coverage")  # the sampled behaviours that need reference features


def parse_behaviors(text):
    """--behaviors: comma-separated keys of BEHAVIORS, or `all` (an argparse type)."""
    keys = list(BEHAVIORS) if text == "all" else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BEHAVIORS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown behaviour {', '.join(unknown) or repr(text)}: use all or some of "
                                         f"{', '.join(BEHAVIORS)}")
    return [k for k in BEHAVIORS if k in keys]  # the table's order


def behavior_table(keys):
    """{key: {better, how}} of the computed behaviours, as the behaviours file records it (JSON)."""
    return {k: dict(better=BEHAVIORS[k].better, how=BEHAVIORS[k].how) for k in keys}


BLOCK = 2048  # rows of a block of distances or kernel values (2048 x 10,000 float64: 160 MB)


def _blocks(a, b):
    """(row offset, squared Euclidean distances of a block of a's rows to every row of b), float64, block by block:
    features of 10,000 images would make dense matrices of gigabytes."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    for i in range(0, len(a), BLOCK):
        yield i, (torch.cdist(a[i:i + BLOCK], b, compute_mode="donot_use_mm_for_euclid_dist") ** 2).numpy()


def knn_radii(features, k):
    """Each feature's distance to its k-th nearest neighbour among the others (the ball of the manifold
    estimates of Kynkaanniemi et al. 2019 and Naeem et al. 2020)."""
    radii = np.empty(len(features))
    for i, d in _blocks(features, features):
        radii[i:i + len(d)] = np.sqrt(np.partition(d, k, axis=1)[:, k])  # column 0 is the point itself
    return radii


def precision_recall(sample, ref, ref_radii, k=PR_K):
    """(precision, recall): the share of samples within some reference ball, and of reference features
    within some sample ball; a ball reaches its centre's k-th nearest neighbour in its own set."""
    inside_ref = np.zeros(len(sample), dtype=bool)
    for i, d in _blocks(sample, ref):
        inside_ref[i:i + len(d)] = (np.sqrt(d) <= ref_radii[None, :]).any(1)
    sample_radii = knn_radii(sample, k)
    inside_sample = np.zeros(len(ref), dtype=bool)
    for i, d in _blocks(ref, sample):
        inside_sample[i:i + len(d)] = (np.sqrt(d) <= sample_radii[None, :]).any(1)
    return float(inside_ref.mean()), float(inside_sample.mean())


def density_coverage(sample, ref, ref_radii, k=DC_K):
    """(density, coverage) of Naeem et al. (2020): density = (1 / (k n)) sum over samples of the number of
    reference balls holding it; coverage = the share of reference balls holding at least one sample."""
    held, covered = 0, np.zeros(len(ref), dtype=bool)
    for _, d in _blocks(sample, ref):
        inside = np.sqrt(d) <= ref_radii[None, :]
        held += int(inside.sum())
        covered |= inside.any(0)
    return float(held / (k * len(sample))), float(covered.mean())


def kid_kernel(a, b):
    """The polynomial kernel of KID, (a.b / d + 1)^3, for all pairs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _kernel_sum(a, b):
    return sum(float(kid_kernel(a[i:i + BLOCK], b).sum()) for i in range(0, len(a), BLOCK))


def kid_ref_term(ref):
    """The reference's share of the unbiased MMD^2: the mean of k(y_i, y_j) over pairs i != j."""
    ref = np.asarray(ref, np.float64)
    m = len(ref)
    diag = ((ref ** 2).sum(1) / ref.shape[1] + 1.0) ** 3
    return (_kernel_sum(ref, ref) - float(diag.sum())) / (m * (m - 1))


def kid(sample, ref, ref_term=None):
    """Unbiased MMD^2 (Binkowski et al. 2018, eq. (3)) between sample and reference features, over all pairs:
    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)."""
    sample = np.asarray(sample, np.float64)
    n = len(sample)
    xx = kid_ref_term(sample)  # the same U-statistic, of the samples
    yy = kid_ref_term(ref) if ref_term is None else ref_term
    return float(xx + yy - 2 * _kernel_sum(sample, ref) / (n * len(ref)))


def inception_score(probs):
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples (Salimans et al. 2016), one split."""
    p = np.asarray(probs, np.float64)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(np.clip(p, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None)))).sum(1)
    return float(np.exp(kl.mean()))


def entropy(shares):
    """-sum_k s_k log s_k (nats) of a vector of shares."""
    s = np.asarray(shares, np.float64)
    s = s[s > 0]
    return float(-(s * np.log(s)).sum())


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
    def extract(x):  # x in [-1, 1] -> (features (B, 64), logits over the data's classes (B, classes))
        f, logits = model(x.to(device))
        return f.cpu().numpy(), logits.double().cpu().numpy()
    return extract, num_classes, dict(kind="cnn", accuracy=acc)


def inception_extractor(weights, device):
    """pytorch-fid's InceptionV3 (2048-d pool features) and the FID network's classifier on them (its 1008
    logits, for the Inception Score); `weights` is a path or 'random' (a seeded random classifier too)."""
    import pytorch_fid.inception as pi
    import torchvision
    if weights == "random":  # plumbing tests: the real network, random weights
        patches = [mock.patch.object(pi, "load_state_dict_from_url", lambda *a, **k: {}),
                   mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda *a, **k: None)]
        fc = nn.Linear(2048, 1008)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.02)
            fc.bias.zero_()
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
        fc = nn.Linear(2048, state["fc.weight"].shape[0])  # the classifier pytorch-fid's InceptionV3 drops
        fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    for p in patches:
        p.start()
    try:
        model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    finally:
        for p in patches:
            p.stop()
    fc = fc.to(device).eval()

    @torch.no_grad()
    def extract(x):  # x in [-1, 1], 1 or 3 channels -> (features (B, 2048), Inception's logits (B, 1008))
        x = (x.to(device) + 1) / 2  # InceptionV3 expects [0, 1] and resizes to 299 itself
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        f = model(x)[0][:, :, 0, 0]
        return f.cpu().numpy(), fc(f).double().cpu().numpy()
    # no data classes: Inception's logits give the Inception Score, not class shares of the data
    return extract, None, dict(kind="inception", weights=str(weights or "hub cache"))


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def features_of(extract, images, batch_size):
    """Features and classifier logits of model-space images, in batches."""
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, z = extract(images[i:i + batch_size])
        feats.append(f)
        logits.append(z)
    return np.concatenate(feats), np.concatenate(logits)


def softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def cached_reference(path, ref, keys, compute):
    """The arrays `keys` of a reference cache file written for these very images (their sha256), or compute()'s,
    saved there first."""
    sha = images_sha256(ref.images)
    if os.path.exists(path):
        with np.load(path) as f:
            if "sha256" in f.files and str(f["sha256"]) == sha:
                return {k: f[k] for k in keys}
    values = compute()
    save_npz(path, **values, sha256=sha)
    return values


def reference_features(extract, ref, n, batch_size, seed=0):
    """Features of the reference images: all of them, or a seeded choice of n."""
    images = ref.images if n == len(ref) else ref.images[np.random.default_rng(seed).choice(len(ref), n, replace=False)]
    return features_of(extract, to_model_space(images), batch_size)[0]


def reference_stats(extract, ref, cache, kind, batch_size, n_ref=0, seed=0):
    """Mean and covariance of the features of the reference images (the real, uncorrupted training
    images, or --ref-data; all, or a seeded choice of n_ref of them), cached with the images' sha256."""
    n = n_ref if 0 < n_ref < len(ref) else len(ref)

    def compute():
        mu, sigma = feature_stats(reference_features(extract, ref, n, batch_size, seed))
        return dict(mu=mu, sigma=sigma, n=n)
    values = cached_reference(os.path.join(cache, f"fid_ref_{kind}_{_safe(ref.name)}_{n}.npz"), ref, ("mu", "sigma"),
                              compute)
    return values["mu"], values["sigma"]


def reference_floor(extract, ref, cache, kind, batch_size, n_ref=0, seed=0):
    """(FID between two seeded halves of the reference images, the Inception Score of the reference images): the
    data's own floor, what a model that generates the data itself would score against a reference of this size
    (FID of a perfect model is about the FID of two halves of the real data), cached with the images' sha256."""
    n = n_ref if 0 < n_ref < len(ref) else len(ref)
    if n < 8:  # two halves need a few images each for a covariance
        return np.nan, np.nan

    def compute():
        images = ref.images if n == len(ref) else \
            ref.images[np.random.default_rng(seed).choice(len(ref), n, replace=False)]
        feats, logits = features_of(extract, to_model_space(images), batch_size)
        half = np.random.default_rng(seed + 1).permutation(n)
        a, b = feats[half[:n // 2]], feats[half[n // 2:]]
        return dict(floor_fid=np.float64(frechet_distance(*feature_stats(a), *feature_stats(b))),
                    real_is=np.float64(inception_score(softmax(logits))))
    values = cached_reference(os.path.join(cache, f"fid_floor_{kind}_{_safe(ref.name)}_{n}.npz"), ref,
                              ("floor_fid", "real_is"), compute)
    return float(values["floor_fid"]), float(values["real_is"])


# ----------------------------------------------------------------------------------------------
# Models

def matched_floor(extract, ref, cache, kind, batch_size, m, n_ref=0, seed=0):
    """The floor at a model's sample size: FID bias shrinks with the sizes of both sets, so a model's FID from its
    samples against the whole reference is not comparable with the FID between two halves of it. Returns the FID of
    the first m images of half A against half B (reference_floor's halves), half B's statistics (a model's FID from
    its first m samples against them is then at the same sizes) and m, cached with the images' sha256."""
    n = n_ref if 0 < n_ref < len(ref) else len(ref)
    m = min(m, n // 2)
    if m < 8:
        return None

    def compute():
        images = ref.images if n == len(ref) else \
            ref.images[np.random.default_rng(seed).choice(len(ref), n, replace=False)]
        feats, _ = features_of(extract, to_model_space(images), batch_size)
        half = np.random.default_rng(seed + 1).permutation(n)
        a, b = feats[half[:n // 2]][:m], feats[half[n // 2:]]
        mu_b, sigma_b = feature_stats(b)
        return dict(floor_matched=np.float64(frechet_distance(*feature_stats(a), mu_b, sigma_b)), mu_b=mu_b,
                    sigma_b=sigma_b, m=np.int64(m), n_b=np.int64(len(b)))
    return cached_reference(os.path.join(cache, f"fid_matched_{kind}_{_safe(ref.name)}_{n}_{m}.npz"), ref,
                            ("floor_matched", "mu_b", "sigma_b", "m", "n_b"), compute)


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


def reference_knn(extract, ref, cache, kind, batch_size, n_knn, seed=0):
    """What the kNN behaviours need of the reference (cached with the images' sha256): the features of all
    reference images, or of a seeded choice of n_knn (kNN radii cost n_knn^2 distances), their kNN radii for
    k = PR_K and DC_K, and the reference's term of the unbiased MMD^2 (KID)."""
    n = n_knn if 0 < n_knn < len(ref) else len(ref)

    def compute():
        feats = reference_features(extract, ref, n, batch_size, seed).astype(np.float64)
        return dict(features=feats, radii_pr=knn_radii(feats, PR_K), radii_dc=knn_radii(feats, DC_K),
                    kid_yy=np.float64(kid_ref_term(feats)))
    return cached_reference(os.path.join(cache, f"knn_ref_{kind}_{_safe(ref.name)}_{n}.npz"), ref,
                            ("features", "radii_pr", "radii_dc", "kid_yy"), compute)


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


def plan(args):
    """The Pool of this call: its datasets, the behaviours left when some cannot be computed (class shares need the
    data's classes; kNN behaviours more than DC_K samples), and its checkpoints (FID2: the rows both folders have)."""
    if args.n_ref == 1:
        raise DataError("--n-ref must be 0 (all images) or at least 2 (a covariance needs two)")
    clean = load_dataset(args.data)  # FID is against the uncorrupted data unless --ref-data
    ref = load_dataset(args.ref_data) if args.ref_data else clean
    if ref.images.shape[1:] != clean.images.shape[1:]:
        raise DataError(f"--ref-data {args.ref_data} has images of shape {ref.images.shape[1:]}, the training data "
                        f"{clean.images.shape[1:]}")
    kind = args.features if args.features != "auto" else ("cnn" if clean.labels is not None else "inception")
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
        cache = args.cache or os.path.dirname(os.path.dirname(os.path.abspath(args.out)))
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
        self.stats_dir, self.shas = os.path.join(cache, "stats"), {}
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
             ref_data="" if args.ref_models else pool.ref.name, ref_sha256=pool.ref_sha, floor_fid=cache.floor[0],
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
