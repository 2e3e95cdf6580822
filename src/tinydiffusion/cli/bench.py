"""Command-line part for ``tinydiffusion bench`` (standard library only at module level)."""

from __future__ import annotations

from .types import finite_float, int_list


def add_command(commands, given) -> None:
    p = commands.add_parser("bench", help="measure speed: matmul ceiling, our presets vs the course network and "
                                          "diffusers, training images/s, ms per network evaluation",
                            description="Measure on this machine and print ratios ours/theirs; writes --out JSON.")
    p.add_argument("--presets", type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()),
                   help="comma-separated presets (default small,tiny,course; the first also gets the "
                        "speed variants: channels-last, one thread, no inference_mode)")
    p.add_argument("--no-variants", dest="variants", action="store_false", default=None,
                   help="skip the speed variants")
    p.add_argument("--no-diffusers", dest="diffusers", action="store_false", default=None,
                   help="skip the diffusers UNet2DModel")
    p.add_argument("--image-size", type=int, help="pixels (default 16)")
    p.add_argument("--batch-size", type=int, help="training batch (default 64)")
    p.add_argument("--eval-batches", type=int_list,
                   help="batch sizes for ms per network evaluation (default 1,16,64)")
    p.add_argument("--seconds", type=finite_float, help="seconds per measurement (default 3)")
    p.add_argument("--compile", action="store_true", default=None, help="also torch.compile each network")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--out", help="JSON report (default bench.json)")
    p.set_defaults(handler=lambda args: _bench(args, given))


def _bench(args, given) -> int:
    from ..quality.bench import BenchConfig, bench

    config = BenchConfig(**given(args, BenchConfig))
    report = bench(config)
    print(format_report(report))
    if config.out:
        from ..store.files import write_json

        write_json(config.out, report)
        print(f"  wrote {config.out}")
    return 0


def format_report(report: dict) -> str:
    """The bench table (Markdown), then ratios of our presets to the course network and to diffusers."""
    c = report["ceiling_gflops"]
    precisions = [p for p in ("fp32", "bf16") if f"train_images_per_s_{p}" in report["networks"][0]]
    batches = report["settings"]["eval_batches"]
    lines = [f"{report['machine']}, {report['date']}; {report['settings']['image_size']}×"
             f"{report['settings']['image_size']} images, training batch {report['settings']['batch_size']}",
             f"matmul ceiling: fp32 {c['fp32']:.0f} GFLOP/s, bf16 {c['bf16']:.0f} GFLOP/s", "",
             "| network | parameters | MFLOP/image | precision | train images/s | train GFLOP/s (share of ceiling) | "
             + " | ".join(f"ms/eval b{b}" for b in batches) + " |",
             "|---|---:|---:|---|---:|---:|" + "---:|" * len(batches)]
    for r in report["networks"]:
        for p in precisions:
            lines.append(f"| {r['network']} | {r['parameters']:,} | {r['flops_per_image'] / 1e6:.0f} | {p} | "
                         f"{r[f'train_images_per_s_{p}']:.0f} | {r[f'train_gflops_{p}']:.0f} "
                         f"({r[f'train_share_of_ceiling_{p}']:.0%}) | "
                         + " | ".join(f"{r[f'ms_per_eval_b{b}_{p}']:.1f}" for b in batches) + " |")
    overhead = report["sampler_overhead_ms_per_step"]
    lines += ["", "sampler overhead per step (batch 64, network excluded): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in overhead.items())]
    by_name = {r["network"]: r for r in report["networks"]}
    for theirs in ("course", "diffusers UNet2DModel"):
        if theirs not in by_name:
            continue
        t = by_name[theirs]
        for r in report["networks"]:
            if r["network"] in ("course", "diffusers UNet2DModel"):
                continue
            best_ours = max(r[f"train_images_per_s_{p}"] for p in precisions)
            best_theirs = max(t[f"train_images_per_s_{p}"] for p in precisions)
            ms_ours = min(r[f"ms_per_eval_b{batches[-1]}_{p}"] for p in precisions)
            ms_theirs = min(t[f"ms_per_eval_b{batches[-1]}_{p}"] for p in precisions)
            lines.append(f"ratio {r['network']} / {theirs}: training images/s ×{best_ours / best_theirs:.2f}, "
                         f"sampling speed (b{batches[-1]}) ×{ms_theirs / ms_ours:.2f} (best precision of each)")
    v = report.get("variants")
    if v:
        lines += ["", f"speed settings on {v['network']} (fp32; ratio to as is, > 1 is faster): "
                  + ", ".join(f"{r['variant']} training ×{r['train_ratio']:.2f} sampling ×{r['eval_ratio']:.2f}"
                              for r in v["rows"][1:])]
    lines += report.get("notes", [])
    return "\n".join(lines)
