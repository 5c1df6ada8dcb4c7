"""The feature networks of compute_fid.py and the reference statistics read off them, cached in a folder (the run
folder: one file per network, reference set and size, each checked against the images' sha256):

    cnn        a small classifier trained on the real training data (seeded; its held-out accuracy printed): its
               penultimate layer (64-d) gives the features, its softmax the class shares and the Inception Score
    inception  pytorch-fid's InceptionV3 pool features (2048-d), the paper's FID, and its classifier's logits
    reference statistics  the Gaussian fit (FID), its floor (two halves of the reference set, also at a model's
               sample size: matched_floor), and the k-NN radii and KID term of the reference features
"""
import os
import re
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from filelock import FileLock  # comes with torch

import runfolder
from data import DataError, images_sha256, save_npz, to_model_space
from ddpm import save_checkpoint
from metrics import DC_K, PR_K, feature_stats, frechet_distance, inception_score, kid_ref_term, knn_radii


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
    path, lock = runfolder.feature_network(cache, _safe(ds.name))
    num_classes = int(ds.labels.max()) + 1
    model = SmallCNN(ds.images.shape[1], num_classes).to(device)
    os.makedirs(cache, exist_ok=True)
    # the pipeline's two behaviour lanes start together: one trains (~10 s on a core), the other waits and loads
    with FileLock(lock):
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


def inception_weights_path(weights):
    """The file of pytorch-fid's Inception weights: `weights`, or the torch hub cache's; refused when missing."""
    import pytorch_fid.inception as pi
    path = weights or os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(pi.FID_WEIGHTS_URL))
    if not os.path.isfile(path):
        raise DataError(f"Inception weights not found at {path}: download {pi.FID_WEIGHTS_URL} there "
                        f"or pass --inception-weights PATH")
    return path


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
        path = inception_weights_path(weights)
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
    values = cached_reference(runfolder.reference_cache(cache, "ref", kind, _safe(ref.name), n), ref, ("mu", "sigma"),
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
    values = cached_reference(runfolder.reference_cache(cache, "floor", kind, _safe(ref.name), n), ref,
                              ("floor_fid", "real_is"), compute)
    return float(values["floor_fid"]), float(values["real_is"])



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
    return cached_reference(runfolder.reference_cache(cache, "matched", kind, _safe(ref.name), n, m), ref,
                            ("floor_matched", "mu_b", "sigma_b", "m", "n_b"), compute)


def reference_knn(extract, ref, cache, kind, batch_size, n_knn, seed=0):
    """What the kNN behaviours need of the reference (cached with the images' sha256): the features of all
    reference images, or of a seeded choice of n_knn (kNN radii cost n_knn^2 distances), their kNN radii for
    k = PR_K and DC_K, and the reference's term of the unbiased MMD^2 (KID)."""
    n = n_knn if 0 < n_knn < len(ref) else len(ref)

    def compute():
        feats = reference_features(extract, ref, n, batch_size, seed).astype(np.float64)
        return dict(features=feats, radii_pr=knn_radii(feats, PR_K), radii_dc=knn_radii(feats, DC_K),
                    kid_yy=np.float64(kid_ref_term(feats)))
    return cached_reference(runfolder.reference_cache(cache, "knn", kind, _safe(ref.name), n), ref,
                            ("features", "radii_pr", "radii_dc", "kid_yy"), compute)

