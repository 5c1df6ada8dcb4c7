"""EK-FAC influence (ekfac.py) against independent computations: per-example gradients one example at a time by
autograd, a dense matrix solve, a loop of dot products."""
import math

import numpy as np
import torch

import ddpm
import ekfac
from conftest import TINY


def tiny():
    torch.manual_seed(0)
    return ddpm.UNet(**TINY).eval(), ddpm.Schedule()


def dense_apply(curvature, vectors, damping):
    """(K diag(Lambda) K^T + lambda I) vec(v) per layer, K = Q_S kron Q_A (row-major vec of the (O, I) matrix),
    by numpy's Kronecker product: the EK-FAC matrix written out."""
    out = {}
    for name, (q_a, q_s, lam) in curvature.items():
        k, lam, v = np.kron(q_s.numpy(), q_a.numpy()), lam.numpy().ravel(), vectors[name].numpy().ravel()
        out[name] = (k @ (lam * (k.T @ v)) + damping * lam.mean() * v).reshape(vectors[name].shape)
    return out


def layer_grads(model):
    return {name: ekfac.weight_matrix(m, m.weight.grad, m.bias.grad if m.bias is not None else None).double().clone()
            for name, m in ekfac.kfac_layers(model)}


def test_corrected_eigenvalues_are_the_per_example_gradients_second_moments():
    """Lambda[p, j] = mean over examples of (q_S,p^T G_n q_A,j)^2, G_n each example's weight gradient of sqrt(2) z .
    eps_theta (the Gauss-Newton's Monte Carlo sample), here by autograd one example at a time with the same z; and
    the bases are orthonormal."""
    model, schedule = tiny()
    x0 = torch.rand(10, 1, 8, 8) * 2 - 1
    curvature = ekfac.fit_ekfac(model, schedule, x0, seed=2, draws=2, batch_size=4)
    assert {n for n, _ in ekfac.kfac_layers(model)} == set(curvature)
    total, n = {name: 0 for name in curvature}, 0
    for start, stop, d, t, eps in ddpm.shared_draws(10, (1, 8, 8), schedule.T, seed=2, draws=2):
        for i in range(start, stop, 4):
            z = torch.randn((min(stop, i + 4) - i, 1, 8, 8), generator=torch.Generator().manual_seed(2 * 7_919 + d *
                                                                                                      1_000_003 + i))
            for b in range(len(z)):
                tb = t[i - start + b:i - start + b + 1]
                model.zero_grad()
                out = model(ddpm.q_sample(schedule, x0[i + b:i + b + 1], tb, eps[i - start + b:i - start + b + 1]), tb)
                (out * math.sqrt(2) * z[b:b + 1]).sum().backward()
                for name, g in layer_grads(model).items():
                    q_a, q_s, _ = curvature[name]
                    total[name] = total[name] + (q_s.T @ g @ q_a) ** 2
                n += 1
    assert n == 20
    for name, (q_a, q_s, lam) in curvature.items():
        torch.testing.assert_close(lam, total[name] / n, rtol=1e-4, atol=1e-6 * float(lam.max()))
        torch.testing.assert_close(q_a.T @ q_a, torch.eye(len(q_a), dtype=q_a.dtype))


def test_preconditioning_inverts_the_dense_ekfac_matrix():
    model, schedule = tiny()
    x0 = torch.rand(12, 1, 8, 8) * 2 - 1
    curvature = ekfac.fit_ekfac(model, schedule, x0, seed=0, draws=1, batch_size=6)
    rng = np.random.default_rng(0)
    grads = {name: torch.as_tensor(rng.normal(size=(len(q_s), len(q_a)))) for name, (q_a, q_s, _) in curvature.items()}
    back = dense_apply(curvature, ekfac.precondition(curvature, grads, 0.1), 0.1)
    for name in curvature:
        np.testing.assert_allclose(back[name], grads[name].numpy(), rtol=1e-6, atol=1e-9)


def test_influence_scores_equal_a_loop_of_dot_products():
    """influence_scores' s_i (forward-mode derivative along the preconditioned query gradient) against: the query
    gradient of the mean loss by autograd on all query images at once, preconditioned (checked above), and each training
    image's loss gradient (mean over its draws) by autograd one image and draw at a time, dotted with it."""
    model, schedule = tiny()
    x_train, x_query = torch.rand(6, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    scores, curvature = ekfac.influence_scores(model, schedule, x_train, x_query, seed=5, fisher_draws=1, draws=2,
                                               damping=0.1, batch_size=3)
    model.zero_grad()
    loss = 0
    for _, _, _, t, eps in ddpm.shared_draws(4, (1, 8, 8), schedule.T, seed=6, draws=2):  # the query's seed: seed + 1
        loss = loss + ((model(ddpm.q_sample(schedule, x_query, t, eps), t) - eps) ** 2).sum() / 8
    loss.backward()
    q = {name: v.numpy() for name, v in ekfac.precondition(curvature, layer_grads(model), 0.1).items()}
    want = np.zeros(6)
    for _, _, _, t, eps in ddpm.shared_draws(6, (1, 8, 8), schedule.T, seed=5, draws=2):
        for i in range(6):
            model.zero_grad()
            ((model(ddpm.q_sample(schedule, x_train[i:i + 1], t[i:i + 1], eps[i:i + 1]), t[i:i + 1]) - eps[i:i + 1])
             ** 2).sum().backward()
            want[i] += sum(float((g.numpy() * q[name]).sum()) for name, g in layer_grads(model).items()) / 2
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_labelled_influence_reads_each_image_against_the_other_labels_queries_only():
    """influence_scores with labels: training image i scored for the mean loss of the queries whose label is not its
    own (each query with the draw of its own position, as unlabelled), against autograd on exactly those queries,
    preconditioned, dotted with each training image's gradient one image and draw at a time."""
    model, schedule = tiny()
    x_train, x_query = torch.rand(6, 1, 8, 8) * 2 - 1, torch.rand(5, 1, 8, 8) * 2 - 1
    train_labels, query_labels = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 1, 0])
    scores, curvature = ekfac.influence_scores(model, schedule, x_train, x_query, seed=5, fisher_draws=1, draws=2,
                                               damping=0.1, batch_size=2, labels=(train_labels, query_labels))
    want = np.zeros(6)
    for label in range(3):
        others = torch.from_numpy(query_labels != label)
        model.zero_grad()
        loss = 0
        for _, _, _, t, eps in ddpm.shared_draws(5, (1, 8, 8), schedule.T, seed=6, draws=2):
            err = ((model(ddpm.q_sample(schedule, x_query, t, eps), t) - eps) ** 2).flatten(1).sum(1)
            loss = loss + err[others].sum() / (2 * int(others.sum()))
        loss.backward()
        q = {name: v.numpy() for name, v in ekfac.precondition(curvature, layer_grads(model), 0.1).items()}
        for _, _, _, t, eps in ddpm.shared_draws(6, (1, 8, 8), schedule.T, seed=5, draws=2):
            for i in np.flatnonzero(train_labels == label):
                model.zero_grad()
                ((model(ddpm.q_sample(schedule, x_train[i:i + 1], t[i:i + 1], eps[i:i + 1]), t[i:i + 1]) -
                  eps[i:i + 1]) ** 2).sum().backward()
                want[i] += sum(float((g.numpy() * q[name]).sum()) for name, g in layer_grads(model).items()) / 2
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    unlabelled, _ = ekfac.influence_scores(model, schedule, x_train, x_query, seed=5, draws=2, damping=0.1,
                                           batch_size=2, curvature=curvature)
    assert not np.allclose(unlabelled, scores)  # the labels changed what each image is read against
