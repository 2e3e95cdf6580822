"""Speed on this machine, ours beside the course network and diffusers: ``bench(BenchConfig) -> dict``.

Measures the matmul ceiling (fp32, bf16), then for every network: parameters, FLOPs per image
(torch's FLOP counter), training images/s, milliseconds per network evaluation at several batch
sizes, achieved GFLOP/s and its share of the ceiling, and the samplers' own overhead per step.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, replace

import torch

from .. import checks
from ..core.loss import diffusion_loss
from ..core.samplers import SAMPLERS
from ..core.schedule import Schedule
from ..errors import bad_value
from ..models import build_model, count_parameters, preset
from ..runtime.dist import autocast, native_bf16, resolve_device
from ..vocab import PRECISIONS


@dataclass(frozen=True)
class BenchConfig:
    presets: tuple[str, ...] = ("small", "tiny", "course")  # the first (the default) also gets the variants
    diffusers: bool = True  # a diffusers UNet2DModel of comparable size, when the 'bench' extra is there
    image_size: int = 16
    batch_size: int = 64
    eval_batches: tuple[int, ...] = (1, 16, 64)
    precisions: tuple[str, ...] = PRECISIONS
    seconds: float = 3.0  # per measurement
    device: str = "auto"
    compile: bool = False
    variants: bool = True  # channels-last, one thread, no inference_mode: each against the first preset as is
    out: str | None = "bench.json"

    def __post_init__(self) -> None:
        """Every setting checked before minutes of measuring (presets are checked by name in ``bench``)."""
        if isinstance(self.presets, str) or not all(isinstance(p, str) for p in self.presets):
            raise bad_value("presets", self.presets, "a tuple of preset names such as ('small', 'tiny')")
        checks.integer("image_size", self.image_size, low=4, high=512, allowed="an integer in 4..512 pixels")
        checks.integer("batch_size", self.batch_size, low=1, allowed="a positive number of images per training step")
        if not self.eval_batches:
            raise bad_value("eval_batches", self.eval_batches, "at least one batch size")
        for b in self.eval_batches:
            checks.integer("eval_batches", b, low=1, allowed="positive batch sizes such as 1,16,64")
        if isinstance(self.precisions, str) or not self.precisions:
            raise bad_value("precisions", self.precisions, f"a non-empty tuple of {' and '.join(PRECISIONS)}")
        for p in self.precisions:
            checks.choice("precisions", p, PRECISIONS)
        checks.finite("seconds", self.seconds, low=0, high=3600, low_open=True,
                      allowed="a finite number of seconds in (0, 3600] per measurement")
        if self.out:  # "" or None: no report file
            checks.output_path("out", self.out, suffixes=(".json",))
        for name in self.presets:  # a bad name fails now, not after a minute of measuring
            preset(name, image_size=self.image_size, context_width=5)
        # training keeps about 8 maps of the widest preset's 128 channels per image for the backward pass
        per_image = 4 * 8 * 128 * 3 * self.image_size**2
        checks.memory("batch_size", self.batch_size, per_image * self.batch_size, "training batch")
        checks.memory("eval_batches", max(self.eval_batches), per_image * max(self.eval_batches), "evaluation batch")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, device: torch.device, seconds: float) -> float:
    """Seconds per call of ``fn``: two warm-ups, then as many calls as fit in ``seconds`` (at least 3)."""
    for _ in range(2):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - t0) / n


def matmul_ceiling(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a square matrix product, the machine's practical ceiling for this dtype: the size
    doubles (from 256) until one product takes 50 ms, so an emulated dtype is measured quickly."""
    n, limit = 256, 16384 if device.type == "cuda" else 2048
    while True:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        sec = _rate(lambda: a @ b, device, 0.0)
        if sec > 0.05 or n >= limit:
            break
        n *= 2
    return 2 * n**3 / _rate(lambda: a @ b, device, seconds) / 1e9


def flops_per_image(net, size: int, width: int, device: torch.device) -> float:
    """Forward FLOPs for one image, from torch's FLOP counter (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, c = torch.randn(2, 3, size, size, device=device), torch.tensor([1, 2], device=device), torch.zeros(2, width, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, c)
    return counter.get_total_flops() / 2


def diffusers_unet(size: int, width: int):
    """A diffusers UNet2DModel of about the size of our 'small' preset, class-conditioned through its
    ``class_embedding`` (a projection of our context vector); None when diffusers is not installed."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
                                    block_out_channels=(32, 64, 64), norm_num_groups=8,
                                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                                    class_embed_type="identity")
            self.context = torch.nn.Linear(width, 128)  # time-embedding width = 4 × 32

        def forward(self, x, t, c):
            return self.unet(x, t, class_labels=self.context(c)).sample

    return Wrapped()


def measure(name: str, net, config: BenchConfig, device: torch.device, ceilings: dict) -> dict:
    size, width, B = config.image_size, 5, config.batch_size
    net = net.to(device)
    row = {"network": name, "parameters": count_parameters(net), "flops_per_image": flops_per_image(net, size, width, device)}
    schedule = Schedule.linear(500)
    x0 = torch.rand(B, 3, size, size, device=device) * 2 - 1
    ctx = torch.eye(width, device=device)[torch.randint(0, width, (B,))]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    for precision in config.precisions:
        def step():
            with autocast(device, precision):
                loss = diffusion_loss(net, schedule, x0, ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        net.train()
        sec = _rate(step, device, config.seconds)
        row[f"train_images_per_s_{precision}"] = B / sec
        row[f"train_gflops_{precision}"] = 3 * row["flops_per_image"] * B / sec / 1e9  # backward ≈ 2× forward
        row[f"train_share_of_ceiling_{precision}"] = row[f"train_gflops_{precision}"] / ceilings[precision]
        net.eval()
        for b in config.eval_batches:
            x, t, c = torch.randn(b, 3, size, size, device=device), torch.full((b,), 250, device=device), ctx[:1].expand(b, -1)

            def forward():
                with torch.inference_mode(), autocast(device, precision):
                    net(x, t, c)

            sec = _rate(forward, device, config.seconds / 2)
            row[f"ms_per_eval_b{b}_{precision}"] = sec * 1000
            row[f"eval_gflops_b{b}_{precision}"] = row["flops_per_image"] * b / sec / 1e9
    return row


def variants(name: str, config: BenchConfig, device: torch.device) -> list[dict]:
    """What each speed setting pays on ``name`` (fp32, training batch and the largest evaluation batch):
    the network as is, in channels-last memory format, on one thread, and sampled without
    ``torch.inference_mode`` (plain ``no_grad``). Ratios > 1 are faster than as is."""
    size, B, b = config.image_size, config.batch_size, config.eval_batches[-1]
    schedule = Schedule.linear(500)
    x0 = torch.rand(B, 3, size, size, device=device) * 2 - 1
    ctx = torch.eye(5, device=device)[torch.randint(0, 5, (B,))]
    x, t = torch.randn(b, 3, size, size, device=device), torch.full((b,), 250, device=device)
    threads = torch.get_num_threads()
    settings = [("as is", {}), ("channels-last", {"channels_last": True}), ("no inference_mode", {"no_grad": True})]
    if device.type == "cpu" and threads > 1:
        settings.append(("1 thread", {"threads": 1}))
    rows = []
    for label, s in settings:
        torch.manual_seed(0)
        net = build_model(preset(name, image_size=size, context_width=5)).to(device)
        fmt = torch.channels_last if s.get("channels_last") else torch.contiguous_format
        net = net.to(memory_format=fmt)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x0_f, x_f = x0.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt)  # laid out once, not per call

        def step():
            loss = diffusion_loss(net, schedule, x0_f, ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def forward():
            with torch.no_grad() if s.get("no_grad") else torch.inference_mode():
                net(x_f, t, ctx[:1].expand(b, -1))

        torch.set_num_threads(s.get("threads", threads))
        try:
            train_s, eval_s = _rate(step, device, config.seconds), _rate(forward, device, config.seconds / 2)
        finally:
            torch.set_num_threads(threads)
        rows.append({"variant": label, "train_images_per_s": B / train_s, f"ms_per_eval_b{b}": eval_s * 1000})
    for r in rows:
        r["train_ratio"] = r["train_images_per_s"] / rows[0]["train_images_per_s"]
        r["eval_ratio"] = rows[0][f"ms_per_eval_b{b}"] / r[f"ms_per_eval_b{b}"]
    return rows


def sampler_overhead(device: torch.device, size: int, seconds: float) -> dict:
    """Per-step cost of each sampler's own arithmetic (the network replaced by a free function), batch 64."""
    schedule, x_T = Schedule.linear(500), torch.randn(64, 3, size, size, device=device)
    free = lambda x, t, c: x  # noqa: E731 — costs nothing, so only the sampler is timed
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    out = {}
    for name, fn in SAMPLERS.items():
        sec = _rate(lambda: fn(free, schedule, x_T, None, steps=50, generator=gens), device, seconds)
        out[name] = sec / 50 * 1000
    return out


def bench(config: BenchConfig) -> dict:
    device = resolve_device(config.device)
    ceilings = {"fp32": matmul_ceiling(device, torch.float32, config.seconds),
                "bf16": matmul_ceiling(device, torch.bfloat16, config.seconds)}
    notes = []
    if "bf16" in config.precisions and not native_bf16(device):
        config = replace(config, precisions=tuple(p for p in config.precisions if p != "bf16"))
        notes.append(f"bf16 networks skipped: this {device.type} has no native bf16 (AVX-512 BF16 or AMX), so "
                     f"PyTorch emulates it ({ceilings['bf16']:.1f} GFLOP/s against {ceilings['fp32']:.0f} in fp32)")
    rows = []
    for name in config.presets:
        torch.manual_seed(0)
        net = build_model(preset(name, image_size=config.image_size, context_width=5))
        if config.compile:
            t0 = time.perf_counter()
            net = torch.compile(net)
            net(torch.randn(2, 3, config.image_size, config.image_size), torch.tensor([1, 2]), torch.zeros(2, 5))
            compile_s = time.perf_counter() - t0
        row = measure(name, net, config, device, ceilings)
        if config.compile:
            row["compile_seconds"] = compile_s
        rows.append(row)
    if config.diffusers:
        unet = diffusers_unet(config.image_size, 5)
        if unet is None:
            notes.append("diffusers is not installed (pip install 'tinydiffusion[bench]'): its UNet2DModel was skipped")
        else:
            rows.append(measure("diffusers UNet2DModel", unet, config, device, ceilings))
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine(device), "settings": asdict(config),
            "ceiling_gflops": ceilings, "networks": rows,
            "variants": {"network": config.presets[0], "rows": variants(config.presets[0], config, device)}
            if config.variants and config.presets else None,
            "sampler_overhead_ms_per_step": sampler_overhead(device, config.image_size, config.seconds / 2),
            "notes": notes}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{platform.processor() or 'unknown processor'}")
