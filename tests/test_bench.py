"""`tinydiffusion bench` end to end with tiny settings: every figure it promises, and the ratios."""

import json

import pytest
import torch

from tinydiffusion.quality.bench import BenchConfig, bench, flops_per_image, matmul_ceiling
from tinydiffusion.cli.main import main
from tinydiffusion.cli.quality import format_report
from tinydiffusion.models import build_model, preset

QUICK = BenchConfig(presets=("tiny", "course"), diffusers=False, image_size=8, batch_size=4, eval_batches=(1, 2),
                    seconds=0.02, out=None)


def test_flop_counter_counts_a_known_convolution():
    # one 3×3 convolution, 3 → 4 channels, 8×8 output: 2 · 8·8 · 4 · 3·3·3 multiply-adds per image
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert flops_per_image(lambda x, t, c: conv(x), 8, 5, torch.device("cpu")) == 2 * 8 * 8 * 4 * 27


def test_matmul_ceiling_is_a_positive_rate():
    assert 0 < matmul_ceiling(torch.device("cpu"), torch.float32, 0.01) < 1e6


def test_bench_reports_every_figure_and_the_ratios_to_the_course_network():
    report = bench(QUICK)
    names = [r["network"] for r in report["networks"]]
    assert names == ["tiny", "course"]
    tiny = report["networks"][0]
    assert tiny["parameters"] == sum(p.numel() for p in build_model(preset("tiny", image_size=8, context_width=5)).parameters())
    for key in ("flops_per_image", "train_images_per_s_fp32", "train_gflops_fp32", "train_share_of_ceiling_fp32",
                "ms_per_eval_b1_fp32", "ms_per_eval_b2_fp32", "eval_gflops_b2_fp32"):
        assert tiny[key] > 0, key
    assert set(report["sampler_overhead_ms_per_step"]) == {"ddpm", "ddim", "dpmpp_2m", "euler", "consistency"}
    variants = [r["variant"] for r in report["variants"]["rows"]]
    assert variants[:3] == ["as is", "channels-last", "no inference_mode"]
    assert report["variants"]["rows"][0]["train_ratio"] == 1.0
    text = format_report(report)
    assert "ratio tiny / course: training images/s ×" in text
    assert "channels-last training ×" in text
    assert "| tiny | " in text and "| course | " in text


def test_bench_cli_writes_json_and_without_diffusers_says_so(tmp_path, capsys, monkeypatch):
    import tinydiffusion.quality.bench as bench_module

    monkeypatch.setattr(bench_module, "diffusers_unet", lambda size, width: None)  # as without the extra
    out = tmp_path / "bench.json"
    assert main(["bench", "--presets", "tiny", "--image-size", "8", "--batch-size", "4", "--eval-batches", "1,2",
                 "--seconds", "0.02", "--no-variants", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["networks"][0]["network"] == "tiny" and report["variants"] is None
    assert "diffusers is not installed" in printed and "matmul ceiling: fp32" in printed


def test_diffusers_unet_is_measured_beside_ours_when_installed():
    pytest.importorskip("diffusers")
    from dataclasses import replace

    report = bench(replace(QUICK, presets=("tiny",), diffusers=True, variants=False))
    assert [r["network"] for r in report["networks"]] == ["tiny", "diffusers UNet2DModel"]
    assert "ratio tiny / diffusers UNet2DModel" in format_report(report)


def test_bench_refuses_unknown_preset(capsys):
    assert main(["bench", "--presets", "huge", "--no-diffusers", "--out", ""]) == 2
    assert "huge" in capsys.readouterr().err
