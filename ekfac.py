"""Influence functions with an EK-FAC inverse curvature, for a diffusion model (Mlodozeniec et al., ICLR 2025, "Influence
Functions for Scalable Data Attribution in Diffusion Models"; EK-FAC: George et al. 2018, Grosse et al. 2023).

The influence of training image i on a measurement m (here: the mean DDPM loss over query images, the full model's
samples or the reference images) is

    s_i = grad m^T (G + lambda I)^-1 grad L_i,

L_i the image's DDPM loss and m the measurement, each averaged over (t, eps) draws (the paper's averaging; ours are
ddpm.shared_draws), G the Gauss-Newton matrix of the training loss. Removing image i moves the weights by about
(1/n) (G + lambda I)^-1 grad L_i, so including it changes m by about -s_i / n: a positive s_i lowers the query loss
(helpful), TRAK's convention.

G is approximated per layer (every Conv2d and Linear; the GroupNorms' few weights are left out, as kronfluence does),
as Kronecker factors A (the layer's input rows, a 1 appended for the bias) and S (the gradients at its output rows),
whose eigenvectors Q_A, Q_S give a basis; EK-FAC replaces the Kronecker eigenvalues by the Gauss-Newton's own
diagonal in that basis, Lambda = E_n[(Q_S^T G_n Q_A)^2] over per-example weight gradients G_n. The gradients at the
output are Monte Carlo samples of the Gauss-Newton: for the loss ||eps_theta - eps||^2 its Hessian in the output is
2 I, so each example backpropagates sqrt(2) z, z ~ N(0, I) (seeded). The damping lambda is a fraction (--damping) of
each layer's mean eigenvalue.

Cost: the fit reads every training image at `fisher_draws` draws (a forward and backward pass each); the query's
gradient one backward pass per query image and draw; the training images' scores one forward pass with a
forward-mode derivative (torch.func.jvp) per image and draw, never a per-image gradient in memory.
"""
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpm import q_sample, shared_draws


def kfac_layers(model):
    """[(name, module)] of the layers EK-FAC covers: every Conv2d and Linear."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def layer_inputs(module, x):
    """(B, L, I) the rows a layer multiplies by its weight (a convolution's unfolded patches, L positions), with a
    column of ones where it has a bias."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise ValueError("EK-FAC here covers zero-padded convolutions without groups")
        a = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                     stride=module.stride).transpose(1, 2)
    else:
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    if module.bias is not None:
        a = torch.cat([a, torch.ones_like(a[..., :1])], -1)
    return a


def output_rows(g):
    """(B, L, O) a layer's output (or its gradient) as rows: a convolution's positions, a linear's leading dims."""
    return g.flatten(2).transpose(1, 2) if g.dim() == 4 else g.reshape(g.shape[0], -1, g.shape[-1])


def weight_matrix(module, weight, bias):
    """A layer's weight (and bias) as the (O, I) matrix layer_inputs' rows multiply."""
    w = weight.reshape(weight.shape[0], -1)
    return torch.cat([w, bias[:, None]], 1) if bias is not None else w


class Recorder:
    """Forward hooks that keep each covered layer's input rows and, after a backward pass, its output gradients."""

    def __init__(self, model):
        self.layers = kfac_layers(model)
        self.inputs, self.grads, self.handles = {}, {}, []
        for name, module in self.layers:
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, out):
            self.inputs[name] = layer_inputs(module, inputs[0].detach())
            out.register_hook(lambda g: self.grads.__setitem__(name, output_rows(g.detach())))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _gauss_newton_passes(model, schedule, x0, *, seed, draws, batch_size):
    """Yields, batch by batch, a Recorder filled by one backward pass of sqrt(2) z through the output of the images'
    noisy versions (shared draws; z seeded from `seed` and the batch)."""
    rec = Recorder(model)
    try:
        for start, stop, d, t, eps in shared_draws(len(x0), x0.shape[1:], schedule.T, seed=seed, draws=draws):
            for i in range(start, stop, batch_size):
                j = min(stop, i + batch_size)
                tb, eb = t[i - start:j - start].to(x0.device), eps[i - start:j - start].to(x0.device)
                out = model(q_sample(schedule, x0[i:j], tb, eb), tb)
                z = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed * 7_919 + d * 1_000_003 + i))
                z = z.to(out.device)
                model.zero_grad(set_to_none=True)
                (out * (math.sqrt(2.0) * z)).sum().backward()
                yield rec
    finally:
        rec.close()
        model.zero_grad(set_to_none=True)


def fit_ekfac(model, schedule, x0, *, seed=0, draws=2, batch_size=64):
    """{layer name: (Q_A, Q_S, Lambda)} of the training images x0: two passes over them, the first for the Kronecker
    factors (their eigenvectors), the second for the corrected eigenvalues (the per-example gradients' squared
    coordinates in that basis, averaged)."""
    model.eval()
    A, S, n = {}, {}, 0
    for rec in _gauss_newton_passes(model, schedule, x0, seed=seed, draws=draws, batch_size=batch_size):
        for name, _ in rec.layers:
            a, g = rec.inputs[name].double(), rec.grads[name].double()
            A[name] = A.get(name, 0) + torch.einsum("bli,blj->ij", a, a)
            S[name] = S.get(name, 0) + torch.einsum("blo,blp->op", g, g)
    basis = {name: (torch.linalg.eigh(A[name])[1], torch.linalg.eigh(S[name])[1]) for name in A}
    lam = {}
    for rec in _gauss_newton_passes(model, schedule, x0, seed=seed, draws=draws, batch_size=batch_size):
        n_batch = None
        for name, _ in rec.layers:
            q_a, q_s = basis[name]
            g_n = torch.einsum("blo,bli->boi", rec.grads[name].double(), rec.inputs[name].double())  # per example
            lam[name] = lam.get(name, 0) + (q_s.T @ g_n @ q_a).pow(2).sum(0)
            n_batch = len(g_n)
        n += n_batch
    return {name: (basis[name][0], basis[name][1], lam[name] / n) for name in basis}


def label_batches(start, stop, labels, batch_size):
    """(label, positions) batches of the images start..stop: of one label each where labels are given (every image at
    its own position, so with its own shared draw), else plain consecutive batches (label None)."""
    if labels is None:
        for i in range(start, stop, batch_size):
            yield None, torch.arange(i, min(stop, i + batch_size))
        return
    block = np.asarray(labels[start:stop])
    for label in np.unique(block):
        where = torch.from_numpy(start + np.flatnonzero(block == label))
        for i in range(0, len(where), batch_size):
            yield label, where[i:i + batch_size]


def query_gradient(model, schedule, x_query, *, seed, draws, batch_size=64, labels=None):
    """{layer name: (O, I) gradient} of the measurement: the mean over the query images and their draws of the
    DDPM loss ||eps_theta(x_t, t) - eps||^2 (summed over pixels). With labels (one per query image): {label: that
    sum over the label's images}, each divided by the same count (all the queries' draws): they add up to the mean."""
    model.eval()
    total = {}
    n = len(x_query) * draws
    for start, stop, _, t, eps in shared_draws(len(x_query), x_query.shape[1:], schedule.T, seed=seed, draws=draws):
        for label, at in label_batches(start, stop, labels, batch_size):
            tb, eb = t[at - start].to(x_query.device), eps[at - start].to(x_query.device)
            model.zero_grad(set_to_none=True)
            (((model(q_sample(schedule, x_query[at], tb, eb), tb) - eb) ** 2).sum() / n).backward()
            part = total.setdefault(label, {name: 0 for name, _ in kfac_layers(model)})
            for name, m in kfac_layers(model):
                part[name] = part[name] + weight_matrix(m, m.weight.grad, m.bias.grad if m.bias is not None
                                                        else None).double()
    model.zero_grad(set_to_none=True)
    return total[None] if labels is None else total


def precondition(curvature, grad, damping):
    """(G_EKFAC + lambda I)^-1 grad, layer by layer: rotate into the eigenbasis, divide by the corrected eigenvalues
    plus lambda (= damping x the layer's mean eigenvalue), rotate back."""
    out = {}
    for name, (q_a, q_s, lam) in curvature.items():
        rotated = q_s.T @ grad[name] @ q_a
        out[name] = q_s @ (rotated / (lam + damping * lam.mean())) @ q_a.T
    return out


def as_tangents(model, layer_vectors):
    """{parameter name: tensor} of the model, the (O, I) layer vectors split back into weight and bias; zero for the
    parameters EK-FAC does not cover."""
    out = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for name, m in kfac_layers(model):
        v = layer_vectors[name].to(m.weight.dtype)
        out[f"{name}.weight"] = v[:, :m.weight[0].numel()].reshape(m.weight.shape)
        if m.bias is not None:
            out[f"{name}.bias"] = v[:, -1]
    return out


def directional_losses(model, schedule, x0, direction, *, seed, draws, batch_size=64, labels=None):
    """(N,) each image's grad L_i . direction, L_i its DDPM loss averaged over its shared draws: the derivative of
    the per-image losses along `direction` ({parameter: tensor}), by forward-mode differentiation. With labels (one
    per image), direction is {label: direction} and each image is differentiated along its label's."""
    from torch.func import functional_call, jvp
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    out = torch.zeros(len(x0), dtype=torch.float64)
    for start, stop, _, t, eps in shared_draws(len(x0), x0.shape[1:], schedule.T, seed=seed, draws=draws):
        for label, at in label_batches(start, stop, labels, batch_size):
            tb, eb = t[at - start].to(x0.device), eps[at - start].to(x0.device)
            xt = q_sample(schedule, x0[at], tb, eb)

            def losses(p):
                return ((functional_call(model, (p, buffers), (xt, tb)) - eb) ** 2).flatten(1).sum(1)
            # torch.func's first jvp scripts a helper of torch's own, and torch 2.14 warns that scripting is deprecated
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
                _, d = jvp(losses, (params,), (direction if labels is None else direction[label],))
            out[at] += d.double().cpu() / draws
    return out


def influence_scores(model, schedule, x_train, x_query, *, seed=0, fisher_draws=2, draws=10, damping=0.1,
                     batch_size=64, curvature=None, labels=None):
    """(scores s_i of the training images for the mean loss of x_query, the curvature): EK-FAC influence, above.
    With labels ((train labels (N,), query labels (Q,))): training image i is scored for the mean loss of the queries
    whose label is not its own (a contributor's images never meet their own clean originals: no self-influence)."""
    model.eval()
    curvature = curvature or fit_ekfac(model, schedule, x_train, seed=seed, draws=fisher_draws, batch_size=batch_size)
    if labels is None:
        q = precondition(curvature, query_gradient(model, schedule, x_query, seed=seed + 1, draws=draws,
                                                   batch_size=batch_size), damping)
        scores = directional_losses(model, schedule, x_train, as_tangents(model, q), seed=seed, draws=draws,
                                    batch_size=batch_size)
        return scores.numpy(), curvature
    train_labels, query_labels = (np.asarray(a) for a in labels)
    parts = query_gradient(model, schedule, x_query, seed=seed + 1, draws=draws, batch_size=batch_size,
                           labels=query_labels)
    total = {name: sum(p[name] for p in parts.values()) for name in next(iter(parts.values()))}
    directions = {}
    for label in np.unique(train_labels):
        own = parts.get(label)
        others = len(x_query) - int(np.sum(query_labels == label))  # the mean over the other queries' draws
        grad = {name: (g - (own[name] if own else 0)) * len(x_query) / max(others, 1) for name, g in total.items()}
        directions[label] = as_tangents(model, precondition(curvature, grad, damping))
    scores = directional_losses(model, schedule, x_train, directions, seed=seed, draws=draws, batch_size=batch_size,
                                labels=train_labels)
    return scores.numpy(), curvature
