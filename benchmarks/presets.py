"""Parameters and training images/s of each model preset on this machine (fp32, batch 64).

    .venv/bin/python benchmarks/presets.py [--size 16] [--seconds 10]

Prints a Markdown table for docs/models.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from tinydiffusion.core.loss import diffusion_loss
from tinydiffusion.models import PRESETS, build_model, count_parameters, preset
from tinydiffusion.core.schedule import Schedule


def images_per_second(name: str, size: int, batch: int, seconds: float) -> tuple[int, float, float]:
    torch.manual_seed(0)
    net = build_model(preset(name, image_size=size, context_width=5))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    schedule, x0 = Schedule.linear(500), torch.rand(batch, 3, size, size) * 2 - 1
    ctx = torch.eye(5)[torch.randint(0, 5, (batch,))]

    def step() -> None:
        loss = diffusion_loss(net, schedule, x0, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    train_rate = n * batch / (time.perf_counter() - t0)
    net.eval()
    with torch.inference_mode():
        x, t = torch.randn(64, 3, size, size), torch.full((64,), 250)
        net(x, t, ctx[:1].expand(64, -1))
        t0 = time.perf_counter()
        for _ in range(5):
            net(x, t, ctx[:1].expand(64, -1))
        ms_per_eval = (time.perf_counter() - t0) / 5 * 1000
    return count_parameters(net), train_rate, ms_per_eval


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.size}×{args.size}, batch {args.batch}, fp32")
    print("| preset | parameters | training images/s | ms per network evaluation (64 images) |")
    print("|---|---:|---:|---:|")
    for name in args.presets.split(","):
        params, rate, ms = images_per_second(name, args.size, args.batch, args.seconds)
        print(f"| {name} | {params:,} | {rate:.0f} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
