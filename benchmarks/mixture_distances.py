"""W1 distance of each sampler's output to an analytic two-Gaussian mixture, by step count (a table, no assertion).

    .venv/bin/python benchmarks/mixture_distances.py

The denoiser is the mixture's exact posterior mean (``tests/conftest.py``: ``MixtureOracle``), so every error is
the sampler's own discretisation error; the tests prove the samplers against closed forms, this shows how fast
each converges.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import MixtureOracle, wasserstein_1  # noqa: E402  (the oracles the tests use)

from tinydiffusion.core.samplers import SAMPLERS  # noqa: E402
from tinydiffusion.core.schedule import Schedule  # noqa: E402


def main() -> None:
    s = Schedule.linear(500)
    x_T = torch.randn((4000, 1, 2, 2), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    print("W1 to the two-Gaussian mixture at 5/10/20/50/100 steps:")
    for sd in (0.3, 0.15):
        model = MixtureOracle(s, -0.6, 0.5, sd)
        for name in ("ddpm", "ddim", "euler", "dpmpp_2m"):
            dists = [wasserstein_1(SAMPLERS[name](model, s, x_T, steps=n, generator=torch.Generator().manual_seed(0)),
                                   model.cdf) for n in (5, 10, 20, 50, 100)]
            print(f"s={sd:<5} {name:9s} " + " ".join(f"{d:.4f}" for d in dists))


if __name__ == "__main__":
    main()
