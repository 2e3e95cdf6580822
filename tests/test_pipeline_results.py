"""What the library returns: images clipped to [-1, 1] unless raw, and no doubled cost for guidance that cannot act."""

import pytest
import torch

from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.models import build_model, preset
from tinydiffusion.sampling.pipeline import Pipeline
from tinydiffusion.sampling.plans import counting_evaluations


class Overshoot(torch.nn.Module):
    """Predicts the clean image 3.0 everywhere: every sampler's last step lands exactly on it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x_t, t, context):
        return 3.0 * self.w * torch.ones_like(x_t)


def _card(config):
    return {"model": config.to_dict(), "recommended": {"sampler": "dpmpp_2m", "steps": 5, "guidance": 3.0}}


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    config = preset("tiny", image_size=8, context_width=2, T=40)
    net = build_model(config).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)
    return Pipeline(net, Schedule.linear(40).rescale_zero_terminal_snr(), ContextSpec.classes(["a", "b"]),
                    _card(config), "v")


def test_images_are_clipped_to_the_data_range_unless_raw():
    config = preset("tiny", image_size=8, context_width=0, T=20)
    pipe = Pipeline(Overshoot(), Schedule.linear(20), ContextSpec(), _card(config), "x0")
    raw = pipe.sample(n=2, raw=True)
    assert torch.allclose(raw, torch.full_like(raw, 3.0))
    images = pipe.sample(n=2)
    assert images.max() == 1.0 and torch.equal(images, raw.clamp(-1, 1))
    x = torch.zeros(3, 8, 8)
    assert pipe.img2img(x, strength=0.5).max() == 1.0 and pipe.img2img(x, strength=0.5, raw=True).max() > 1.0


@pytest.mark.parametrize("context", [None, "none", ["none", "null"]])
def test_guidance_on_the_null_context_runs_one_evaluation_per_step_and_equals_unguided(pipe, context):
    with counting_evaluations(pipe.model) as guided_count:
        guided = pipe.sample(context, n=3, guidance=3.0)
    rows = 1 if context in (None, "none") else 2
    assert guided_count[0] == 5 * 3 * rows  # one network evaluation per step and image, not two
    assert torch.equal(guided, pipe.sample(context, n=3, guidance=1.0))  # bitwise the unguided samples
    plan = pipe.plan(context, n=3, guidance=3.0)
    assert not plan.guided and "guidance 3 skipped" in plan.note


def test_guidance_still_acts_when_a_row_has_a_context(pipe):
    with counting_evaluations(pipe.model) as count:
        pipe.sample(["none", "a"], n=2, guidance=3.0)
    assert count[0] == 5 * 2 * 2 * 2 and pipe.plan(["none", "a"], guidance=3.0).note is None


def test_the_cli_says_it_once_and_counts_what_ran(tmp_path, capsys):
    from tinydiffusion.cli.main import main
    from tinydiffusion.store.checkpoint import export_model

    torch.manual_seed(0)
    config = preset("tiny", image_size=8, context_width=2, T=40)
    export_model(tmp_path / "m", build_model(config), {**_card(config), "schedule": Schedule.linear(40).to_dict(),
                                                        "context": ContextSpec.classes(["a", "b"]).to_dict()})
    assert main(["sample", str(tmp_path / "m"), "--context", "none", "--n", "2", "--out", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("guidance 3 skipped") == 1 and "5 network evaluations each" in out
