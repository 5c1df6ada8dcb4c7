"""The behaviour formulas of compute_fid.py: one table of every behaviour a model can be measured by (BEHAVIORS:
where it comes from, which way is better, how it is computed) and the formulas behind the sample-based ones,
on features of samples and of reference images (numpy; torch for the blocks of pairwise distances):

    fid        Frechet distance between Gaussian fits (Heusel et al. 2017)
    kid        unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018)
    is         Inception Score (Salimans et al. 2016)
    precision, recall       k-NN manifolds (Kynkaanniemi et al. 2019)
    density, coverage       k-NN balls (Naeem et al. 2020)
    class, entropy          soft class shares and their entropy
    loss, elbo              from the model's noise predictions on the reference images (ddpm.py's formulas)
"""
import argparse
from dataclasses import dataclass

import numpy as np
import torch

from data import DataError, comma_list


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
    try:
        keys = list(BEHAVIORS) if text == "all" else comma_list(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e))
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

