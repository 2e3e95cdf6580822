import json
import os

import pytest
import torch

from tinydiffusion.store.checkpoint import atomic_write, export_model, load_state, read_model, save_state
from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.errors import UsageError
from tinydiffusion.models import build_model, preset
from tinydiffusion.sampling.pipeline import Pipeline, load
from tinydiffusion.core.schedule import Schedule


def _exported(tmp_path):
    torch.manual_seed(0)
    config = preset("tiny", image_size=8, context_width=3, T=40)
    net = build_model(config)
    torch.nn.init.normal_(net.out.weight, std=0.01)
    schedule, spec = Schedule.cosine(40), ContextSpec.classes(["a", "b", "c"])
    export_model(tmp_path / "m", net, {"model": config.to_dict(), "schedule": schedule.to_dict(),
                                       "context": spec.to_dict(), "prediction": "eps"})
    return Pipeline(net.eval(), schedule, spec, {"model": config.to_dict()}), tmp_path / "m"


def test_export_then_load_gives_identical_samples(tmp_path):
    original, path = _exported(tmp_path)
    loaded = load(path)
    assert loaded.context.names == ("a", "b", "c") and loaded.schedule.to_dict()["kind"] == "cosine"
    for key, value in original.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    original.model.to(memory_format=torch.channels_last)  # as load() lays it out on a CPU
    for sampler in ("ddpm", "ddim"):
        a = original.sample(["a", "b=1,c=0.5"], n=3, seed=5, sampler=sampler, steps=10)
        b = loaded.sample(["a", "b=1,c=0.5"], n=3, seed=5, sampler=sampler, steps=10)
        assert torch.equal(a, b)


def test_same_seed_same_image_whatever_the_batch_size(tmp_path):
    pipe, _ = _exported(tmp_path)
    big = pipe.sample("b", n=5, seed=10, steps=12, batch_size=5)
    small = pipe.sample("b", n=2, seed=13, steps=12, batch_size=1)
    assert torch.allclose(big[3:], small, rtol=1e-4, atol=1e-5)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "state.pt"
    save_state(target, {"step": 1})

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert load_state(target)["step"] == 1
    assert os.listdir(tmp_path) == ["state.pt"]  # no temp file left behind


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_state_is_read_without_unpickling_code(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UsageError, match="could not be read safely"):
        load_state(path)


def test_broken_model_folders_are_named(tmp_path):
    with pytest.raises(UsageError, match="not an exported model folder"):
        read_model(tmp_path)
    _, path = _exported(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model"]["base"] = 24
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="do not fit its config.json"):
        load(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="safetensors"):
        load(path)
    (path / "config.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        load(path)


def test_pipeline_refuses_wrong_context_width(tmp_path):
    pipe, _ = _exported(tmp_path)
    with pytest.raises(UsageError, match="context width"):
        pipe.sample(torch.zeros(2, 4), steps=2)
    with pytest.raises(UsageError, match="sampler='plms'"):
        pipe.sample("a", sampler="plms")


# ---------------------------------------------------------------------- config.json schema (W2-1)
def test_schema_tables_match_the_code():
    from tinydiffusion import vocab
    from tinydiffusion.models import PRESETS, ModelConfig
    from tinydiffusion.store import modelfile

    assert {p["arch"] for p in PRESETS.values()} == set(vocab.ARCHS)  # every architecture has a preset
    from dataclasses import fields

    assert set(modelfile.MODEL) == {f.name for f in fields(ModelConfig)}  # to_dict leaves out some defaults
    assert set(Schedule.linear(10).to_dict()) <= set(modelfile.SCHEDULE) >= set(Schedule.cosine(10).to_dict())
    assert set(modelfile.CONTEXT) == {f.name for f in fields(ContextSpec)}


@pytest.mark.parametrize("folder", ["models/sprites", "models/emoji", "evaluators/sprites", "evaluators/emoji"])
def test_shipped_configs_pass_the_schema(folder):
    from importlib import resources

    from tinydiffusion.store.modelfile import check_config, read_json

    path = resources.files("tinydiffusion") / "assets" / folder / "config.json"
    check_config(read_json(path), path)


def test_export_refuses_a_config_it_could_not_read_back(tmp_path):
    net = build_model(preset("tiny", image_size=8, context_width=3, T=40))
    config = {"model": preset("tiny", image_size=8, context_width=3, T=40).to_dict(),
              "schedule": Schedule.linear(40).to_dict(), "context": ContextSpec.classes(["a", "b", "c"]).to_dict()}
    for bad in ({"prediction": "noise"}, {"schedule": {**config["schedule"], "beta_end": float("nan")}}):
        with pytest.raises(UsageError, match="prediction|strict JSON"):
            export_model(tmp_path / "m", net, {**config, **bad})
        assert not (tmp_path / "m").exists()


def test_from_dict_refuses_wrong_types_for_library_callers():
    from tinydiffusion.models import ModelConfig

    good = preset("tiny").to_dict()
    with pytest.raises(UsageError, match="model.image_size='16'"):
        ModelConfig.from_dict({**good, "image_size": "16"})
    with pytest.raises(UsageError, match="unknown field 'heads'"):
        ModelConfig.from_dict({**good, "heads": 4})
    with pytest.raises(UsageError, match=r"schedule.kind=\['linear'\]"):
        Schedule.from_dict({"kind": ["linear"], "T": 10})
    with pytest.raises(UsageError, match="context.names='abc'"):
        ContextSpec.from_dict({"kind": "class", "width": 3, "names": "abc"})
    with pytest.raises(UsageError, match="strictly decreasing"):
        Schedule.from_dict({"kind": "linear", "T": 100_000})  # alpha_bar underflows to 0 long before the end
    assert ContextSpec.from_dict({"kind": "text", "width": 16, "names": [], "encoder": "hash-16"}).width == 16


def test_read_model_reads_evaluators_and_load_refuses_them():
    from importlib import resources

    path = resources.files("tinydiffusion") / "assets" / "evaluators" / "sprites"
    config, weights = read_model(path)
    assert config["format"] == "tinydiffusion-evaluator" and weights
    with pytest.raises(UsageError, match="evaluator.*diffusion model"):
        load(path)


def test_non_finite_or_misshapen_weights_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = _exported(tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    key = next(iter(tensors))
    tensors[key] = tensors[key].clone().fill_(float("nan"))
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(UsageError, match=f"model.safetensors: tensor '{key}' holds .* NaN"):
        read_model(path)
