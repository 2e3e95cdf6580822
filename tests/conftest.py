"""Shared fixtures: oracle denoisers with closed-form predictions, a tiny shapes data set, tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinydiffusion.core.schedule import Schedule


class PointMassOracle:
    """Data = a single image ``x_star``: the optimal noise prediction is ``(x_t - sqrt(ab) x*) / sqrt(1-ab)``."""

    def __init__(self, schedule: Schedule, x_star: torch.Tensor):
        self.schedule, self.x_star = schedule, x_star

    def __call__(self, x_t, t, context=None):
        ab = self.schedule.alpha_bar[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        return (x_t - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


class GaussianOracle:
    """Data ~ N(mu, s² I): ``E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s² + 1 - ab)``."""

    def __init__(self, schedule: Schedule, mu: float, s: float):
        self.schedule, self.mu, self.s = schedule, mu, s

    def __call__(self, x_t, t, context=None):
        ab = self.schedule.alpha_bar[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)


def seeded_generators(n: int, start: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(start + i) for i in range(n)]


def shapes(n_per_class: int = 16, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Procedural shapes: class = shape (square, horizontal bar, vertical bar), random colour, on black."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    q = size // 4
    for label in range(3):
        for _ in range(n_per_class):
            im = np.zeros((size, size, 3), np.uint8)
            colour = rng.integers(80, 256, size=3, dtype=np.uint8)
            if label == 0:
                im[q:size - q, q:size - q] = colour
            elif label == 1:
                im[size // 2 - 1:size // 2 + 1, :] = colour
            else:
                im[:, size // 2 - 1:size // 2 + 1] = colour
            images.append(im)
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64), ["square", "hbar", "vbar"]


@pytest.fixture
def shapes_npz(tmp_path):
    images, labels, names = shapes()
    path = tmp_path / "shapes.npz"
    np.savez_compressed(path, images=images, labels=labels, class_names=np.array(names))
    return path


@pytest.fixture
def schedule():
    return Schedule.linear(50)


TINY_TRAIN = ["--model", "tiny", "--image-size", "8", "--T", "50", "--batch-size", "16", "--no-progress"]


def tiny_pipeline():
    """An untrained ``tiny`` Pipeline (8 px, classes a, b, c, T = 50, card DPM-Solver++ 6 steps, guidance 2) whose
    output layer is not zero, so it predicts something: for the sampling and editing plans."""
    from tinydiffusion.conditioning.spec import ContextSpec
    from tinydiffusion.models import build_model, preset
    from tinydiffusion.sampling.pipeline import Pipeline

    torch.manual_seed(0)
    config = preset("tiny", image_size=8, context_width=3, T=50)
    net = build_model(config).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)  # the zero-initialised output would predict 0
    card = {"model": config.to_dict(), "recommended": {"sampler": "dpmpp_2m", "steps": 6, "guidance": 2.0}}
    return Pipeline(net, Schedule.linear(50), ContextSpec.classes(["a", "b", "c"]), card, "eps")


def train_tiny(root, steps: int, *extra: str):
    """``root/shapes.npz`` and a tiny model trained on it by the CLI into ``root/run`` (its export in ``run/model``)."""
    from tinydiffusion.cli.main import main

    images, labels, names = shapes()
    np.savez_compressed(root / "shapes.npz", images=images, labels=labels, class_names=np.array(names))
    assert main(["train", "--data", str(root / "shapes.npz"), "--out", str(root / "run"), "--steps", str(steps),
                 *extra, *TINY_TRAIN]) == 0
    return root / "run"


class MixtureOracle:
    """Data ~ ½ N(mu1, s²) + ½ N(mu2, s²) per pixel: the exact posterior mean E[x0 | x_t] gives eps_hat."""

    def __init__(self, schedule: Schedule, mu1: float, mu2: float, s: float):
        self.schedule, self.mus, self.s = schedule, (mu1, mu2), s

    def __call__(self, x_t, t, context=None):
        ab = self.schedule.alpha_bar[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
        a, var = ab.sqrt(), ab * self.s**2 + 1 - ab  # x_t | k ~ N(a mu_k, var)
        logits = torch.stack([-(x_t - a * mu) ** 2 / (2 * var) for mu in self.mus])  # [2, ...]
        w = torch.softmax(logits, dim=0)
        x0_k = torch.stack([mu + a * self.s**2 * (x_t - a * mu) / var for mu in self.mus])  # E[x0 | x_t, k]
        x0 = (w * x0_k).sum(0)
        return (x_t - a * x0) / (1 - ab).sqrt()

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        return sum(0.5 * 0.5 * (1 + torch.erf((x - mu) / (self.s * 2**0.5))) for mu in self.mus)


def wasserstein_1(samples: torch.Tensor, cdf) -> float:
    """W1 between the empirical distribution of ``samples`` and a distribution given by its CDF:
    the integral of |F_n(x) - F(x)| dx, on a fine grid."""
    x = torch.sort(samples.flatten().double()).values
    grid = torch.linspace(min(x[0].item(), -3.0), max(x[-1].item(), 3.0), 20001, dtype=torch.float64)
    F_n = torch.searchsorted(x, grid, right=True).double() / x.numel()
    return torch.trapezoid((F_n - cdf(grid)).abs(), grid).item()


@pytest.fixture
def captioned_npz(tmp_path):
    """Shapes with captions such as 'red square' / 'blue horizontal bar'."""
    images, labels, names = shapes()
    words = {"square": "square", "hbar": "horizontal bar", "vbar": "vertical bar"}
    colours = ["red", "green", "blue", "yellow"]
    captions = [f"{colours[i % 4]} {words[names[label]]}" for i, label in enumerate(labels)]
    path = tmp_path / "captioned.npz"
    np.savez_compressed(path, images=images, labels=labels, class_names=np.array(names), captions=np.array(captions))
    return path
