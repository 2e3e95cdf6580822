"""Where bf16 pays on this CPU: the `small` UNet's training and sampling, fp32 against bf16, in one run.

    .venv/bin/python benchmarks/bf16.py [--sizes 16,32] [--seconds 3] [--rounds 3] [--profile] [--out FILE.json]

For each image size it measures training images/s (batch 64, AdamW, the diffusion loss) and network
evaluations/s while sampling (batch 64, inference mode), each in fp32 and bf16, with the network in
the memory layout the library uses: contiguous (NCHW) and channels-last (NHWC). The ratios are bf16
over the fp32 baseline of the same run (training: fp32 contiguous, as `train` runs it; sampling:
fp32 channels-last, as `load` returns it). Every setting is measured ``--rounds`` times, the rounds
interleaved, and its best rate kept: on a shared machine single measurements vary by ±15%. `--profile` prints the top operators of one bf16
training step in each layout (the casts and layout reorders show up there). On a CPU without
native bf16 it says so and measures fp32 only.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from tinydiffusion.runtime.dist import autocast, native_bf16
from tinydiffusion.core.loss import diffusion_loss
from tinydiffusion.models import build_model, preset
from tinydiffusion.core.schedule import Schedule

CPU = torch.device("cpu")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = next(line for line in out.splitlines() if line.startswith("Flags"))
        extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
        return f"{name} ({', '.join(extras) or 'no native bf16'})"
    except (OSError, subprocess.SubprocessError, StopIteration):
        return platform.processor() or "unknown CPU"


def rate(fn, seconds: float) -> float:
    """Calls per second: two warm-ups, then as many calls as fit in ``seconds`` (at least 3)."""
    fn(), fn()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def network(size: int, channels_last: bool):
    torch.manual_seed(0)
    net = build_model(preset("small", image_size=size, context_width=5))
    return net.to(memory_format=torch.channels_last) if channels_last else net


def train_rate(size: int, precision: str, channels_last: bool, seconds: float, batch: int = 64) -> float:
    net = network(size, channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    schedule, g = Schedule.linear(500), torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    ctx = torch.eye(5)[torch.randint(0, 5, (batch,), generator=g)]

    def step():
        with autocast(CPU, precision):
            loss = diffusion_loss(net, schedule, x0, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * rate(step, seconds)


def sample_rate(size: int, precision: str, channels_last: bool, seconds: float, batch: int = 64) -> float:
    net = network(size, channels_last).eval()
    x = torch.randn(batch, 3, size, size)
    t, c = torch.full((batch,), 250), torch.eye(5)[torch.arange(batch) % 5]

    def forward():
        with torch.inference_mode(), autocast(CPU, precision):
            net(x, t, c)
    return batch * rate(forward, seconds)


def profile(size: int, channels_last: bool, batch: int = 64) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    net = network(size, channels_last).train()
    schedule = Schedule.linear(500)
    x0 = torch.rand(batch, 3, size, size) * 2 - 1
    ctx = torch.eye(5)[torch.randint(0, 5, (batch,))]

    def step():
        with autocast(CPU, "bf16"):
            loss = diffusion_loss(net, schedule, x0, ctx)
        loss.backward()
    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,32")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the best rate of each is kept")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", help="also write the figures as JSON")
    args = parser.parse_args()
    native = native_bf16(CPU)
    report = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "native_bf16": native, "rows": []}
    print(f"{report['cpu']}, {report['threads']} threads, torch {torch.__version__}")
    if not native:
        print("this CPU has no native bf16 (PyTorch would emulate it, far slower than fp32): fp32 only")
    precisions = ("fp32", "bf16") if native else ("fp32",)
    for size in (int(s) for s in args.sizes.split(",")):
        row = {"size": size}
        for _ in range(args.rounds):
            for precision in precisions:
                for layout, cl in (("nchw", False), ("nhwc", True)):
                    for key, value in ((f"train_{precision}_{layout}", train_rate(size, precision, cl, args.seconds)),
                                       (f"sample_{precision}_{layout}", sample_rate(size, precision, cl, args.seconds))):
                        row[key] = round(max(row.get(key, 0.0), value), 1)
        if native:
            base_train, base_sample = row["train_fp32_nchw"], row["sample_fp32_nhwc"]
            for layout in ("nchw", "nhwc"):
                row[f"train_ratio_bf16_{layout}"] = round(row[f"train_bf16_{layout}"] / base_train, 2)
                row[f"sample_ratio_bf16_{layout}"] = round(row[f"sample_bf16_{layout}"] / base_sample, 2)
        report["rows"].append(row)
        print(f"\n{size}×{size}, batch 64 (images/s; sampling = network evaluations/s)")
        print(f"{'':<22}{'fp32 NCHW':>11}{'fp32 NHWC':>11}" + (f"{'bf16 NCHW':>11}{'bf16 NHWC':>11}" if native else ""))
        for what in ("train", "sample"):
            cells = [row[f"{what}_{p}_{lay}"] for p in precisions for lay in ("nchw", "nhwc")]
            print(f"{what + 'ing' if what == 'train' else 'sampling':<22}" + "".join(f"{v:>11.1f}" for v in cells))
        if native:
            print(f"bf16 / fp32 baseline:  training {row['train_ratio_bf16_nchw']}× (NCHW), "
                  f"{row['train_ratio_bf16_nhwc']}× (NHWC); sampling {row['sample_ratio_bf16_nchw']}× (NCHW), "
                  f"{row['sample_ratio_bf16_nhwc']}× (NHWC)")
        if args.profile and native:
            for layout, cl in (("NCHW", False), ("NHWC", True)):
                print(f"\nbf16 training step at {size}×{size}, {layout}: top operators by self CPU time")
                print(profile(size, cl))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
