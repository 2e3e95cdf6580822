"""Peak memory of training batches from a data set held in RAM vs. a packed set read memory-mapped.

    .venv/bin/python benchmarks/data_memory.py [--images 200000] [--size 32] [--batches 200] [--batch 64]

Writes a synthetic set (uint8 N×S×S×3, in chunks with ``open_memmap``, never whole in RAM) with
one-hot labels in the course's format, packs it with ``data pack``, then measures in fresh
subprocesses: (a) ``load_dataset`` of the arrays into RAM + ``as_tensor`` + ``make_batch`` of random
batches, as training does today, (b) the packed set memory-mapped + ``make_batch`` gathering only the
batch rows, from a cold page cache (the file's pages dropped first, as for a set larger than RAM),
(c) the packed set again with its pages still cached, and (0) the interpreter with numpy + torch
imported, the floor under every number. Peak RSS comes from ``getrusage(ru_maxrss)`` (and VmHWM, which
agrees: the parent stays small, since Linux carries a parent's peak into a forked child's ru_maxrss,
so the set is made and packed in a subprocess too); RssAnon (memory
the process owns) and RssFile (file pages mapped, which the kernel can drop under pressure) from
``/proc/self/status`` after the last batch. Prints a table and writes benchmarks/results/data_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "data_memory.json"

CHILD = r"""
import json, os, resource, sys, time
import numpy as np, torch
mode, images_path, labels_path, packed, batches, batch = sys.argv[1:7]
batches, batch = int(batches), int(batch)
from tinydiffusion.data.batches import as_tensor, make_batch
from tinydiffusion.data.load import load_dataset
t0 = time.perf_counter()
if mode == "baseline":
    images = None
elif mode == "ram":
    d = load_dataset(images_path, labels=labels_path)
    images = as_tensor(d.images)  # what train.py does with the whole set
else:
    if mode == "mmap-cold":  # drop the file's cached pages: the set is read from disk as if larger than RAM
        fd = os.open(packed, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
    d = load_dataset(packed)
    assert d.mapped
    images = d.images
load_s = time.perf_counter() - t0
g, checksum, t1 = torch.Generator().manual_seed(0), 0.0, time.perf_counter()
if images is not None:
    n = images.shape[0]
    for _ in range(batches):
        idx = torch.randint(0, n, (batch,), generator=g)
        x = make_batch(images, idx, flip=True, generator=g)
        checksum += float(x.sum())
batch_s = time.perf_counter() - t1
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
kib = lambda key: int(status.get(key, "0 kB").split()[0])
print(json.dumps({"mode": mode, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "vm_hwm_mib": kib("VmHWM") / 1024, "rss_anon_mib": kib("RssAnon") / 1024, "rss_file_mib": kib("RssFile") / 1024,
                  "load_s": round(load_s, 3), "ms_per_batch": round(1000 * batch_s / max(batches, 1), 3),
                  "checksum": checksum}))
"""


def make_set(folder: Path, n: int, size: int, classes: int = 5) -> tuple[Path, Path]:
    """Random images written chunk by chunk into an ``open_memmap`` (never all in RAM), one-hot labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for start in range(0, n, 10_000):
        stop = min(n, start + 10_000)
        images[start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), dtype=np.uint8)
    images.flush()
    del images
    np.save(folder / "labels.npy", np.eye(classes, dtype=np.uint8)[rng.integers(0, classes, n)])
    return folder / "images.npy", folder / "labels.npy"


def measure(mode: str, images: Path, labels: Path, packed: Path, batches: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(images), str(labels), str(packed), str(batches),
                          str(batch)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # (internal) make and pack the set in this folder
    args = parser.parse_args()
    if args.prepare:
        from tinydiffusion.data.pack import pack_dataset

        t0 = time.perf_counter()
        images, labels = make_set(Path(args.prepare), args.images, args.size)
        t1 = time.perf_counter()
        pack_dataset(str(images), Path(args.prepare) / "packed.npy", labels=str(labels))
        print(json.dumps([round(t1 - t0, 2), round(time.perf_counter() - t1, 2)]))
        return
    from tinydiffusion.store.files import write_json

    with tempfile.TemporaryDirectory(prefix="data_memory.") as tmp:
        folder = Path(tmp)
        prepared = subprocess.run([sys.executable, __file__, "--prepare", tmp, "--images", str(args.images),
                                   "--size", str(args.size)], capture_output=True, text=True, check=True)
        made_s, pack_s = json.loads(prepared.stdout.strip().splitlines()[-1])
        images, labels = folder / "images.npy", folder / "labels.npy"
        runs = {mode: measure(mode, images, labels, folder / "packed.npy", args.batches, args.batch)
                for mode in ("baseline", "ram", "mmap-cold", "mmap-warm")}
    assert runs["ram"]["checksum"] == runs["mmap-cold"]["checksum"] == runs["mmap-warm"]["checksum"], \
        "the memory-mapped batches differ from the in-RAM ones"
    set_mib = args.images * args.size * args.size * 3 / 2**20
    ratio = runs["ram"]["peak_rss_mib"] / runs["mmap-cold"]["peak_rss_mib"]
    print(f"{args.images:,} images {args.size}×{args.size} ({set_mib:.0f} MiB), {args.batches} random batches of "
          f"{args.batch}; made in {made_s:.1f} s, packed in {pack_s:.1f} s; CPU: {cpu_name()}")
    print(f"{'path':<11} {'peak RSS MiB':>13} {'VmHWM MiB':>10} {'RssAnon MiB':>12} {'RssFile MiB':>12} {'load s':>7} "
          f"{'ms/batch':>9}")
    for mode, r in runs.items():
        print(f"{mode:<11} {r['peak_rss_mib']:>13.0f} {r['vm_hwm_mib']:>10.0f} {r['rss_anon_mib']:>12.0f} {r['rss_file_mib']:>12.0f} "
              f"{r['load_s']:>7.2f} {r['ms_per_batch']:>9.2f}")
    print(f"peak RSS, in RAM / memory-mapped (cold): {ratio:.1f}×; above the import floor: "
          f"{runs['ram']['peak_rss_mib'] - runs['baseline']['peak_rss_mib']:.0f} MiB vs "
          f"{runs['mmap-cold']['peak_rss_mib'] - runs['baseline']['peak_rss_mib']:.0f} MiB")
    write_json(RESULTS, {"images": args.images, "size": args.size, "batches": args.batches, "batch": args.batch,
                         "set_mib": round(set_mib, 1), "make_s": round(made_s, 2), "pack_s": round(pack_s, 2),
                         "cpu": cpu_name(), "cores": os.cpu_count(), "runs": runs,
                         "peak_rss_ratio_ram_over_mmap_cold": round(ratio, 2)})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
