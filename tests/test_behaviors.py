"""The behaviours beyond FID (metrics.BEHAVIORS) against independent references: planted point clouds
whose precision, recall, density and coverage are known by construction, KID against a direct double loop
and its unbiasedness, IS of classifiers with known outputs, the sampling-free loss against a per-image
loop and a closed form, and the ELBO weights against the Gaussian KL of the variational bound."""
import numpy as np
import pytest
import torch

import metrics
import ddpm


def test_precision_recall_density_coverage_on_planted_point_clouds():
    """Reference: 4 tight clusters of 10 points, far apart, so every kNN ball stays inside its cluster. Samples:
    an exact copy of cluster 0, and as many points far from everything. By construction: precision 1/2 (the copies
    lie in the reference balls, the far points in none); recall 1/4 (the copies' balls, of the same radii as
    cluster 0's, hold cluster 0's points and no other); coverage 1/4 (cluster 0's balls hold their copies); and
    density 10 (k + 1) / (k n): a ball of radius "k-th nearest neighbour" holds its centre and k neighbours, so each
    of cluster 0's 10 balls holds k + 1 copies."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], dtype=float)
    ref = np.concatenate([c + rng.uniform(-1, 1, size=(10, 2)) for c in centres])
    sample = np.concatenate([ref[:10], rng.uniform(400, 500, size=(10, 2))])
    n, k = len(sample), metrics.DC_K
    radii3, radii5 = metrics.knn_radii(ref, 3), metrics.knn_radii(ref, k)
    assert (radii5 < 3).all()  # neighbours within the cluster: the balls stay inside it
    precision, recall = metrics.precision_recall(sample, ref, radii3)
    density, coverage = metrics.density_coverage(sample, ref, radii5)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(0.25)
    assert coverage == pytest.approx(0.25) and density == pytest.approx(10 * (k + 1) / (k * n))
    # identical clouds: every sample in its own ball, every ball holds its centre
    p, r = metrics.precision_recall(ref, ref, radii3)
    d, c = metrics.density_coverage(ref, ref, radii5)
    assert p == r == c == 1.0 and d == pytest.approx((k + 1) / k)


def test_knn_radius_is_the_distance_to_the_kth_other_point():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    # from 0: others at 1, 3, 7; from 7: at 4, 6, 7
    assert metrics.knn_radii(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert metrics.knn_radii(points, 3).tolist() == [7.0, 6.0, 4.0, 7.0]


def test_kid_equals_a_direct_double_loop_and_is_unbiased_on_equal_distributions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.2, size=(9, 5))
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731

    def direct(x, y):
        m, n = len(x), len(y)
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
        return xx + yy - 2 * xy
    assert metrics.kid(x, y) == pytest.approx(direct(x, y), rel=1e-10)
    assert metrics.kid(x, y, metrics.kid_ref_term(y)) == pytest.approx(direct(x, y), rel=1e-10)
    # unbiased: over many small draws from one distribution the mean is 0 within its standard error, while the
    # biased V-statistic (diagonals kept) would sit clearly above it
    values = np.array([metrics.kid(rng.normal(size=(10, 4)), rng.normal(size=(12, 4))) for _ in range(3000)])
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
    assert metrics.kid(rng.normal(3, 1, size=(50, 4)), rng.normal(size=(50, 4))) > 10 * values.std() / np.sqrt(len(values))


def test_inception_score_of_classifiers_with_known_outputs():
    C = 5
    confident_uniform = np.eye(C)[np.arange(100) % C]  # sure of each class, all classes equally: IS = C
    assert metrics.inception_score(confident_uniform) == pytest.approx(C)
    assert metrics.inception_score(np.eye(C)[np.zeros(100, dtype=int)]) == pytest.approx(1.0)  # one class only
    assert metrics.inception_score(np.full((100, C), 1 / C)) == pytest.approx(1.0)  # no confidence
    # half sure of class 0, half sure of class 1 with probability 0.9 spread the rest: exp(mean KL) by hand
    p = np.array([[0.9, 0.1], [0.1, 0.9]])
    kl = (p * np.log(p / 0.5)).sum(1).mean()
    assert metrics.inception_score(p) == pytest.approx(np.exp(kl))
    assert metrics.entropy([0.5, 0.5]) == pytest.approx(np.log(2)) and metrics.entropy([1.0, 0.0]) == 0.0


def test_the_loss_equals_a_per_image_loop_and_its_closed_form_for_a_zero_model():
    """denoising_errors batches images and draws; a loop over single images, drawing (t, eps) by the documented
    protocol (one generator per block of LOSS_CHUNK images, seeded seed * 1_000_003 + start; per draw d a uniform
    offset u and eps; t = floor((d + u) T / D)), gives the same errors. A model that predicts 0 has error
    ||eps||^2: a loss of 1 per pixel in expectation."""
    torch.manual_seed(0)
    model = ddpm.UNet(**ddpm.ARCHS["digits-small"]).eval()
    schedule = ddpm.Schedule()
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    t, errors = ddpm.denoising_errors(model, schedule, x0, seed=3, draws=2, batch_size=2)
    g = torch.Generator().manual_seed(3 * 1_000_003)
    for d in range(2):
        u = torch.rand(5, generator=g, dtype=torch.float64)
        eps = torch.randn((5, 1, 8, 8), generator=g)
        for i in range(5):
            ti = int((d + u[i]) * 1000 / 2)
            assert t[d, i] == ti and d * 500 <= ti < (d + 1) * 500  # stratified
            xt = ddpm.q_sample(schedule, x0[i:i + 1], torch.tensor([ti]), eps[i:i + 1])
            with torch.no_grad():
                err = ((model(xt, torch.tensor([ti])) - eps[i:i + 1]) ** 2).sum().item()
            assert errors[d, i].item() == pytest.approx(err, rel=1e-5)
    assert ddpm.fixed_noise_loss(model, schedule, x0, seed=3, repeats=2, batch_size=2) == pytest.approx(
        errors.mean().item() / 64)
    for p in model.conv_out.parameters():  # eps_theta = 0
        p.data.zero_()
    loss = ddpm.fixed_noise_loss(model, schedule, torch.zeros(400, 1, 8, 8), seed=0, repeats=2)
    assert loss == pytest.approx(1.0, abs=4 * np.sqrt(2 / (400 * 2 * 64)))  # chi-square: variance 2 per pixel


@pytest.mark.parametrize("t", [0, 1, 10, 500, 999])
def test_elbo_weights_are_the_gaussian_kl_of_the_variational_bound(t):
    """L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)): with p's variance sigma_t^2 = beta_t, the part
    that depends on theta is || mu-tilde(x_t, x0) - mu_theta(x_t) ||^2 / (2 beta_t), from the posterior mean of
    eq. (7) and the model's mean of eq. (11). It must equal w_t || eps - eps_theta ||^2. At t = 0 (the paper's
    t = 1) the decoder's Gaussian log-likelihood -log N(x0; mu_theta, beta_1) gives the same."""
    s = ddpm.Schedule()
    g = torch.Generator().manual_seed(t)
    x0, eps, eps_theta = (torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    a_bar, a_prev, beta, alpha = (float(v[t]) for v in (s.alphas_cumprod, s.alphas_cumprod_prev, s.betas, s.alphas))
    xt = np.sqrt(a_bar) * x0 + np.sqrt(1 - a_bar) * eps
    mu_theta = (xt - beta / np.sqrt(1 - a_bar) * eps_theta) / np.sqrt(alpha)  # eq. (11)
    if t == 0:
        target = x0  # the decoder's mean is compared with x0 itself
    else:
        target = np.sqrt(a_prev) * beta / (1 - a_bar) * x0 + np.sqrt(alpha) * (1 - a_prev) / (1 - a_bar) * xt  # eq. (7)
    kl = ((target - mu_theta) ** 2).flatten(1).sum(1) / (2 * beta)
    w = float(ddpm.elbo_weights(s)[t])
    torch.testing.assert_close(kl, w * ((eps - eps_theta) ** 2).flatten(1).sum(1), rtol=1e-9, atol=0)


def test_behaviour_table_names_a_direction_for_every_key_but_the_class_shares():
    assert set(metrics.BEHAVIORS) == {"fid", "kid", "is", "precision", "recall", "density", "coverage", "class", "entropy",
                                 "loss", "elbo"}
    assert {k for k, b in metrics.BEHAVIORS.items() if b.better is None} == {"class"}
    assert {k for k, b in metrics.BEHAVIORS.items() if b.source == "reference"} == {"loss", "elbo"}
    assert metrics.parse_behaviors("loss,fid") == ["fid", "loss"] and metrics.parse_behaviors("all") == list(metrics.BEHAVIORS)
