"""The studio's speed on this machine, for the shipped sprites model, through a real server.

    .venv/bin/python benchmarks/studio.py [--repeats 10] [--seconds 20] [--clients 20]

Starts ``tinydiffusion serve`` (uvicorn, a subprocess, a free loopback port) and measures with httpx:
(1) time to the first streamed frame of ``POST /api/stream`` (request sent → first ``frame`` event read;
a 10-step DPM-Solver++ single image, guidance 3; and for the page's default request, 4 images of each class), (2) time to a final DPM-Solver++ 10-step guided (3) single
image through ``POST /api/sample`` (the PNG received) against the same ``Pipeline.sample`` call in this
process, alternated so both see the same machine load (their ratio is the server's overhead), and
(3) requests/s sustained by ``--clients`` concurrent clients looping ``POST /api/sample`` for ``--seconds``
(a 429 is honoured: the client sleeps its ``Retry-After``), and for the light ``GET /api/models``.
Prints the figures and writes benchmarks/results/studio.json (with the CPU model and the load average,
since other work on the machine moves every number).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "studio.json"
SETTING = {"model": "sprites", "context": "hero", "n": 1, "sampler": "dpmpp_2m", "steps": 10, "guidance": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    import httpx

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as empty:
        server = subprocess.Popen([sys.executable, "-m", "tinydiffusion", "serve", "--port", str(port), "--device", "cpu",
                                   "--runs", empty], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_ready(httpx, base, server)
            load_before, idle = os.getloadavg(), _proc(server.pid)
            result = {"cpu": _cpu(), "torch_threads": _torch_threads(), "setting": SETTING,
                      "first_frame_ms": first_frame(httpx, base, args.repeats),
                      # the page's first press: every class, 4 seeds each (20 images), the model card's settings
                      "first_frame_page_default_ms": first_frame(httpx, base, args.repeats, {"model": "sprites"})}
            result.update(final_image(httpx, base, args.repeats))
            result["sample_under_load"] = sustained(httpx, base, args.clients, args.seconds, "POST", "/api/sample")
            result["models_under_load"] = sustained(httpx, base, args.clients, min(5.0, args.seconds), "GET", "/api/models")
            result["load_average"] = {"before": load_before, "after": os.getloadavg()}
            result["server_process"] = {"idle": idle, "after": _proc(server.pid)}
        finally:
            server.terminate()
            server.wait(10)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def first_frame(httpx, base: str, repeats: int, params: dict | None = None) -> dict:
    times = []
    with httpx.Client(timeout=60) as client:
        for k in range(repeats + 1):
            t0 = time.perf_counter()
            with client.stream("POST", f"{base}/api/stream", json={**(params or SETTING), "seed": k}) as r:
                first = None
                for line in r.iter_lines():
                    if first is None and line.startswith("event: frame"):
                        first = time.perf_counter() - t0
                    if line.startswith("event: done") or line.startswith("event: error"):
                        break
            if k:  # the first request loads the model
                times.append(1000 * first)
    return _summary(times)


def final_image(httpx, base: str, repeats: int) -> dict:
    import torch

    from tinydiffusion.sampling.pipeline import load

    pipe = load("sprites")
    api, local = [], []
    with httpx.Client(timeout=60) as client:
        for k in range(repeats + 1):
            t0 = time.perf_counter()
            r = client.post(f"{base}/api/sample", json={**SETTING, "seed": k})
            r.raise_for_status()
            t1 = time.perf_counter()
            with torch.inference_mode():
                pipe.sample(SETTING["context"], n=1, seed=k, sampler="dpmpp_2m", steps=10, guidance=3.0)
            t2 = time.perf_counter()
            if k:
                api.append(1000 * (t1 - t0))
                local.append(1000 * (t2 - t1))
    return {"api_final_ms": _summary(api), "in_process_ms": _summary(local),
            "overhead_ratio": round(statistics.median(api) / statistics.median(local), 3)}


def sustained(httpx, base: str, clients: int, seconds: float, method: str, path: str) -> dict:
    """``clients`` threads looping the request until ``seconds`` pass; counts, latency, requests/s."""
    lock, served, refused, other, latencies = threading.Lock(), [0], [0], [0], []
    deadline = time.perf_counter() + seconds

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=120) as client:
            j = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if method == "POST":
                    r = client.post(f"{base}{path}", json={**SETTING, "seed": 1000 * k + j})
                else:
                    r = client.get(f"{base}{path}")
                j += 1
                with lock:
                    if r.status_code == 200:
                        served[0] += 1
                        latencies.append(1000 * (time.perf_counter() - t0))
                    elif r.status_code in (429, 503):
                        refused[0] += 1
                    else:
                        other[0] += 1
                if r.status_code in (429, 503):
                    time.sleep(min(float(r.headers.get("Retry-After", 1)), max(0.0, deadline - time.perf_counter())))

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"request": f"{method} {path}", "clients": clients, "seconds": round(elapsed, 2), "served": served[0],
            "refused_429_503": refused[0], "other": other[0], "served_per_s": round(served[0] / elapsed, 2),
            "latency_ms": _summary(latencies) if latencies else None}


# ---------------------------------------------------------------------- helpers
def _summary(values: list[float]) -> dict:
    values = sorted(values)
    return {"median": round(statistics.median(values), 1), "min": round(values[0], 1),
            "p90": round(values[min(len(values) - 1, int(0.9 * len(values)))], 1), "n": len(values)}


def _proc(pid: int) -> dict:
    """The server's resident memory (MiB) and thread count, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": round(int(status["VmRSS"].split()[0]) / 1024), "threads": int(status["Threads"])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(httpx, base: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not start in time")


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {os.cpu_count()} cores"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _print(r: dict) -> None:
    print(f"studio on {r['cpu']} (torch threads {r['torch_threads']}; load average {r['load_average']['before'][0]:.1f}"
          f" → {r['load_average']['after'][0]:.1f})")
    print(f"  first streamed frame:      {r['first_frame_ms']['median']:.0f} ms median "
          f"(min {r['first_frame_ms']['min']:.0f}, p90 {r['first_frame_ms']['p90']:.0f}); the page's default "
          f"request (20 images): {r['first_frame_page_default_ms']['median']:.0f} ms")
    print(f"  final image through API:   {r['api_final_ms']['median']:.0f} ms median; in-process "
          f"{r['in_process_ms']['median']:.0f} ms → overhead ×{r['overhead_ratio']:.2f}")
    print(f"  server process: {r['server_process']['idle']} idle → {r['server_process']['after']} after")
    for key in ("sample_under_load", "models_under_load"):
        s = r[key]
        print(f"  {s['clients']} clients, {s['request']}: {s['served_per_s']:.1f} served/s, {s['refused_429_503']} "
              f"told to retry, {s['other']} other" + (f", latency median {s['latency_ms']['median']:.0f} ms"
                                                       if s["latency_ms"] else ""))


if __name__ == "__main__":
    main()
