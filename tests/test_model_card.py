"""The model card's recommended sampling settings: written at export, used when a caller gives none."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tinydiffusion.cli.main import main
from tinydiffusion.errors import UsageError
from tinydiffusion.sampling.pipeline import load


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import train_tiny

    return train_tiny(tmp_path_factory.mktemp("card"), 2) / "model"


def test_an_exported_model_recommends_dpm_solver_guided(model):
    card = json.loads((model / "config.json").read_text())["recommended"]
    assert card == {"sampler": "dpmpp_2m", "steps": 10, "guidance": 3.0}
    assert load("emoji").recommended == {"sampler": "dpmpp_2m", "steps": 10, "guidance": 3.0,
                                         "snap": 0.5}  # prompts half-way to the nearest training caption
    assert load("sprites").recommended == {"sampler": "dpmpp_2m", "steps": 10, "guidance": 3.0,
                                           "guide": "sprites-guide", "guide_scale": 2.0}  # its guide beside guidance


def test_pipeline_sample_without_settings_uses_the_card(model):
    pipe = load(model)
    by_card = pipe.sample(["square"], n=2, seed=3)
    explicit = pipe.sample(["square"], n=2, seed=3, sampler="dpmpp_2m", steps=10, guidance=3.0)
    assert torch.equal(by_card, explicit)
    assert not torch.equal(by_card, pipe.sample(["square"], n=2, seed=3, sampler="dpmpp_2m", steps=10, guidance=1.0))


def test_cli_sample_says_it_used_the_card_and_records_it(model, tmp_path, capsys):
    assert main(["sample", str(model), "--n", "2", "--out", str(tmp_path / "x.npz"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "model card's recommendation for sampler and guidance: dpmpp_2m, 10 steps, guidance 3" in out
    meta = json.loads(str(np.load(tmp_path / "x.npz")["metadata"]))
    assert (meta["sampler"], meta["steps"], meta["guidance"], meta["nfe"]) == ("dpmpp_2m", 10, 3.0, 20)  # guided: both halves, 2 per step
    assert main(["sample", str(model), "--n", "1", "--sampler", "ddim", "--steps", "3", "--guidance", "1", "--out",
                 str(tmp_path / "y.npz"), "--device", "cpu"]) == 0
    assert "recommendation" not in capsys.readouterr().out  # everything given: the card is not used


def test_a_model_without_a_card_samples_the_textbook_ddpm(model, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(model, old)
    config = json.loads((old / "config.json").read_text())
    del config["recommended"]
    (old / "config.json").write_text(json.dumps(config))
    assert load(old).recommended == {"sampler": "ddpm", "steps": None, "guidance": 1.0}


@pytest.mark.parametrize("card,field", [({"sampler": "plms", "steps": 10, "guidance": 3}, "sampler"),
                                        ({"sampler": "ddim", "steps": 0, "guidance": 3}, "steps"),
                                        ({"sampler": "ddim", "steps": 51, "guidance": 3}, "recommended.steps"),
                                        ({"sampler": "ddim", "steps": 10, "guidance": -1}, "guidance"),
                                        ({"sampler": "ddim", "steps": 10}, "guidance")])
def test_a_bad_card_is_refused_naming_the_field(model, tmp_path, card, field):
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    config = json.loads((bad / "config.json").read_text())
    config["recommended"] = card
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=field):
        load(bad)
