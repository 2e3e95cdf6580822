"""Textbook references, written line by line from the papers, 1-based like them. Kept slow and plain.

Only for tests: the library's samplers must agree with these in float64.
"""

import math

import torch


def _z(shape, generators):
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generators]).double()


def ddpm_algorithm_2(eps_model, alpha_bar_full, taus, x_T, generators, small_variance=False):
    """Ho et al. 2020, Algorithm 2, on the sub-sequence ``taus`` (0-based steps, increasing) with the
    respaced betas ``beta_i = 1 - alpha_bar(tau_i) / alpha_bar(tau_{i-1})`` (Nichol & Dhariwal 2021, sec. 4)."""
    abar = [1.0] + [float(alpha_bar_full[tau]) for tau in taus]  # abar[0] = 1: the clean state
    x = x_T
    for i in range(len(taus), 0, -1):  # 2: for t = T, ..., 1 do
        z = _z(x.shape, generators) if i > 1 else torch.zeros_like(x)  # 3: z ~ N(0, I) if t > 1, else z = 0
        alpha_i = abar[i] / abar[i - 1]
        beta_i = 1 - alpha_i
        sigma2 = (1 - abar[i - 1]) / (1 - abar[i]) * beta_i if small_variance else beta_i
        t = torch.full((x.shape[0],), taus[i - 1], dtype=torch.long)
        eps = eps_model(x, t)
        # 4: x_{t-1} = 1/sqrt(alpha_t) (x_t - (1-alpha_t)/sqrt(1-abar_t) eps_theta(x_t, t)) + sigma_t z
        x = 1 / math.sqrt(alpha_i) * (x - (1 - alpha_i) / math.sqrt(1 - abar[i]) * eps) + math.sqrt(sigma2) * z
    return x  # 6: return x_0


def ddim_eq_12(eps_model, alpha_bar_full, taus, x_T, generators, eta):
    """Song et al. 2021, eq. 12 with sigma from eq. 16, on the sub-sequence ``taus`` (their alpha is our alpha_bar)."""
    a = [1.0] + [float(alpha_bar_full[tau]) for tau in taus]
    x = x_T
    for i in range(len(taus), 0, -1):
        t = torch.full((x.shape[0],), taus[i - 1], dtype=torch.long)
        eps = eps_model(x, t)
        sigma = eta * math.sqrt((1 - a[i - 1]) / (1 - a[i])) * math.sqrt(1 - a[i] / a[i - 1])  # eq. 16
        predicted_x0 = (x - math.sqrt(1 - a[i]) * eps) / math.sqrt(a[i])
        direction = math.sqrt(1 - a[i - 1] - sigma**2) * eps
        noise = sigma * _z(x.shape, generators) if sigma > 0 else 0.0
        x = math.sqrt(a[i - 1]) * predicted_x0 + direction + noise  # eq. 12
    return x
