"""The shipped models run anywhere: their folders carry the interop files (diffusers' scheduler, the Hub card,
model-spec metadata over unchanged tensors), and their ONNX images equal PyTorch's within 2/255 from the same
seeds with the card's settings (``sprites-instant`` and ``sprites-fast`` here; ``sprites`` and ``emoji``, and both
export formats of every shipped model, in the slow tests)."""

from __future__ import annotations

import hashlib
import json
import struct
from importlib import resources

import pytest
import torch

from tinydiffusion.sampling.pipeline import SHIPPED, load

FOLDER = resources.files("tinydiffusion") / "assets" / "models"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_folders_carry_the_interop_files(name):
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    from safetensors import safe_open

    folder = FOLDER / name
    front = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert front["library_name"] == "tinydiffusion" and front["license"] in ("mit", "apache-2.0")
    text = json.loads((folder / "config.json").read_text())["context"]["kind"] == "text"
    assert front["pipeline_tag"] == ("text-to-image" if text else "unconditional-image-generation")
    scheduler = json.loads((folder / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is False and scheduler["rescale_betas_zero_snr"] is True
    assert scheduler["prediction_type"] == "v_prediction"
    data = (folder / "model.safetensors").read_bytes()
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    body = data[8 + struct.unpack("<Q", data[:8])[0]:]
    assert meta["modelspec.title"] == name and meta["modelspec.architecture"] == "tinydiffusion-unet-32-v"
    assert meta["modelspec.hash_sha256"] == "0x" + hashlib.sha256(body).hexdigest()  # the tensors, unchanged
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the bench extra")
    alphas = diffusers.DDPMScheduler.from_pretrained(str(folder)).alphas_cumprod.double()
    assert torch.allclose(alphas, load(name).schedule.alpha_bar, atol=2e-6, rtol=0)


def _parity(name: str, rows=None, n: int = 4) -> dict:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
    from tinydiffusion.export.onnx import image_parity

    a, b = load(name, backend="torch"), load(name, backend="onnx")
    return image_parity(a, b, rows or a.default_rows(), n=n, seed=0)  # the card's sampler, steps and guidance


@pytest.mark.parametrize("name", ["sprites-instant", "sprites-fast"])
def test_students_give_the_same_images_through_onnxruntime(name):
    diff = _parity(name, n=2)
    assert diff["uint8"] <= 2, diff


@pytest.mark.slow
@pytest.mark.parametrize("name,rows", [("sprites", None), ("sprites-fast", None),
                                       ("emoji", ["grinning face", "red heart", "a red apple", "rocket"])])
def test_shipped_images_are_within_two_levels(name, rows):
    if name == "emoji":
        pytest.importorskip("sentence_transformers", reason="the emoji model needs the text extra")
    diff = _parity(name, rows, n=8)
    print(name, diff)
    assert diff["uint8"] <= 2, diff


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_exports_in_both_formats_from_the_cli(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
    from tinydiffusion.cli.main import main

    assert main(["export", name, "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert main(["sample", str(tmp_path / "onnx"), "--n", "1", "--out", str(tmp_path / "s.png")]) == 0
    text = json.loads((FOLDER / name / "config.json").read_text())["context"]["kind"] == "text"
    if not text or pytest.importorskip("sentence_transformers", reason="the text extra"):
        assert main(["export", name, "--format", "web", "--out", str(tmp_path / "web")]) == 0
        page = json.loads((tmp_path / "web" / "model.json").read_text())
        assert page["context"]["names"] and (tmp_path / "web" / "vendor" / "ort-wasm-simd-threaded.wasm").is_file()
