"""The model: a hand-written UNet (Ho et al. 2020), the linear noise schedule, the DDPM loss,
the DDIM sampler (Song et al. 2020a), EMA, and checkpoints. Depends on torch alone, so it can be
copied into another project as it is.

    from ddpm import UNet, ARCHS, Schedule, ddpm_loss, ddim_sample
    model = UNet(**ARCHS["digits"])
    schedule = Schedule()                        # T = 1000, beta 1e-4 .. 0.02 (Ho et al., Sec. 4)
    loss = ddpm_loss(model, schedule, x0, generator=g)        # Algorithm 1
    x0 = ddim_sample(model, schedule, shape=(16, 1, 8, 8), steps=100, generator=g)

Conventions: images live in [-1, 1]; timesteps are 0-indexed (t = 0 .. T-1, as in Ho et al.'s
code), so alphas_cumprod[t] is the paper's alpha-bar_{t+1}.
"""
import contextlib
import hashlib
import math
import os
import shutil
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Architectures

ARCHS = {
    # Ho et al. (2020), Appendix B: the CIFAR-10 model, 35.7M parameters.
    "cifar10": dict(resolution=32, in_channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attn_resolutions=(16,), dropout=0.1, num_groups=32, mid_attn=True,
                    # Ho et al.'s TensorFlow code: stride-2 convolutions pad "SAME" (0 before, 1 after) and
                    # GroupNorm eps 1e-6; with these the UNet computes their function (google/ddpm-cifar10-32)
                    downsample_pad="same", norm_eps=1e-6),
    # Sized for scikit-learn's 8x8 digits on 2 CPU cores: two resolutions (8x8, 4x4), no attention.
    # Two GroupNorm groups: structured pruning removes the same share of every group, and 16-channel
    # groups let ratio 0.3 remove 5 of 16 (31%) where 4-channel groups would allow only 25% or 50%.
    "digits": dict(resolution=8, in_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(), dropout=0.0, num_groups=2, mid_attn=False),
    # Half the width, for the pipeline's many retrainings on 2 CPU cores (4x fewer MACs).
    "digits-small": dict(resolution=8, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(), dropout=0.0, num_groups=2, mid_attn=False),
}


def timestep_embedding(t, dim):
    """Sinusoidal embedding of integer timesteps t (B,) -> (B, dim), as in Ho et al.'s code."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device)
                      / (half - 1))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch, out_ch, temb_ch, dropout, num_groups, eps=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(num_groups, out_ch, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # 1x1 "network-in-network" shortcut when the width changes (Ho et al.'s nin_shortcut)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):  # x (B, C, H, W), temb (B, temb_ch)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1 convolutions as projections."""

    def __init__(self, ch, num_groups, eps=1e-5):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, ch, eps=eps)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, _, H, W = x.shape
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)  # (B, C', H, W)
        C = q.shape[1]
        q = q.reshape(B, C, H * W).permute(0, 2, 1)  # (B, HW, C')
        k = k.reshape(B, C, H * W)  # (B, C', HW)
        w = torch.softmax(torch.bmm(q, k) * C ** -0.5, dim=2)  # (B, HW query, HW key)
        v = v.reshape(B, v.shape[1], H * W)  # (B, C', HW)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(B, v.shape[1], H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """A stride-2 3x3 convolution. pad "symmetric": 1 pixel on every side (torch's usual); "same": TensorFlow's
    "SAME" for a stride of 2 on an even size, 0 before and 1 after (Ho et al.'s code, diffusers' F.pad(x, (0, 1,
    0, 1)) with downsample_padding=0)."""

    def __init__(self, ch, pad="symmetric"):
        super().__init__()
        if pad not in ("symmetric", "same"):
            raise ValueError(f"downsample_pad must be symmetric or same, got {pad!r}")
        self.pad = pad
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1 if pad == "symmetric" else 0)

    def forward(self, x):
        if self.pad == "same":
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Ho et al.'s UNet. `widths` ({module name: [out, in]} for convolutions and linears,
    {name: [channels, groups]} for GroupNorms) resizes layers after a structured pruning, so that
    `UNet(**checkpoint["config"])` rebuilds a pruned model with exactly the saved shapes."""

    def __init__(self, *, resolution, in_channels, ch, ch_mult, num_res_blocks, attn_resolutions,
                 dropout, num_groups, mid_attn=True, widths=None, downsample_pad="symmetric", norm_eps=1e-5,
                 num_labels=0):
        super().__init__()
        # the defaults of downsample_pad and norm_eps are what every checkpoint written before they existed
        # computes, so such a checkpoint (its config without them) rebuilds exactly
        self.config = dict(resolution=resolution, in_channels=in_channels, ch=ch,
                           ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                           attn_resolutions=tuple(attn_resolutions), dropout=dropout,
                           num_groups=num_groups, mid_attn=mid_attn, widths=widths,
                           downsample_pad=downsample_pad, norm_eps=norm_eps)
        eps = norm_eps
        self.ch = ch
        temb_ch = 4 * ch
        self.temb = nn.ModuleDict(dict(dense0=nn.Linear(ch, temb_ch), dense1=nn.Linear(temb_ch, temb_ch)))
        if num_labels:  # a label-conditioned model (proxy_game.py): label K = num_labels is "no label" (dropped)
            self.config["num_labels"] = num_labels
            self.label_emb = nn.Embedding(num_labels + 1, temb_ch)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Downsampling: num_res_blocks ResnetBlocks per resolution, then a Downsample
        self.down = nn.ModuleList()
        skip_chs, block_in, res = [ch], ch, resolution
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(block_in, ch * mult, temb_ch, dropout, num_groups, eps))
                block_in = ch * mult
                if res in attn_resolutions:
                    stage.attn.append(AttnBlock(block_in, num_groups, eps))
                skip_chs.append(block_in)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_in, downsample_pad)
                res //= 2
                skip_chs.append(block_in)
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, temb_ch, dropout, num_groups, eps)
        # Ho et al. always attend in the middle; the small digits model skips it (4x4, little to gain)
        self.mid.attn_1 = AttnBlock(block_in, num_groups, eps) if mid_attn else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, temb_ch, dropout, num_groups, eps)

        # Upsampling: num_res_blocks + 1 ResnetBlocks per resolution, each taking one skip connection
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in + skip_chs.pop(), ch * mult, temb_ch, dropout,
                                               num_groups, eps))
                block_in = ch * mult
                if res in attn_resolutions:
                    stage.attn.append(AttnBlock(block_in, num_groups, eps))
            if level != 0:
                stage.upsample = Upsample(block_in)
                res *= 2
            self.up.insert(0, stage)  # so that self.up[level] matches self.down[level]

        self.norm_out = nn.GroupNorm(num_groups, block_in, eps=eps)
        self.conv_out = nn.Conv2d(block_in, in_channels, 3, padding=1)
        if widths:
            resize_layers(self, widths)

    def forward(self, x, t, y=None):  # x (B, C, H, W) in [-1, 1]; t (B,) integer timesteps -> eps (B, C, H, W)
        temb = timestep_embedding(t, self.temb.dense0.in_features).to(self.temb.dense0.weight.dtype)  # a float64 UNet too
        temb = self.temb.dense1(F.silu(self.temb.dense0(temb)))
        if hasattr(self, "label_emb"):  # the label's embedding joins the time's; no label given: the "no label" one
            y = torch.full_like(t, self.label_emb.num_embeddings - 1) if y is None else y
            temb = temb + self.label_emb(y)
        hs = [self.conv_in(x)]
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(hs[-1], temb)
                if len(stage.attn):
                    h = stage.attn[i](h)
                hs.append(h)
            if hasattr(stage, "downsample"):
                hs.append(stage.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def layer_widths(model):
    """The shape of every convolution, linear and GroupNorm: what `UNet(widths=...)` needs to
    rebuild a structurally pruned model. Plain lists, so checkpoints load with weights_only=True."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            widths[name] = [m.out_channels, m.in_channels]
        elif isinstance(m, nn.Linear):
            widths[name] = [m.out_features, m.in_features]
        elif isinstance(m, nn.GroupNorm):
            widths[name] = [m.num_channels, m.num_groups]
    return widths


def resize_layers(model, widths):
    """Replace each named layer by a fresh one of the saved width (weights are loaded afterwards)."""
    modules = dict(model.named_modules())
    for name, (a, b) in widths.items():
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            if (m.out_channels, m.in_channels) == (a, b):
                continue
            new = nn.Conv2d(b, a, m.kernel_size, stride=m.stride, padding=m.padding)
        elif isinstance(m, nn.Linear):
            if (m.out_features, m.in_features) == (a, b):
                continue
            new = nn.Linear(b, a)
        elif isinstance(m, nn.GroupNorm):
            if (m.num_channels, m.num_groups) == (a, b):
                continue
            new = nn.GroupNorm(b, a, eps=m.eps)
        else:
            raise ValueError(f"cannot resize layer {name} of type {type(m).__name__}")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forward_macs(model):
    """Multiply-accumulates of one forward pass on one image: every convolution and linear layer, and the two
    matrix products of each attention block (HW x HW x C each). Budgets count training compute in these
    units (3 x forward per image seen: forward and backward), which no clock or machine changes."""
    total = [0]

    def conv(m, inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inputs, out):
        total[0] += out.numel() * m.in_features

    def attention(m, inputs, out):
        _, C, H, W = inputs[0].shape
        total[0] += 2 * (H * W) ** 2 * m.q.out_channels

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear if isinstance(m, nn.Linear)
                                     else attention)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, AttnBlock))]
    training = model.training
    try:  # in eval mode: a training model's dropout would draw from the global generator and change its run
        c, r = model.config["in_channels"], model.config["resolution"]
        p = next(model.parameters())
        model.eval()(torch.zeros(1, c, r, r, device=p.device, dtype=p.dtype),
                     torch.zeros(1, dtype=torch.long, device=p.device))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return int(total[0])


# ----------------------------------------------------------------------------------------------
# Noise schedule and the DDPM loss

class Schedule:
    """Linear beta schedule (Ho et al., Sec. 4: T = 1000, beta_1 = 1e-4 .. beta_T = 0.02), computed
    in float64 once; `at(name, t, like)` gathers one value per batch element in x's dtype."""

    def __init__(self, T=1000, beta_1=1e-4, beta_T=0.02):
        self.T, self.beta_1, self.beta_T = T, beta_1, beta_T
        self.betas = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # beta-tilde_t, the variance of q(x_{t-1} | x_t, x0) (eq. (7))
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    def as_dict(self):
        return dict(T=self.T, beta_1=self.beta_1, beta_T=self.beta_T)

    def at(self, name, t, like):
        """getattr(self, name)[t] as a (B, 1, 1, 1) tensor on like's device and dtype."""
        values = getattr(self, name)[t.cpu()].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule, x0, t, eps):
    """x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps (eq. (4))."""
    a = schedule.at("alphas_cumprod", t, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def draw_t_eps(schedule, x0, generator=None):
    """Algorithm 1, lines 3-4: t ~ Uniform{0..T-1} and eps ~ N(0, I) for each image of x0, in this order from one
    generator. Every loss that trains on x0 draws through here, so a loss that changes its target (unlearning's terms,
    the conditional model's) still sees exactly the draws plain training would have."""
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return t, eps


def ddpm_loss(model, schedule, x0, generator=None):
    """Algorithm 1, lines 3-5: t ~ Uniform, eps ~ N(0, I), || eps - eps_theta(x_t, t) ||^2."""
    t, eps = draw_t_eps(schedule, x0, generator)
    return F.mse_loss(model(q_sample(schedule, x0, t, eps), t), eps)


def elbo_weights(schedule):
    """w_t of the variational bound for eps-prediction with reverse variance sigma_t^2 = beta_t (Ho et al.,
    eq. (12)): L_{t-1} = w_t E || eps - eps_theta(x_t, t) ||^2 + const, w_t = beta_t / (2 alpha_t (1 - alpha-bar_t)),
    float64 (T,). With sigma_1^2 = beta_1 the same formula gives the decoder term L_0 of a continuous
    Gaussian decoder, so sum_t w_t E||...||^2 is the whole bound up to a constant no model changes."""
    return schedule.betas / (2 * schedule.alphas * (1 - schedule.alphas_cumprod))


LOSS_CHUNK = 1024  # images per block of shared draws: fixed, so the draws never depend on a batch size


def shared_draws(n, image_shape, T, *, seed=0, draws=4):
    """The (t, eps) draws of the loss of N images, the same for every model (common random numbers): yields
    (start, stop, d, t (stop - start,), eps (stop - start, *image_shape)) for blocks of LOSS_CHUNK images and each
    draw d. t is stratified: draw d of image i lies in [d T / D, (d + 1) T / D), so the D draws of an image cover
    every part of the schedule. A block's draws depend on its first image only, never on a batch size."""
    for start in range(0, n, LOSS_CHUNK):
        stop = min(n, start + LOSS_CHUNK)
        g = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + start)
        for d in range(draws):
            u = torch.rand(stop - start, generator=g, dtype=torch.float64)
            t = ((d + u) * T / draws).long().clamp(max=T - 1)
            yield start, stop, d, t, torch.randn((stop - start,) + tuple(image_shape), generator=g)


@torch.no_grad()
def denoising_errors(model, schedule, x0, *, seed=0, draws=4, batch_size=512):
    """|| eps - eps_theta(x_t, t) ||^2 summed over pixels, for every image of x0 (N, C, H, W) and `draws` shared
    draws of (t, eps) (shared_draws), so two models' errors differ only by the models. Returns (t, errors), both
    (draws, N) on the CPU."""
    model.eval()
    n = len(x0)
    ts, errors = torch.empty(draws, n, dtype=torch.long), torch.empty(draws, n, dtype=torch.float64)
    for start, stop, d, t, eps in shared_draws(n, x0.shape[1:], schedule.T, seed=seed, draws=draws):
        ts[d, start:stop] = t
        for i in range(start, stop, batch_size):
            j = min(stop, i + batch_size)
            xb, tb, eb = x0[i:j], t[i - start:j - start].to(x0.device), eps[i - start:j - start].to(x0.device)
            err = (model(q_sample(schedule, xb, tb, eb), tb).float() - eb) ** 2
            errors[d, i:j] = err.flatten(1).sum(1).double().cpu()
    return ts, errors


def fixed_noise_loss(model, schedule, x0, *, seed=0, repeats=4, batch_size=512):
    """The DDPM loss of `model` on x0 (mean squared error per pixel) with (t, eps) drawn once from `seed`:
    the same draws for every model, so two models' losses differ only by the models (used to judge pruning)."""
    _, errors = denoising_errors(model, schedule, x0, seed=seed, draws=repeats, batch_size=batch_size)
    return float(errors.mean()) / x0[0].numel()


# ----------------------------------------------------------------------------------------------
# Sampling

def ddim_timesteps(T, steps):
    """Strided sub-sequence tau (Song et al. 2020a, Sec. 4.2): for T = 1000, steps = 100 it is
    990, 980, ..., 0 (descending)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..{T}, got {steps}")
    return list(range(0, T, T // steps))[:steps][::-1]


def _initial_noise(shape, noise, generator, device):
    if noise is not None:
        return noise.to(device)
    return torch.randn(shape, generator=generator, device=device)


@torch.no_grad()
def ddim_sample(model, schedule, *, shape=None, noise=None, steps=100, eta=0.0, generator=None,
                clip_x0=False, device="cpu", return_trajectory=False):
    """DDIM (Song et al. 2020a, eq. (12)):
    x_{t'} = sqrt(a_{t'}) x0_pred + sqrt(1 - a_{t'} - sigma^2) eps + sigma z, with
    sigma = eta sqrt((1 - a_{t'}) / (1 - a_t)) sqrt(1 - a_t / a_{t'}) (eq. (16)); t' is the next
    timestep of the strided sequence and the last step goes to a = 1 (x0 itself).
    Initial noise comes from `noise` or is drawn from `generator`; so is each z (drawn only when sigma > 0).
    clip_x0 clamps x0_pred to [-1, 1] and keeps the model's eps for the direction term, as diffusers'
    DDIMScheduler does with clip_sample=True (the sampler google/ddpm-cifar10-32's scheduler config asks for)."""
    x = _initial_noise(shape, noise, generator, device)
    ts = ddim_timesteps(schedule.T, steps)
    trajectory = [x]
    for i, t in enumerate(ts):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        a_t = schedule.alphas_cumprod[t]
        a_next = schedule.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps = model(x, t_batch)
        x0 = (x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()  # eq. (9) solved for x0
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        sigma = (eta * ((1 - a_next) / (1 - a_t)).sqrt() * (1 - a_t / a_next).sqrt()).item()
        x = a_next.sqrt().item() * x0 + (1 - a_next - sigma ** 2).clamp(min=0).sqrt().item() * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if return_trajectory:
            trajectory.append(x0)
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def ddpm_sample(model, schedule, *, shape=None, noise=None, generator=None, device="cpu"):
    """Ancestral sampling (Algorithm 2) with variance beta-tilde_t, through the posterior mean
    mu-tilde(x_t, x0_pred) of eq. (7). Slow (T steps); the reference the DDIM sampler is tested against."""
    x = _initial_noise(shape, noise, generator, device)
    s = schedule
    for t in reversed(range(s.T)):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        a_t, a_prev = s.alphas_cumprod[t], s.alphas_cumprod_prev[t]
        x0 = (x - (1 - a_t).sqrt().item() * model(x, t_batch)) / a_t.sqrt().item()
        coef_x0 = (a_prev.sqrt() * s.betas[t] / (1 - a_t)).item()
        coef_xt = (s.alphas[t].sqrt() * (1 - a_prev) / (1 - a_t)).item()
        x = coef_x0 * x0 + coef_xt * x  # mu-tilde, eq. (7)
        if t > 0:  # Algorithm 2 line 3: z = 0 at the last step
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + s.posterior_variance[t].sqrt().item() * z
    return x


def autocast(precision, device):
    """The forward pass in bfloat16 ("bf16": torch.autocast; weights, optimizer state, the loss and the
    EMA stay float32), or as it is ("fp32"; on a GPU with TF32 matmuls where the caller allows them)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise InputError(f"unknown precision {precision!r}: use fp32 or bf16")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# EMA

@torch.no_grad()
def ema_update(ema_model, model, decay, step):
    """Exponential moving average of the weights with the usual warm-up, decay_t =
    min(decay, (1 + step) / (10 + step)), so that short runs (unlearning) are not stuck at the start."""
    d = min(decay, (1 + step) / (10 + step))
    # e <- d e + (1 - d) p, for all parameters in one fused call (a Python loop costs more than the
    # arithmetic for small models)
    torch._foreach_lerp_(list(ema_model.parameters()), [p.detach() for p in model.parameters()], 1 - d)
    for e, b in zip(ema_model.buffers(), model.buffers()):
        e.copy_(b)


# ----------------------------------------------------------------------------------------------
# Checkpoints

class InputError(Exception):
    """Bad input a user can cause (the scripts turn it into one line on stderr and exit code 2)."""


class CheckpointError(InputError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def save_checkpoint(path, ckpt):
    """Write atomically: a temporary file in the same folder, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        # a full disk, a quota: nothing half-written is left, and one line says why (torch's zip writer reports a
        # full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos ...")
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from e
        if isinstance(e, RuntimeError) and shutil.disk_usage(folder).free < (1 << 20):
            raise CheckpointError(f"cannot write {path}: no space left on device") from e
        raise


REQUIRED_KEYS = ("model", "ema", "config", "schedule", "step")


def load_checkpoint(path, mmap=False):
    """Load with weights_only=True (never unpickles code); raise CheckpointError with a clear message.
    mmap=True maps the tensors instead of reading them: cheap when only the metadata is needed."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a checkpoint of this project (needs keys {', '.join(REQUIRED_KEYS)})")
    return ckpt


def build_model(ckpt, which="ema"):
    """The UNet of a checkpoint, with its `which` weights ("ema" or "model") and pruning masks applied."""
    if ckpt.get(which) is None:
        raise CheckpointError(f"this checkpoint keeps only its EMA weights, not its {which!r} weights (written without "
                              f"--keep-train-state)")
    try:
        model = UNet(**ckpt["config"])
        model.load_state_dict(ckpt[which])
        if ckpt.get("masks"):
            apply_masks(model, ckpt["masks"])
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # config and weights do not fit together
        raise CheckpointError(f"the {which} weights of this checkpoint do not fit its config: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return model


@torch.no_grad()
def apply_masks(model, masks):
    """Zero the weights that unstructured pruning removed ({parameter name: bool tensor})."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_device(name):
    """--device auto picks CUDA when present."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here")
    return name
