"""``export --format onnx`` and the onnxruntime backend: the graph computes the network (max abs difference), the
images from the same seeds are the PyTorch ones (every sampler, guidance, students, text, unconditional, both
architectures), ``td.load`` runs an export folder through onnxruntime, the interop files are what diffusers and the
Hub read, and bad input is refused cleanly. Tiny random networks (8 px) keep it fast; the shipped models are in
``test_export_shipped.py``.

Skipped, with the reason, without the ``onnx`` extra (``pip install -e '.[onnx]'``; ``make`` installs it).
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install -e '.[onnx]')")

from corpus import assert_refused  # noqa: E402
from tinydiffusion.cli.main import main  # noqa: E402
from tinydiffusion.errors import UsageError  # noqa: E402
from tinydiffusion.export import export  # noqa: E402
from tinydiffusion.export.hub import scheduler_config, split_front_matter  # noqa: E402
from tinydiffusion.export.onnx import image_parity  # noqa: E402
from tinydiffusion.models.onnxnet import OnnxNetwork, check_backend, output_difference  # noqa: E402
from tinydiffusion.sampling.pipeline import load  # noqa: E402

NAMES = ["square", "hbar", "vbar"]


def make_model(folder, *, arch="unet", kind="class", prediction="v", zero_terminal=True, schedule="linear",
               recommended=None, distilled=None, seed=0, size=8):
    """A model folder holding a tiny network with random (non-zero) weights, written as training writes one."""
    from tinydiffusion.models import ModelConfig, build_model
    from tinydiffusion.store.checkpoint import export_model

    width = {"class": 3, "none": 0, "text": 16, "vector": 4}[kind]
    if arch == "course":
        mc = ModelConfig(arch="course", image_size=size, context_width=width, base=16, T=50)
    else:
        mc = ModelConfig(image_size=size, context_width=width, base=16, mults=(1, 2), attention=(4,), T=50)
    torch.manual_seed(seed)
    net = build_model(mc)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the zero-initialised output conv too: outputs are not all zero
    context = {"class": {"kind": "class", "width": 3, "names": NAMES}, "none": {"kind": "none", "width": 0},
               "text": {"kind": "text", "width": 16, "encoder": "hash-16"},
               "vector": {"kind": "vector", "width": 4}}[kind]
    sched = {"kind": schedule, "T": 50, "zero_terminal_snr": zero_terminal}
    sched.update({"beta_start": 1e-4, "beta_end": 0.02} if schedule == "linear" else {"s": 0.008})
    config = {"format": "tinydiffusion-model", "version": "0.1.0", "model": mc.to_dict(), "schedule": sched,
              "context": context, "prediction": prediction,
              "examples": [[0, "a red square"], [1, "blue bar"]] if kind == "text" else [],
              "recommended": recommended or {"sampler": "ddim", "steps": 4, "guidance": 2.0}}
    if distilled:
        config["distilled"] = distilled
    export_model(folder, net, config)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny class model and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    model = make_model(root / "model")
    result = export(model, root / "export")
    return model, result


@pytest.fixture(scope="module")
def pipes(tiny):
    """The tiny model loaded with PyTorch, and its export loaded (through onnxruntime: ``auto``)."""
    model, result = tiny
    return load(model, backend="torch"), load(result.out)


# ---------------------------------------------------------------------------------------------- parity
def test_export_writes_the_folder_and_the_graph_computes_the_network(tiny):
    model, result = tiny
    assert set(result.files) == {"model.onnx", "config.json", "model.safetensors", "README.md",
                                 "scheduler_config.json"}
    assert 0 <= result.max_difference < 1e-4
    torch_pipe = load(model, backend="torch")
    network = OnnxNetwork(result.out / "model.onnx")
    for batch in (1, 5, 33):  # dynamic batch size
        assert output_difference(torch_pipe.model, network, 3, 8, 3, batch=batch, seed=batch) < 1e-4
    assert (result.out / "config.json").read_bytes() == (model / "config.json").read_bytes()


@pytest.mark.parametrize("sampler,steps,options", [("ddpm", 10, {}), ("ddim", 5, {}), ("ddim", 5, {"eta": 0.5}),
                                                   ("dpmpp_2m", 6, {}), ("euler", 5, {}), ("consistency", 3, {})])
def test_every_sampler_gives_the_same_images_guided_and_unguided(pipes, sampler, steps, options):
    a, b = pipes
    assert isinstance(b.model, OnnxNetwork) and not isinstance(a.model, OnnxNetwork)
    for guidance in (1.0, 3.0):
        diff = image_parity(a, b, ["square", "hbar=1,vbar=0.5"], n=3, seed=7, sampler=sampler, steps=steps,
                            guidance=guidance, **options)
        assert diff["uint8"] <= 2 and diff["float"] < 0.05, (sampler, guidance, diff)


@pytest.mark.parametrize("arch,kind,prediction,zero_terminal", [("unet", "none", "eps", False),
                                                                 ("course", "class", "x0", True),
                                                                 ("unet", "text", "v", True),
                                                                 ("unet", "vector", "eps", False)])
def test_architectures_predictions_and_context_kinds(tmp_path, arch, kind, prediction, zero_terminal):
    model = make_model(tmp_path / "m", arch=arch, kind=kind, prediction=prediction, zero_terminal=zero_terminal)
    result = export(model, tmp_path / "x")
    a, b = load(model, backend="torch"), load(result.out)
    context = {"none": None, "class": ["vbar"], "text": ["a red square", "blue bar"],
               "vector": torch.tensor([[0.5, -1.0, 0.2, 0.0]])}[kind]  # text: the encoder runs in PyTorch
    diff = image_parity(a, b, context, n=2, seed=1, sampler="dpmpp_2m", steps=5, guidance=2.0)
    assert diff["uint8"] <= 2, diff


def test_a_distilled_student_samples_only_as_distilled_through_onnx(tmp_path):
    card = {"sampler": "ddim", "steps": 2, "guidance": 3.0}
    model = make_model(tmp_path / "m", recommended=card,
                       distilled={"method": "progressive", "sampler": "ddim", "steps": [2], "guidance": 3.0})
    b = load(export(model, tmp_path / "x").out)
    diff = image_parity(load(model, backend="torch"), b, ["hbar"], n=4)  # the card's settings
    assert diff["uint8"] <= 2
    with pytest.raises(UsageError, match="steps=4 is not one this model supports"):
        b.sample("hbar", steps=4)


def test_backend_onnx_converts_a_plain_model_folder_in_memory(tiny):
    model, _ = tiny
    pipe = load(model, backend="onnx")
    assert isinstance(pipe.model, OnnxNetwork) and str(pipe.device) == "cpu"
    assert image_parity(load(model), pipe, ["square"], n=2)["uint8"] <= 2  # auto: no model.onnx -> PyTorch
    with pytest.raises(UsageError, match="backend='gpu' is not allowed: expected one of auto, torch, onnx"):
        load(model, backend="gpu")
    with pytest.raises(UsageError, match="onnxruntime runs the network on the CPU"):
        check_backend("onnx", "cuda")
    import copy

    for use in (pipe.model.state_dict, lambda: copy.deepcopy(pipe.model)):  # what training from it would do
        with pytest.raises(UsageError, match="runs in onnxruntime.*backend='torch'"):
            use()


def test_a_graph_of_another_network_is_refused_at_load(tiny, tmp_path):
    _, result = tiny
    other = make_model(tmp_path / "other", seed=5)
    (other / "model.onnx").write_bytes((result.out / "model.onnx").read_bytes())
    with pytest.raises(UsageError, match="does not compute the network of"):
        load(other)
    (other / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(UsageError, match="could not be loaded by onnxruntime"):
        load(other)
    assert not isinstance(load(other, backend="torch").model, OnnxNetwork)


# ---------------------------------------------------------------------------------------------- interop
@pytest.mark.parametrize("schedule,prediction,zero_terminal,s", [("linear", "v", True, None),
                                                                 ("cosine", "eps", False, None),
                                                                 ("cosine", "x0", True, 0.02)])
def test_diffusers_loads_the_same_schedule(tiny, tmp_path, schedule, prediction, zero_terminal, s):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the bench extra")
    from tinydiffusion.core.schedule import Schedule

    config = json.loads((tiny[1].out / "config.json").read_text())  # what the export wrote, then other schedules
    config["prediction"] = prediction
    config["schedule"] = {"kind": schedule, "T": 50, "zero_terminal_snr": zero_terminal}
    config["schedule"].update({"beta_start": 1e-4, "beta_end": 0.02} if schedule == "linear" else {"s": s or 0.008})
    (tmp_path / "scheduler_config.json").write_text(json.dumps(scheduler_config(config)))
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path)
    ours = Schedule.from_dict(config["schedule"]).alpha_bar
    assert torch.allclose(scheduler.alphas_cumprod.double(), ours, atol=2e-6, rtol=0)
    assert scheduler.config.prediction_type == {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}[prediction]
    assert scheduler.config.clip_sample is False and scheduler.config.num_train_timesteps == 50
    assert scheduler.config.rescale_betas_zero_snr is zero_terminal
    if schedule == "linear":  # the export's own file
        exported = diffusers.DDPMScheduler.from_pretrained(tiny[1].out)
        assert torch.allclose(exported.alphas_cumprod.double(), load(tiny[1].out).schedule.alpha_bar, atol=2e-6)


def test_the_card_front_matter_parses_and_the_card_is_idempotent(tiny, tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    _, result = tiny
    text = (result.out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "tinydiffusion" and front["license"] == "other"
    assert front["pipeline_tag"] == "unconditional-image-generation" and "onnx" in front["tags"]
    assert "ddim, 4 steps, guidance 2" in text and "`square`" in text
    again = export(result.out, tmp_path / "again", license="mit").out / "README.md"
    fields, body = split_front_matter(again.read_text())
    assert fields["license"] == "mit" and body.count("## Settings and interop") == 1
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub comes with diffusers")
    assert hub.ModelCard(text).data.library_name == "tinydiffusion"


def test_weights_keep_their_tensors_and_carry_modelspec_metadata(tiny):
    import onnx
    from safetensors import safe_open

    model, result = tiny
    old, new = (model / "model.safetensors").read_bytes(), (result.out / "model.safetensors").read_bytes()
    body = lambda data: data[8 + struct.unpack("<Q", data[:8])[0]:]  # noqa: E731 - the tensor bytes
    assert body(old) == body(new)
    with safe_open(str(result.out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["modelspec.sai_model_spec"] == "1.0.0" and meta["modelspec.implementation"] == "tinydiffusion"
    assert meta["modelspec.architecture"] == "tinydiffusion-unet-8-v" and meta["modelspec.resolution"] == "8x8"
    assert meta["modelspec.hash_sha256"] == "0x" + hashlib.sha256(body(new)).hexdigest()
    props = {p.key: p.value for p in onnx.load(str(result.out / "model.onnx")).metadata_props}
    assert props["modelspec.prediction_type"] == "v"
    assert json.loads(props["tinydiffusion.config"])["context"]["names"] == NAMES


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_export_then_sample_through_onnxruntime(tiny, tmp_path, capsys):
    model, _ = tiny
    out = tmp_path / "cli"
    assert main(["export", str(model), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity" in printed and f"tinydiffusion sample {out}" in printed
    assert main(["sample", str(out), "--n", "2", "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["sample", str(model), "--n", "2", "--backend", "torch", "--out", str(tmp_path / "b.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert main(["export", str(model), "--out", str(out), "--overwrite"]) == 0  # a previous export is replaced


def test_bad_input_is_refused_cleanly(tiny, tmp_path, capsys):
    model, result = tiny
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    (tmp_path / "notmodel").mkdir()
    cases = [(["export", model, "--format", "png", "--out", tmp_path / "a"], ["format", "png", "onnx, web"]),
             (["export", model, "--out", tmp_path / "full"], ["out", "holds files"]),
             (["export", model, "--out", tmp_path / "full", "--overwrite"], ["out", "previous export"]),
             (["export", model, "--out", tmp_path / "file"], ["out", "is a file"]),
             (["export", model, "--out", result.out], ["out", "--overwrite"]),
             (["export", tmp_path / "notmodel", "--out", tmp_path / "b"], ["notmodel", "not an exported model"]),
             (["export", tmp_path / "missing", "--out", tmp_path / "b"], ["missing", "does not exist"]),
             (["export", model, "--out", tmp_path / "b", "--prompt", "x"], ["prompts", "format web"]),
             (["export", model, "--out", tmp_path / "b", "--license", "My Licence"], ["license", "apache-2.0"]),
             (["sample", model, "--backend", "tpu", "--out", tmp_path / "s.png"], ["backend", "tpu", "onnx"])]
    for argv, names in cases:
        assert_refused(argv, names, tmp_path, capsys)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
