"""The exported network's speed and fidelity on this machine: PyTorch eager, onnxruntime and the browser, side by side.

    .venv/bin/python benchmarks/export_speed.py [--repeats 15] [--threads N] [--no-browser] [--no-parity] [--out F]

(1) ms per image of one network evaluation of the shipped sprite network (every shipped sprites model has it) at
batch 1 and 64: PyTorch eager as ``load`` gives it (fp32, channels-last, inference mode) against onnxruntime
(``--backend onnx``), calls alternated so both see the same machine load, medians; (2) ms per image of whole
samples with each shipped sprites model's card settings through both backends; (3) in Debian's Chromium (Playwright)
on the static site of ``sprites-instant``: onnxruntime-web's ms per image for one evaluation at batch 1 and 64, the
page's ``tdGenerate`` ms per image, and the time from navigation to the first ``tdGenerate`` answer; (4) parity:
max abs differences of the network outputs and of the images (uint8 levels) from the same seeds for ``sprites``,
``sprites-fast``, ``sprites-instant`` and ``emoji`` (its text encoder in PyTorch). Prints the ratios and writes
benchmarks/results/export_speed.json with the CPU and the load average (other work on the machine moves every
number; ``--threads 1 --out benchmarks/results/export_speed_1thread.json`` is the recorded one-thread run).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "export_speed.json"
BATCHES = (1, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-browser", dest="browser", action="store_false")
    parser.add_argument("--no-parity", dest="parity", action="store_false")
    parser.add_argument("--threads", type=int, help="PyTorch's and onnxruntime's threads (default: PyTorch's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the JSON report (default {RESULTS.name})")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # OnnxNetwork takes as many as PyTorch has
    result = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "load_average_before": os.getloadavg()}
    result["network"] = network_speed(args.repeats)
    result["sampling"] = sampling_speed(max(3, args.repeats // 3))
    if args.browser:
        result["browser"] = browser_speed(args.repeats)
    if args.parity:
        result["parity"] = parity()
    result["load_average_after"] = os.getloadavg()
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def alternated(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up call each."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def network_speed(repeats: int) -> dict:
    from tinydiffusion.sampling.pipeline import load

    a, b = load("sprites-instant", backend="torch"), load("sprites-instant", backend="onnx")
    out = {}
    for batch in BATCHES:
        g = torch.Generator().manual_seed(0)
        x, t, c = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 500, (batch,), generator=g), \
            torch.rand(batch, 5, generator=g)
        n = repeats if batch == 1 else max(3, repeats // 3)
        s = alternated({"torch": lambda: a.model(x, t, c), "onnx": lambda: b.model(x, t, c)}, n)
        out[f"b{batch}"] = {k: 1000 * v / batch for k, v in s.items()}
        out[f"b{batch}"]["ratio_torch_over_onnx"] = s["torch"] / s["onnx"]
    return out


def sampling_speed(repeats: int) -> dict:
    from tinydiffusion.sampling.pipeline import load

    out = {}
    for name in ("sprites", "sprites-fast", "sprites-instant"):
        a, b = load(name, backend="torch"), load(name, backend="onnx")
        for n in BATCHES:
            s = alternated({"torch": lambda: a.sample("hero", n=n), "onnx": lambda: b.sample("hero", n=n)},
                           repeats if n == 1 else max(2, repeats // 3))
            out[f"{name} n{n}"] = {k: 1000 * v / n for k, v in s.items()} | {"ratio_torch_over_onnx":
                                                                           s["torch"] / s["onnx"]}
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


RUN = """async ({batch, repeats}) => {
  const ort = await import('./vendor/ort.wasm.bundle.min.js');
  const bytes = new Uint8Array(await (await fetch('model.onnx')).arrayBuffer());
  const s = await ort.InferenceSession.create(bytes, {executionProviders: ['wasm']});
  const x = new ort.Tensor('float32', new Float32Array(batch * 3 * 32 * 32).map(() => Math.random() * 2 - 1),
                           [batch, 3, 32, 32]);
  const feeds = {x_t: x, t: new ort.Tensor('int64', new BigInt64Array(batch).fill(499n), [batch]),
                 context: new ort.Tensor('float32', new Float32Array(batch * 5).fill(0.2), [batch, 5])};
  await s.run(feeds);
  const times = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / batch;
}"""


def browser_speed(repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    from tinydiffusion.export import export

    chromium = os.environ.get("TINYDIFFUSION_CHROMIUM") or shutil.which("chromium")
    with tempfile.TemporaryDirectory() as tmp:
        site = export("sprites-instant", Path(tmp) / "site", "web").out
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        out = {"first_tdGenerate_s": []}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                            "--disable-background-networking"])
                for _ in range(3):  # a fresh page each: the cold start as a visitor sees it
                    page = browser.new_page()
                    page.goto(url)
                    done = page.evaluate("async () => { await window.tdGenerate({context: 'hero', n: 1}); "
                                         "return performance.now(); }")  # ms since navigation started
                    out["first_tdGenerate_s"].append(done / 1000)
                    page.close()
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("body[data-ready=true]")
                for batch in BATCHES:
                    n = repeats if batch == 1 else max(3, repeats // 3)
                    out[f"network_b{batch}_ms"] = page.evaluate(RUN, {"batch": batch, "repeats": n})
                    ms = [page.evaluate(f"async () => (await window.tdGenerate({{context: 'hero', n: {batch}, "
                                        f"seed: {i}}})).ms") for i in range(n)]
                    out[f"tdGenerate_n{batch}_ms"] = statistics.median(ms) / batch
                browser.close()
        finally:
            server.shutdown()
    return out


def parity() -> dict:
    from tinydiffusion.export.onnx import image_parity
    from tinydiffusion.models.onnxnet import output_difference
    from tinydiffusion.sampling.pipeline import load

    out = {}
    for name, rows in (("sprites", None), ("sprites-fast", None), ("sprites-instant", None),
                       ("emoji", ["grinning face", "red heart", "a red apple", "rocket"])):
        try:
            a, b = load(name, backend="torch"), load(name, backend="onnx")
            rows = rows or a.default_rows()
            network = max(output_difference(a.model, b.model, 3, 32, a.context.width, batch=k, seed=k)
                          for k in (1, 8))
            images = image_parity(a, b, rows, n=8, seed=0)  # the card's sampler, steps and guidance
            out[name] = {"network_max_abs": network, **images, "settings": a.recommended}
        except Exception as e:  # noqa: BLE001 - e.g. emoji without the text extra: reported, not fatal
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def report(r: dict) -> None:
    print(f"CPU {r['cpu']}, {r['torch_threads']} torch threads, load average {r['load_average_before'][0]:.1f}")
    print("one network evaluation of the sprite network, ms per image:")
    br = r.get("browser", {})
    for batch in BATCHES:
        n = r["network"][f"b{batch}"]
        web = br.get(f"network_b{batch}_ms")
        extra = f", browser {web:.2f} (browser/onnxruntime {web / n['onnx']:.1f}x)" if web else ""
        print(f"  batch {batch:>2}: torch {n['torch']:.2f}, onnxruntime {n['onnx']:.2f} "
              f"(torch/onnxruntime {n['ratio_torch_over_onnx']:.2f}x){extra}")
    print("whole samples with the card's settings, ms per image:")
    for key, s in r["sampling"].items():
        print(f"  {key:<22} torch {s['torch']:.1f}, onnxruntime {s['onnx']:.1f} ({s['ratio_torch_over_onnx']:.2f}x)")
    if br:
        print(f"  browser tdGenerate (sprites-instant): n1 {br['tdGenerate_n1_ms']:.1f}, "
              f"n64 {br['tdGenerate_n64_ms']:.1f} ms per image; first answer after "
              f"{', '.join(f'{s:.2f}' for s in br['first_tdGenerate_s'])} s from navigation")
    for name, p in r.get("parity", {}).items():
        if "error" in p:
            print(f"  parity {name}: {p['error']}")
        else:
            print(f"  parity {name}: network {p['network_max_abs']:.2g}, images {p['uint8']:.0f}/255 "
                  f"(float {p['float']:.3f} levels) over {p['images']} images")


if __name__ == "__main__":
    main()
