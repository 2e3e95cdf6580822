"""What the per-step agreement between ranks costs: one all-reduce of two numbers (rank 0's clock and
the stop flag) against one data-parallel training step, both under torchrun with 2 CPU processes (gloo).

    python benchmarks/dist_overhead.py [--steps 200] [--model small] [--image-size 16] [--batch-size 32]

Prints both times and their ratio; writes benchmarks/results/dist_overhead.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def collective_worker(calls: int) -> None:
    """Run inside torchrun: time ``calls`` agreements the way the training loop makes them."""
    from tinydiffusion.runtime import dist

    info = dist.setup("cpu")
    for _ in range(50):  # warm the connection
        dist.all_max([0.0, 0.0], info)
    t0 = time.perf_counter()
    for _ in range(calls):
        dist.all_max([time.perf_counter(), 0.0], info)
    seconds = (time.perf_counter() - t0) / calls
    if info.is_main:
        print(json.dumps({"agreement_s": seconds}))
    dist.teardown(info)


def torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--model", default="small")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--out", default=str(HERE / "results" / "dist_overhead.json"))
    a = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agreement = json.loads(torchrun([__file__, "--worker", str(a.calls)], env).stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        torchrun(["-m", "tinydiffusion", "train", "--out", f"{tmp}/run", "--model", a.model, "--image-size",
                  str(a.image_size), "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--log-every", "25",
                  "--sample-every", str(10**6), "--no-progress", "--device", "cpu"], env)
        with open(f"{tmp}/run/metrics.csv") as f:
            rates = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]  # the first window includes warm-up
    step_s = a.batch_size / (sum(rates) / len(rates))
    result = {"cpu": platform.processor() or _cpu_name(), "processes": 2, "backend": "gloo", "model": a.model,
              "image_size": a.image_size, "global_batch": a.batch_size, "agreement_s": agreement["agreement_s"],
              "step_s": step_s, "ratio": agreement["agreement_s"] / step_s}
    print(f"agreement per step: {result['agreement_s'] * 1e6:.0f} µs; training step: {step_s * 1e3:.1f} ms; "
          f"ratio {result['ratio']:.2%}")
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        collective_worker(int(sys.argv[2]))
    else:
        main()
