"""The field's attribution baselines, beside the method: scores read off the full model (no unlearning, no
retraining), gradient scores (TRAK, D-TRAK, gradient similarity) and leave-one-out retraining. Each writes the
attributions file fit_datamodel.py writes (scores, intercept, method, behavior), with the scores of every
behaviour of the run, its compute (MACs, seconds) and its definition, so eval_lds.py scores every method alike.

    python baselines.py --run runs/x --data digits                      # every baseline the run allows
    python baselines.py --run runs/x --data digits --only loss,trak     # some of them
    python baselines.py --run runs/x --data digits --only loo           # needs models/loo (run_pipeline.sh LOO=1)

The baselines (BASELINES below). Each reads one per-image measure (MEASURES) and states, by its definition,
which way is harmful; a contributor's score aggregates its images' (Lin, Lu et al. 2025: mean or max for
similarities, sum for gradient scores):

    loss             the full model's denoising error on the image, (t, eps) draws shared by every image; high:
                     an image the model does not fit, harmful
    pixel-nn         distance (pixels) to the nearest of the full model's samples; far: unlike anything it
                     generates, harmful
    feature-nn       the same in the run's feature space (the FID features)
    feature-sim      mean cosine similarity of the image's features to the samples' (the authors' CLIP
                     similarity, in the run's feature space); similar: what the model generates, helpful
    feature-sim-max  the same, a contributor scored by its most similar image
    grad-sim         mean cosine between the image's loss gradient and each sample's (randomly projected);
                     aligned: training on it fits the samples, helpful
    trak             TRAK (Park et al. 2023): phi_i^T (Phi^T Phi + lambda I)^-1 mean_s phi_s with phi the projected
                     gradients of the DDPM loss, the mean over an ensemble of models (--ensemble: the full model and
                     the run's first leave-one-out retrainings); positive: including the image lowers the samples'
                     loss, helpful
    d-trak           the same with the output function ||eps_theta(x_t, t)||^2 (Zheng et al. 2024, D-TRAK); both at
                     that paper's 10 timesteps per image (--dtrak-draws; TRAK and grad-sim: --grad-draws)
    ekfac            influence functions with an EK-FAC Gauss-Newton (Mlodozeniec et al. 2025; ekfac.py): grad m^T
                     (G + lambda I)^-1 grad L_i, m the samples' mean loss, both averaged over --grad-draws (t, eps)
                     draws, G fitted on the training images at --ekfac-draws; positive: including the image lowers
                     the samples' loss, helpful
    NAME-ref         each similarity and gradient baseline against the reference images (what FID and the loss
                     compare with) instead of the full model's samples; a nearest neighbour leaves out the image's
                     own original
    loo              leave one contributor out: the behaviour of the model trained on everything minus that of the
                     model retrained without the contributor (one retraining per contributor; at the image level
                     only when asked for)
    guda             GUDA (ICML 2026): the same difference with the contributor unlearned from the full model
                     instead of retrained (unlearn.py --method guda on masks/loo.npy; run_pipeline.sh GUDA=1): the
                     change of every behaviour, the ELBO (elbo) and the headline's among them
    proxy            SurrogateSHAP's proxy game: coalitions valued by sampling one contributor-conditioned model
                     with their ids (proxy_game.py; run_pipeline.sh PROXY=N), Shapley values from SurrogateSHAP's
                     trees fitted to them (fit_datamodel.fit_surrogate_shap); sampled behaviours only

Sign convention of the scores, as for every method: a positive score raises the behaviour. A baseline's harm
becomes +harm for a behaviour where lower is better (FID), -harm where higher is better, and no score for a
class share (no better direction). The sign is the definition's, never fitted to the ground truth.
"""
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from data import (ArgumentParser, DataError, add_data_args, comma_list, dataset_from_args, load_dataset, positive_int,
                  positive_float, run, save_npz, script_settings, to_model_space)
import runfolder
from runfolder import aligned, behavior_keys, behavior_values, better, load_behaviors, load_groups, load_masks
from ddpm import Schedule, build_model, file_sha256, forward_macs, load_checkpoint, pick_device, q_sample, shared_draws
from fit_datamodel import largest_first


@dataclass(frozen=True)
class Baseline:
    measure: str  # the per-image quantity it reads (MEASURES); loo reads retrained models instead
    harmful: str  # "high" or "low": which end of the measure is harmful, by the baseline's definition
    aggregate: str  # a contributor's score from its images': mean, max (of the measure) or sum
    how: str
    # what a gradient method's scores are a linear model of: "samples-loss" (the full model's samples' loss),
    # "loss" (the reference images' loss: compute_fid's behaviour of that name), or D-TRAK's own output function
    # ("samples-norm", "reference-norm"); "" for the others. The report judges a gradient method against the samples
    # apart: FID is not what it computes.
    linearises: str = ""


BASELINES = {
    "loss": Baseline("loss", "high", "mean", "the full model's mean denoising error on the image (shared (t, eps) "
                     "draws); a high error (an image the model does not fit) is harmful"),
    "pixel-nn": Baseline("pixel_nn", "high", "mean", "distance in pixels to the nearest sample of the full model; far "
                         "(unlike anything generated) is harmful"),
    "feature-nn": Baseline("feature_nn", "high", "mean", "distance in the run's feature space to the nearest sample "
                           "of the full model; far is harmful"),
    "feature-sim": Baseline("feature_sim", "low", "mean", "mean cosine similarity of the image's features to the full "
                            "model's samples (CLIP-similarity analogue); similar (what the model generates) is helpful"),
    "feature-sim-max": Baseline("feature_sim", "low", "max", "feature-sim, a contributor scored by its most similar "
                                "image"),
    "grad-sim": Baseline("grad_sim", "low", "mean", "mean cosine between the image's projected loss gradient and each "
                         "sample's; aligned (training on it fits the samples) is helpful", "samples-loss"),
    "trak": Baseline("trak", "low", "sum", "TRAK: phi_i^T (Phi^T Phi + lambda I)^-1 mean_s phi_s, phi the projected "
                     "gradients of the DDPM loss, averaged over an ensemble of models; positive (including it lowers the "
                     "samples' loss) is helpful", "samples-loss"),
    "d-trak": Baseline("d_trak", "low", "sum", "D-TRAK: TRAK with the output function ||eps_theta(x_t, t)||^2, the "
                       "same ensemble; positive is helpful", "samples-norm"),
    "ekfac": Baseline("ekfac", "low", "sum", "influence function with an EK-FAC Gauss-Newton: grad m^T (G + lambda "
                      "I)^-1 grad L_i, m the full model's samples' mean loss, (t, eps) averaged; positive (including it "
                      "lowers the samples' loss) is helpful", "samples-loss"),
    "loo": Baseline("loo", "", "", "leave one contributor out: the behaviour of the full model minus that of a "
                    "retraining without the contributor (same recipe and seed); positive raises the behaviour"),
    "guda": Baseline("guda", "", "", "GUDA: the behaviour of the full model minus that of the full model with the "
                     "contributor unlearned (unlearn.py --method guda: descent on the rest plus a forget term toward "
                     "the nearest kept images); positive raises the behaviour"),
    "proxy": Baseline("proxy", "", "", "SurrogateSHAP's proxy game: each coalition of the unlearned models' subsets "
                      "valued by sampling one contributor-conditioned model with the coalition's ids (guidance 1.4), "
                      "Shapley values from SurrogateSHAP's trees fitted to those values; positive raises the behaviour"),
}
# The baselines read from behaviours of models other than the full model (behaviors/NAME.npz), each with its reader
# (run folder, the full model's behaviours) -> (scores, extra, MACs, seconds): leave-one-out retraining and GUDA's
# unlearning (one model per contributor left out, masks/loo.npy's rows), and the proxy game's coalitions
# (masks/unlearn.npy's rows).
POOLED = {"loo": lambda run_dir, full: pooled_baseline(run_dir, full, "loo"),
          "guda": lambda run_dir, full: pooled_baseline(run_dir, full, "guda"),
          "proxy": lambda run_dir, full: proxy_baseline(run_dir)}
# The same similarity and gradient baselines against the other natural target: the reference images FID and the loss
# compare with (the uncorrupted data, or the run's --ref-data), not the full model's samples. A nearest-neighbour
# distance leaves out the image's own original (it would be 0 for every clean image); a mean over the reference keeps it.
REFERENCE = {"pixel-nn": "pixel_nn_ref", "feature-nn": "feature_nn_ref", "feature-sim": "feature_sim_ref",
             "feature-sim-max": "feature_sim_ref", "grad-sim": "grad_sim_ref", "trak": "trak_ref", "d-trak": "d_trak_ref",
             "ekfac": "ekfac_ref"}
BASELINES.update({f"{name}-ref": Baseline(measure, BASELINES[name].harmful, BASELINES[name].aggregate,
                                          BASELINES[name].how.replace("the full model's samples", "the reference images")
                                          .replace("sample of the full model", "reference image (its own left out)")
                                          .replace("each sample's", "each reference image's")
                                          .replace("mean_s phi_s", "mean_r phi_r over the reference images")
                                          .replace("the full model's samples' mean loss", "the reference images' mean loss")
                                          + " (against the reference images)",
                                          BASELINES[name].linearises.replace("samples-loss", "loss")
                                          .replace("samples-", "reference-"))
                  for name, measure in REFERENCE.items()})
for name in POOLED:  # the pooled baselines last, as in the report's table
    BASELINES[name] = BASELINES.pop(name)


def parse_args(argv=None, doc=__doc__, parents=()):
    """baselines.py's arguments; a bench that runs the baselines' set-up passes its own description (doc) and its own
    flags (parents: parsers made with add_help=False), so that its --help describes it."""
    p = ArgumentParser(doc, parents)
    add_data_args(p)
    p.add_argument("--run", required=True, help="run folder: full.pt, masks/ (groups.npy for contributors), "
                   "behaviors/full.npz (the behaviours and their directions); writes attributions/baseline-NAME.npz")
    p.add_argument("--only", default=None, help="comma-separated baselines (default: all the run allows; loo and guda "
                   "where their models' behaviours exist)")
    p.add_argument("--headline", default="auto", help="the behaviour of each file's `scores` (auto: fid when the run "
                   "has it, else the first); every other behaviour's scores are in the file too")
    p.add_argument("--n-samples", type=positive_int, default=None, help="samples of the full model (default: as its "
                   "behaviours were measured, so they are the samples FID saw)")
    p.add_argument("--ddim-steps", type=positive_int, default=None, help="DDIM steps (default: as its behaviours)")
    p.add_argument("--draws", type=positive_int, default=4, help="shared (t, eps) draws per image for the loss")
    p.add_argument("--grad-draws", type=positive_int, default=10, help="shared (t, eps) draws per image for the loss "
                   "gradients of grad-sim and TRAK (D-TRAK's paper runs its TRAK baseline at 10 timesteps, and 100)")
    p.add_argument("--dtrak-draws", type=positive_int, default=10, help="shared (t, eps) draws per image for D-TRAK's "
                   "gradients (its paper: 10 timesteps per image, and 100; 10 on a CPU)")
    p.add_argument("--ensemble", type=positive_int, default=2, help="models whose TRAK / D-TRAK scores are averaged "
                   "(TRAK's ensemble): the full model and the first leave-one-out retrainings the run has (models/loo, "
                   "each trained on all but one contributor); the full model alone where it has none")
    p.add_argument("--ekfac-draws", type=positive_int, default=2, help="(t, eps) draws per training image of EK-FAC's "
                   "fit of the Gauss-Newton (its scores use --grad-draws)")
    p.add_argument("--ekfac-damping", type=positive_float, default=0.1, help="EK-FAC's lambda as a fraction of each "
                   "layer's mean eigenvalue (kronfluence's heuristic)")
    p.add_argument("--grad-samples", type=positive_int, default=500, help="generated samples whose gradients the "
                   "gradient baselines average over (the first of --n-samples)")
    p.add_argument("--proj-dim", type=positive_int, default=1024, help="random projection of the gradients (TRAK's "
                   "dimension; dattri's projector)")
    p.add_argument("--ridge", type=positive_float, default=0.01, help="TRAK's lambda as a fraction of the mean "
                   "eigenvalue of Phi^T Phi (a scale-free damping of the kernel)")
    p.add_argument("--dtrak-ridge", type=positive_float, default=None, help="D-TRAK's lambda (default: --ridge)")
    p.add_argument("--dtrak-proj-dim", type=positive_int, default=None, help="D-TRAK's projection (default: "
                   "--proj-dim)")
    p.add_argument("--ref-queries", choices=["others", "all"], default="others", help="what a training image's score "
                   "against the reference images reads, where those are the training images' clean originals (the "
                   "default's FID reference): 'others', the reference images of the other contributors (the other "
                   "images at the image level), so that no image meets its own original (self-influence); 'all', every "
                   "one. A --ref-data set of other images is read whole either way")
    p.add_argument("--features", choices=["auto", "cnn", "inception"], default="auto",
                   help="feature space of feature-nn and feature-sim (auto: the run's behaviours')")
    p.add_argument("--inception-weights", default=None, help="as compute_fid.py's")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per gradient batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples' initial noise (compute_fid's), the "
                   "draws and the projection")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="recompute baselines whose files exist")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The measures: what the baselines read of the full model, each computed once on first use with its compute
# (MACs of the diffusion model: a forward pass per image and step, a backward pass counted as two) and seconds.

class FullModel:
    """The full model of a run, its training images, and the measures computed from them (lazily, cached)."""

    def __init__(self, ckpt, ds, args, settings, device, groups=None):
        self.ckpt, self.ds, self.args, self.settings, self.device = ckpt, ds, args, settings, device
        self.model = build_model(ckpt, "ema").to(device).eval()
        self.schedule = Schedule(**ckpt["schedule"])
        self.macs = forward_macs(self.model)
        self.x0 = to_model_space(ds.images)
        self.ref, self.same_index = reference_images(args, ds, settings)
        self.x_ref = to_model_space(self.ref.images)
        # reference image q is training image q's original: a score against the reference images reads, for each
        # training image, only those of the other contributors (--ref-queries others): one label per image, shared
        self.labels, self.by_contributor = None, groups is not None
        if self.same_index and getattr(args, "ref_queries", "all") == "others":
            self.labels = np.asarray(groups) if groups is not None else np.arange(len(ds))
        # the ensemble of TRAK and D-TRAK: the full model, then the run's leave-one-out retrainings in order
        self.member_files = [runfolder.checkpoint(args.run, "full")] + loo_members(args.run, args.ensemble - 1)
        self.done, self.cost = {}, {}  # name -> value; name -> (macs, seconds) of that step alone

    def get(self, name):
        """A step's value (samples, features, gradients, a measure), computed on first use; the steps it needs
        first, so that each step's seconds are its own."""
        for step in NEEDS.get(name, [name]):
            if step not in self.done:
                t0 = time.perf_counter()
                value, macs = STEPS[step](self)
                self.done[step], self.cost[step] = value, (float(macs), time.perf_counter() - t0)
        return self.done[name]

    def recompute(self, measure, **changes):
        """A measure computed again after a bench that tunes it changed a setting (in self.args, or `changes`: the
        attributes to set, such as labels, the query labels); the steps it needs (gradients, curvature) stay cached."""
        for key, value in changes.items():
            setattr(self, key, value)
        self.done.pop(measure, None)
        return self.get(measure)

    def total_cost(self, name):
        """(MACs, seconds) of a measure with every step it needs (a user running that baseline alone pays them)."""
        self.get(name)
        return tuple(float(sum(self.cost[step][i] for step in NEEDS[name])) for i in (0, 1))


def _samples(m):
    """The full model's DDIM samples from compute_fid's initial noise: the samples its FID was measured on."""
    from compute_fid import sample_model
    n, steps = m.settings["n_samples"], m.settings["ddim_steps"]
    c, h = m.x0.shape[1:3]
    noise = torch.randn((n, c, h, h), generator=torch.Generator().manual_seed(m.args.seed))
    x = sample_model(m.ckpt, m.schedule, noise, steps, 500, m.device)
    return x, n * steps * m.macs


def _extractor(m):
    """The run's feature network (compute_fid's)."""
    from features import cnn_extractor, inception_extractor
    if m.settings["features"] == "cnn":
        return cnn_extractor(load_dataset(m.args.data), m.args.run, m.args.seed, m.device)[0], 0
    return inception_extractor(m.args.inception_weights, m.device)[0], 0


def _features(m):
    """(training images' features, samples' features) in the run's feature space."""
    from features import features_of
    extract = m.get("extractor")
    train = features_of(extract, m.x0, 500)[0].astype(np.float64)
    return (train, features_of(extract, m.get("samples"), 500)[0].astype(np.float64)), 0


def reference_images(args, ds, settings):
    """(the reference set FID and the loss compare with, whether its image i is training image i's original): the
    uncorrupted data, or the run's --ref-data (as its behaviours recorded it, by sha256)."""
    from data import images_sha256
    ref = load_dataset(args.data)
    recorded = settings.get("ref_sha256", "")
    if recorded and images_sha256(ref.images) != recorded:
        if not settings.get("ref_data"):
            raise DataError("the run's FID reference is not the uncorrupted training data, and its name is not recorded")
        return load_dataset(settings["ref_data"]), False
    return ref, len(ref) == len(ds)


def loo_members(run_dir, k):
    """The first k leave-one-out retrainings of the run, as many as it has."""
    folder = runfolder.models(run_dir, "loo")
    found = sorted(f for f in os.listdir(folder) if f.endswith(".pt")) if os.path.isdir(folder) else []
    return [os.path.join(folder, f) for f in found[:k]]


def _ref_features(m):
    from features import features_of
    extract = m.get("extractor")
    return features_of(extract, m.x_ref, 500)[0].astype(np.float64), 0


def _pixel_nn_ref(m):
    exclude = np.arange(len(m.x0)) if m.same_index else None
    return nearest_distance(m.x0.flatten(1).numpy(), m.x_ref.flatten(1).numpy(), exclude=exclude), 0


def _feature_nn_ref(m):
    train, _ = m.get("features")
    return nearest_distance(train, m.get("ref_features"), exclude=np.arange(len(train)) if m.same_index else None), 0


def _feature_sim_ref(m):
    train, _ = m.get("features")
    return against_queries(unit_rows(train), unit_rows(m.get("ref_features")), m.labels), 0


def against_queries(train, query, labels=None):
    """(N,) train_i . the mean of the query rows: over every query (labels None), or over the queries whose label
    is not training row i's (query q is training image q's original: labels (N,) serves both)."""
    if labels is None:
        return train @ query.mean(0)
    sums = np.zeros((int(labels.max()) + 1, query.shape[1]))
    np.add.at(sums, labels, query)
    counts = np.bincount(labels, minlength=len(sums))
    own = np.einsum("ij,ij->i", train, sums[labels])
    return (train @ query.sum(0) - own) / np.maximum(len(query) - counts[labels], 1)


def _loss(m):
    """Each training image's denoising error, mean over the shared draws, per pixel."""
    from ddpm import denoising_errors
    _, errors = denoising_errors(m.model, m.schedule, m.x0.to(m.device), seed=m.args.seed, draws=m.args.draws)
    return errors.mean(0).numpy() / m.x0[0].numel(), len(m.x0) * m.args.draws * m.macs


def nearest_distance(a, b, block=1024, exclude=None):
    """Each row of a's Euclidean distance to its nearest row of b; with `exclude`, row i of a never meets row
    exclude[i] of b (its own original in a reference set)."""
    out = np.empty(len(a))
    b = torch.as_tensor(b, dtype=torch.float64)
    for i in range(0, len(a), block):
        d = torch.cdist(torch.as_tensor(a[i:i + block], dtype=torch.float64), b)
        if exclude is not None:
            d[torch.arange(len(d)), torch.as_tensor(exclude[i:i + block])] = float("inf")
        out[i:i + block] = d.min(1).values.numpy()
    return out


def _pixel_nn(m):
    x = m.get("samples")
    return nearest_distance(m.x0.flatten(1).numpy(), x.flatten(1).numpy()), 0


def _feature_nn(m):
    train, samples = m.get("features")
    return nearest_distance(train, samples), 0


def unit_rows(a):
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _feature_sim(m):
    train, samples = m.get("features")
    return unit_rows(train) @ unit_rows(samples).mean(0), 0  # the mean of the cosines over the samples


# Output functions of the gradient baselines, for one image x0 and one draw (t, eps): the DDPM loss (TRAK, grad-sim)
# and D-TRAK's squared norm of the predicted noise.
OUTPUTS = {
    "loss": lambda eps_pred, eps: ((eps_pred - eps) ** 2).sum(),
    "norm": lambda eps_pred, eps: (eps_pred ** 2).sum(),
}


def per_image_gradients(model, schedule, x0, output, *, seed, draws, batch_size, project=None, only=None):
    """(N, P) gradients of the output function of each image of x0 with respect to every weight, the mean over its
    `draws` shared (t, eps) draws (ddpm.shared_draws), one image at a time through torch.func.vmap; with `project`
    (a linear map of (B, P) rows) their projections instead, batch by batch: the raw gradients of a large model never
    sit in memory together (50,000 CIFAR-10 images x 35.7M weights), only a batch's. With `only` (indices), just those
    rows are computed (each with its own draws, as in a pass over all of x0); the others stay 0."""
    from torch.func import functional_call, grad, vmap
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    f = OUTPUTS[output]

    def one(p, x, t, eps):  # x (C, H, W), t (), eps (C, H, W) -> the output of this one image
        xt = q_sample(schedule, x[None], t[None], eps[None])
        return f(functional_call(model, (p, buffers), (xt, t[None]))[0], eps)
    grads = vmap(grad(one), in_dims=(None, 0, 0, 0))
    rows = np.arange(len(x0)) if only is None else np.unique(np.asarray(only, dtype=np.int64))
    out = None
    for start, stop, chunk in chunks_of_draws(len(x0), x0.shape[1:], schedule.T, seed, draws):
        mine = rows[(rows >= start) & (rows < stop)]
        for b in range(0, len(mine), batch_size):
            sel = torch.as_tensor(mine[b:b + batch_size])
            total = 0
            for t, eps in chunk:  # the mean over the draws, then one projection of it
                g = grads(params, x0[sel], t[sel - start].to(x0.device), eps[sel - start].to(x0.device))
                total = total + torch.cat([v.flatten(1) for v in g.values()], 1) / draws
            total = total.cpu()
            total = project(total) if project is not None else total
            out = torch.zeros(len(x0), total.shape[1]) if out is None else out
            out[sel] = total
    return out


def chunks_of_draws(n, image_shape, T, seed, draws):
    """ddpm.shared_draws grouped by block of images: (start, stop, [(t, eps) of each draw])."""
    chunk, where = [], None
    for start, stop, _, t, eps in shared_draws(n, image_shape, T, seed=seed, draws=draws):
        if where is not None and where != (start, stop):
            yield (*where, chunk)
            chunk = []
        where = (start, stop)
        chunk.append((t, eps))
    if where is not None:
        yield (*where, chunk)


def projected_gradients(m, output):
    """[(phi_train, phi_gen, phi_ref)] of each model of the ensemble (the full model first): the gradients of the
    training images, of the first --grad-samples samples of the full model and of the reference images, randomly
    projected to --proj-dim (dattri's projector on the CPU, seeded: one matrix for all). A reference image that is a
    training image's own original at the same index has its gradient (the same image, the same draws): only the
    others are computed."""
    from dattri.func.projection import random_project
    n_gen = min(m.args.grad_samples, len(m.get("samples")))
    n_params = sum(v.numel() for v in m.model.parameters())
    proj_dim = dtrak(m.args, "proj_dim") if output == "norm" else m.args.proj_dim
    project = random_project(torch.zeros(1, n_params), 1, proj_dim, 32, m.args.seed, "normal", device="cpu")
    changed = np.flatnonzero((m.ds.images != m.ref.images).reshape(len(m.ds), -1).any(1)) if m.same_index else None
    draws = m.args.dtrak_draws if output == "norm" else m.args.grad_draws
    common = dict(seed=m.args.seed, draws=draws, batch_size=m.args.batch_size, project=project)
    out, rows = [], 0
    for path in m.member_files:
        model = m.model if path == m.member_files[0] else build_model(load_checkpoint(path), "ema").to(m.device).eval()
        phi_train, phi_gen = (per_image_gradients(model, m.schedule, x.to(m.device), output, **common).double().numpy()
                              for x in (m.x0, m.get("samples")[:n_gen]))
        if changed is not None:
            phi_ref = phi_train.copy()
            if len(changed):
                phi_ref[changed] = per_image_gradients(model, m.schedule, m.x_ref.to(m.device), output, only=changed,
                                                       **common).double().numpy()[changed]
            rows += len(m.x0) + n_gen + len(changed)
        else:
            phi_ref = per_image_gradients(model, m.schedule, m.x_ref.to(m.device), output, **common).double().numpy()
            rows += len(m.x0) + n_gen + len(m.x_ref)
        out.append((phi_train, phi_gen, phi_ref))
    # a backward pass costs about two forward passes; the projection rows x P x proj_dim
    macs = 3 * rows * draws * m.macs + rows * n_params * proj_dim
    return out, macs


def dtrak(args, setting):
    """D-TRAK's ridge or projection size: its own flag where given, else TRAK's (bench/tune_baselines.py chooses
    each on its own)."""
    own = getattr(args, f"dtrak_{setting}", None)
    return own if own is not None else getattr(args, setting)


def ensemble_trak(phis, target, ridge, labels=None):
    """TRAK's ensemble (Park et al. 2023): the mean over models of each model's scores for the mean output over the
    target (1: the samples, 2: the reference images, each training image against the other labels' where labels
    are given)."""
    return np.mean([trak_scores(p[0], p[target], ridge, labels if target == 2 else None) for p in phis], axis=0)


def trak_scores(phi_train, phi_gen, ridge, labels=None):
    """TRAK's score of each training image for the mean output over the generated samples:
    phi_i^T (Phi^T Phi + lambda I)^-1 mean_s phi_s, lambda = ridge x the mean eigenvalue of Phi^T Phi; with labels,
    the mean over the targets of the other labels (against_queries)."""
    kernel = phi_train.T @ phi_train
    kernel += ridge * np.trace(kernel) / len(kernel) * np.eye(len(kernel))
    if labels is None:
        return phi_train @ np.linalg.solve(kernel, phi_gen.mean(0))
    return against_queries(np.linalg.solve(kernel, phi_train.T).T, phi_gen, labels)  # (the kernel is symmetric)


def _grad_sim(m, target):  # the full model's (the ensemble's first) gradients: a similarity, not an ensemble method
    phi = m.get("phi_loss")[0]
    return against_queries(unit_rows(phi[0]), unit_rows(phi[target]), m.labels if target == 2 else None), 0


def _ekfac_fit(m):
    """EK-FAC's curvature of the training loss (ekfac.fit_ekfac): two passes over the training images at
    --ekfac-draws draws, each a forward and a backward pass (two forwards' worth)."""
    from ekfac import fit_ekfac
    curvature = fit_ekfac(m.model, m.schedule, m.x0.to(m.device), seed=m.args.seed, draws=m.args.ekfac_draws,
                          batch_size=m.args.batch_size)
    return curvature, 2 * 3 * len(m.x0) * m.args.ekfac_draws * m.macs


def _ekfac(m, target):
    """EK-FAC influence of every training image on the mean loss of the first --grad-samples samples (target 1) or
    of the reference images (2), both averaged over --grad-draws draws: the query's gradient (a backward pass per
    query image and draw) and each training image's derivative along it (a forward-mode pass, two forwards' worth)."""
    from ekfac import influence_scores
    x_query = m.get("samples")[:m.args.grad_samples] if target == 1 else m.x_ref
    # against the other contributors' reference images; at the image level every one (one label an image would
    # cost a backward pass per query image alone: EK-FAC keeps its self-influence there)
    labels = (m.labels, m.labels) if target == 2 and m.labels is not None and m.by_contributor else None
    scores, _ = influence_scores(m.model, m.schedule, m.x0.to(m.device), x_query.to(m.device), seed=m.args.seed,
                                 draws=m.args.grad_draws, damping=m.args.ekfac_damping, batch_size=m.args.batch_size,
                                 curvature=m.get("ekfac_fit"), labels=labels)
    return scores, 3 * (len(x_query) + len(m.x0)) * m.args.grad_draws * m.macs


STEPS = {  # name -> function(FullModel) -> (value, MACs of this step alone)
    "samples": _samples,
    "extractor": _extractor,
    "features": _features,
    "ref_features": _ref_features,
    "loss": _loss,
    "pixel_nn": _pixel_nn,
    "feature_nn": _feature_nn,
    "feature_sim": _feature_sim,
    "pixel_nn_ref": _pixel_nn_ref,
    "feature_nn_ref": _feature_nn_ref,
    "feature_sim_ref": _feature_sim_ref,
    "phi_loss": lambda m: projected_gradients(m, "loss"),
    "phi_norm": lambda m: projected_gradients(m, "norm"),
    "grad_sim": lambda m: _grad_sim(m, 1),
    "grad_sim_ref": lambda m: _grad_sim(m, 2),
    "trak": lambda m: (ensemble_trak(m.get("phi_loss"), 1, m.args.ridge), 0),
    "trak_ref": lambda m: (ensemble_trak(m.get("phi_loss"), 2, m.args.ridge, m.labels), 0),
    "d_trak": lambda m: (ensemble_trak(m.get("phi_norm"), 1, dtrak(m.args, "ridge")), 0),
    "d_trak_ref": lambda m: (ensemble_trak(m.get("phi_norm"), 2, dtrak(m.args, "ridge"), m.labels), 0),
    "ekfac_fit": _ekfac_fit,
    "ekfac": lambda m: _ekfac(m, 1),
    "ekfac_ref": lambda m: _ekfac(m, 2),
}
_FEATURES = ["samples", "extractor", "features"]
NEEDS = {  # every step a measure needs, in order, itself last
    "loss": ["loss"], "pixel_nn": ["samples", "pixel_nn"], "feature_nn": _FEATURES + ["feature_nn"],
    "feature_sim": _FEATURES + ["feature_sim"], "grad_sim": ["samples", "phi_loss", "grad_sim"],
    "trak": ["samples", "phi_loss", "trak"], "d_trak": ["samples", "phi_norm", "d_trak"],
    "pixel_nn_ref": ["pixel_nn_ref"], "feature_nn_ref": _FEATURES + ["ref_features", "feature_nn_ref"],
    "feature_sim_ref": _FEATURES + ["ref_features", "feature_sim_ref"],
    "grad_sim_ref": ["samples", "phi_loss", "grad_sim_ref"], "trak_ref": ["samples", "phi_loss", "trak_ref"],
    "d_trak_ref": ["samples", "phi_norm", "d_trak_ref"], "ekfac": ["samples", "ekfac_fit", "ekfac"],
    "ekfac_ref": ["ekfac_fit", "ekfac_ref"],
}
MEASURES = list(NEEDS)


# ----------------------------------------------------------------------------------------------
# From a measure to attribution scores

def full_model(ckpt, ds, *, n_samples, ddim_steps, features="cnn", device="cpu", **settings):
    """The baselines' view of a full model with plain arguments: FullModel of the checkpoint dict `ckpt` and its
    training data `ds` (data.load_dataset), sampled `n_samples` times with `ddim_steps` DDIM steps and measured in
    `features`; `settings` are this script's flags by their Python names (draws=4, proj_dim=256, ...; `python
    baselines.py --help`), the rest its defaults. Its .get(measure) computes a baseline's per-image values:

        fm = baselines.full_model(ckpt, ds, n_samples=500, ddim_steps=10)
        harm = baselines.harm_of("loss", fm.get(baselines.BASELINES["loss"].measure), groups)"""
    args = script_settings(parse_args, ["--run", settings.pop("run", ".")], **settings)
    return FullModel(ckpt, ds, args, dict(n_samples=n_samples, ddim_steps=ddim_steps, features=features), device)


def aggregate(values, groups, how):
    """Per-image values -> per contributor (mean, max or sum over its images); as they are without groups."""
    if groups is None:
        return np.asarray(values, np.float64)
    g = groups.max() + 1
    if how == "max":
        out = np.full(g, -np.inf)
        np.maximum.at(out, groups, values)
        return out
    total = np.bincount(groups, weights=values, minlength=g)
    return total if how == "sum" else total / np.bincount(groups, minlength=g)


def harm_of(baseline, values, groups):
    """A baseline's harm per image or contributor: larger is more harmful, by its definition."""
    b = BASELINES[baseline]
    agg = aggregate(values, groups, b.aggregate)
    return agg if b.harmful == "high" else -agg


def scores_by_behavior(harm, directions):
    """{behaviour: scores} from a harm: +harm where lower is better, -harm where higher is better, none for a
    behaviour without a better direction (a class share)."""
    return {k: (harm if d == "lower" else -harm) for k, d in directions.items() if d in ("lower", "higher")}


def loo_scores(full, loo, masks):
    """{behaviour: scores} of leave-one-out, every behaviour of both files (class shares too): score_j = v(all) -
    v(all without j), v(all) the full model's behaviour, masks/loo.npy's rows each leaving out one contributor
    (checked by sha256 against the models' rows, training seeds averaged)."""
    left_out = [np.flatnonzero(~row) for row in masks]
    if masks.shape[0] != masks.shape[1] or any(len(j) != 1 for j in left_out) or \
            len({int(j[0]) for j in left_out}) != len(masks):
        raise DataError("the leave-one-out masks must leave out one contributor a row, every one once")
    left_out = np.concatenate(left_out)
    out = {}
    for name in expand_keys(loo):
        rows, _, y = aligned(masks, loo, name, "the leave-one-out masks")
        if len(rows) != len(masks):
            raise DataError(f"the leave-one-out behaviours have the models of {len(rows)} of the {len(masks)} rows "
                            f"of their masks: finish their stage first")
        v_loo = np.empty(len(masks))
        v_loo[left_out[rows]] = y
        out[name] = float(behavior_values(full, name)[0]) - v_loo
    return out


def expand_keys(beh):
    """A behaviours file's keys, class shares as class:K."""
    keys = []
    for key in behavior_keys(beh):
        shares = beh["class_share"] if "class_share" in beh else beh.get("class_hist")  # (older files: counts)
        keys += [f"class:{k}" for k in range(shares.shape[1])] if key == "class" else [key]
    return keys


# ----------------------------------------------------------------------------------------------
# The script

ENSEMBLED = ("trak", "trak_ref", "d_trak", "d_trak_ref")  # measures averaged over the ensemble's models


def settings_of(args, full, ds):
    """What a baseline's numbers depend on (recorded in its file; a file of other settings is recomputed). Features
    'auto' where the full model's behaviours name none: as compute_fid.py's auto, the cnn where the data has labels."""
    kind = args.features if args.features != "auto" else str(full.get("features", "none"))
    if kind not in ("cnn", "inception"):
        kind = "cnn" if ds.labels is not None else "inception"
    return dict(n_samples=args.n_samples or int(full["n_samples"]), ddim_steps=args.ddim_steps or int(full["ddim_steps"]),
                features=kind, draws=args.draws,
                grad_draws=args.grad_draws, dtrak_draws=args.dtrak_draws, ensemble=args.ensemble,
                ekfac_draws=args.ekfac_draws, ekfac_damping=args.ekfac_damping,
                grad_samples=args.grad_samples,
                proj_dim=args.proj_dim, ridge=args.ridge, dtrak_proj_dim=dtrak(args, "proj_dim"),
                dtrak_ridge=dtrak(args, "ridge"), ref_queries=args.ref_queries, seed=args.seed,
                ref_data=str(full.get("ref_data", "")),
                ref_sha256=str(full.get("ref_sha256", "")))


def named_baselines(only):
    """--only's names, each a key of BASELINES."""
    names = comma_list(only, "--only")
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise DataError(f"unknown baseline {', '.join(unknown)}: use some of {', '.join(BASELINES)}")
    return names


def check(args):
    """What main would refuse once it reads the run (tools/one_process.py --check): --only's names and the headline."""
    if args.only:
        named_baselines(args.only)
    runfolder.check_behavior_key(args.headline, "--headline")


def chosen_baselines(args, run_dir, groups):
    """The baselines to compute: --only's, or every one the run allows (loo and guda where their models were
    measured)."""
    measured = {n for n in POOLED if os.path.exists(runfolder.behaviors(run_dir, n))}
    if args.only:
        names = named_baselines(args.only)
        for n in (n for n in names if n in POOLED and n not in measured):
            unit = "contributor" if groups is not None else "image"
            made = {"loo": f"the full model retrained without each {unit} (bash run_pipeline.sh with LOO=1)",
                    "guda": f"the full model unlearned without each {unit} (bash run_pipeline.sh with GUDA=1)",
                    "proxy": "the coalitions' values (python proxy_game.py, or bash run_pipeline.sh with PROXY=N)"}[n]
            raise DataError(f"{n} needs {runfolder.behaviors(run_dir, n)}: {made}")
        return names
    # at the image level a contributor's most similar image is the image itself: no -max variant
    return [n for n, b in BASELINES.items() if (n not in POOLED or n in measured) and
            (b.aggregate != "max" or groups is not None)]


def up_to_date(path, settings):
    if not os.path.exists(path):
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["settings"])) == settings
    except Exception:
        return False


def setting_up(args):
    """What every score of a run's baselines is computed from (main's and bench/tune_baselines.py's): the full model's
    behaviours, the data, the contributors (None: images) and each behaviour's better direction."""
    full = load_behaviors(runfolder.behaviors(args.run, "full"))
    ds = dataset_from_args(args)
    groups = load_groups(runfolder.masks(args.run, "unlearn"), n=len(ds))
    return full, ds, groups, {k: better(full, k) for k in expand_keys(full)}


def main(args):
    run_dir = args.run
    full, ds, groups, directions = setting_up(args)
    headline = runfolder.headline(args.headline, directions)
    if headline not in directions:
        raise DataError(f"--headline {headline!r} is not a behaviour of {runfolder.behaviors(run_dir, 'full')}")
    names = chosen_baselines(args, run_dir, groups)
    settings = settings_of(args, full, ds)
    # a pooled baseline also depends on its pool's behaviours (a resumed or redone pool): their file's sha256
    settings_for = {n: dict(settings, pool_sha256=file_sha256(runfolder.behaviors(run_dir, n))) if n in POOLED else
                    settings for n in names}
    todo = [n for n in names if args.force or not up_to_date(runfolder.baseline(run_dir, n), settings_for[n])]
    model = FullModel(load_checkpoint(runfolder.checkpoint(run_dir, "full")), ds, args, settings, pick_device(args.device),
                      groups) \
        if any(n not in POOLED for n in todo) else None
    for name in todo:
        if name in POOLED:
            scores, extra, macs, seconds = POOLED[name](run_dir, full)
        else:
            b = BASELINES[name]
            values = model.get(b.measure)
            harm = harm_of(name, values, groups)
            scores, extra = scores_by_behavior(harm, directions), dict(harm=harm, values=values)
            macs, seconds = model.total_cost(b.measure)
            if b.measure in ENSEMBLED:  # the ensemble's other members were trained for it: their training is its cost
                members = [load_checkpoint(f) for f in model.member_files[1:]]
                macs += sum(float(c.get("train_macs", 0.0)) for c in members)
                seconds += sum(float(c.get("seconds", 0.0)) for c in members)
        if headline not in scores:
            raise DataError(f"{name} gives no scores for {headline} (no better direction): choose another --headline")
        keys = list(scores)
        save_npz(runfolder.baseline(run_dir, name), scores=scores[headline], intercept=0.0, method=name, behavior=headline,
                 behaviors=json.dumps(keys), scores_by_behavior=np.stack([scores[k] for k in keys]), macs=macs,
                 seconds=seconds, how=BASELINES[name].how, aggregate=BASELINES[name].aggregate,
                 unit="contributor" if groups is not None else "image", settings=json.dumps(settings_for[name]),
                 ensemble=json.dumps(ensemble_of(run_dir, model, name)), linearises=BASELINES[name].linearises,
                 order=list(BASELINES).index(name), **extra)
        unit = "contributors" if groups is not None else "images"
        order = largest_first(scores[headline] if directions[headline] == "lower" else -scores[headline])
        print(f"{name}: most harmful {unit} for {headline} {order[:5].tolist()} ({macs / 1e9:,.1f} GMACs, "
              f"{seconds:.1f} s)")
    print(f"wrote {len(todo)} baselines to {runfolder.attributions_dir(run_dir)} "
          f"({len(names) - len(todo)} up to date)")


def ensemble_of(run_dir, model, name):
    """The models a baseline's scores average over, as paths inside the run (recorded in its file)."""
    members = model.member_files if BASELINES[name].measure in ENSEMBLED else [runfolder.checkpoint(run_dir, "full")]
    return [runfolder.relative(run_dir, m) for m in members]


def proxy_baseline(run_dir):
    """The proxy game's scores, every behaviour its coalitions were valued on: SurrogateSHAP's Shapley values of the
    trees fitted to them (v(full): the full coalition's value; v(empty): the untrained model's, where measured), and
    its cost: the conditional model's training, and apart the coalitions' sampling."""
    from fit_datamodel import fit_surrogate_shap
    beh = load_behaviors(runfolder.behaviors(run_dir, "proxy"))
    whole = load_behaviors(runfolder.behaviors(run_dir, "proxy_full"))
    empty = runfolder.optional_behaviors(run_dir, "untrained")
    masks = load_masks(runfolder.masks(run_dir, "unlearn"))
    scores = {}
    for name in expand_keys(beh):
        _, X, y = aligned(masks, beh, name, "masks/unlearn.npy")
        v_empty = float(behavior_values(empty, name)[0]) if empty is not None and name in expand_keys(empty) else None
        scores[name] = fit_surrogate_shap(X, y, v_empty, float(behavior_values(whole, name)[0]))[0]
    behavior = dict(behavior_macs=float(np.sum(beh["behavior_macs"]) + np.sum(whole["behavior_macs"])),
                    behavior_seconds=float(np.sum(beh["seconds"])))
    return scores, behavior, float(np.sum(beh["train_macs"])), float(np.sum(beh["train_seconds"]))


def pooled_baseline(run_dir, full, pool):
    """Leave-one-out's (or GUDA's) scores and its cost: every retraining's (unlearning's) training compute, and
    apart its behaviours'."""
    beh = load_behaviors(runfolder.behaviors(run_dir, pool))
    scores = loo_scores(full, beh, load_masks(runfolder.masks(run_dir, "loo")))
    behavior = dict(behavior_macs=float(np.sum(beh.get("behavior_macs", 0.0))),
                    behavior_seconds=float(np.sum(beh.get("seconds", 0.0)) + np.sum(beh.get("loss_seconds", 0.0))))
    return scores, behavior, float(np.sum(beh["train_macs"])), float(np.sum(beh["train_seconds"]))


if __name__ == "__main__":
    run(main, parse_args())
