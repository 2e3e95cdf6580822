"""The guidance levers: the guidance interval and autoguidance, from the closures (analytic checks) through
Pipeline.sample, the model card, the sample command and eval/compare, on tiny models."""

import json

import numpy as np
import pytest
import torch

from conftest import seeded_generators, shapes
from tinydiffusion.cli.main import main
from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.core.guidance import autoguidance, autoguided_cfg, cfg, in_interval
from tinydiffusion.core.samplers import ddpm, dpmpp_2m
from tinydiffusion.core.schedule import Schedule
from tinydiffusion.errors import UsageError
from tinydiffusion.models import build_model, preset
from tinydiffusion.sampling.generate import SampleConfig
from tinydiffusion.sampling.pipeline import Pipeline, load
from tinydiffusion.sampling.plans import counting_evaluations
from tinydiffusion.store.checkpoint import export_model
from tinydiffusion.store.modelfile import check_config

T = 40


# --------------------------------------------------------------------------- analytic closures
def _affine(seed, calls=None):
    """A conditional 'network' in float64: 0.5·x + (context @ w)·(1 + t/10); ``calls`` records batch sizes."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def model(x_t, t, context):
        if calls is not None:
            calls.append(x_t.shape[0])
        shift = torch.zeros(x_t.shape[0], 4, dtype=x_t.dtype) if context is None else context @ w
        return 0.5 * x_t + shift.view(-1, 1, 2, 2) * (1 + t.view(-1, 1, 1, 1) / 10)
    return model


def _x(n=4, seed=0):
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _c(n=4):
    return torch.eye(3, dtype=torch.float64)[[i % 3 for i in range(n)]]


def test_autoguidance_is_the_formula_and_its_limits_are_exact():
    m, g, x, t, c = _affine(0), _affine(1), _x(), torch.tensor([3, 3, 7, 7]), _c()
    out_m, out_g = m(x, t, c), g(x, t, c)
    assert torch.allclose(autoguidance(m, g, 2.5)(x, t, c), out_g + 2.5 * (out_m - out_g), atol=1e-12)
    guide_calls = []
    assert torch.equal(autoguidance(m, _affine(1, guide_calls), 1.0)(x, t, c), out_m) and guide_calls == []
    assert torch.equal(autoguidance(m, g, 0.0)(x, t, c), out_g)
    out = autoguidance(m, g, 2.5)(x, t, None)  # an unconditional model is guided too (the null context)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out, g(x, t, None) + 2.5 * (m(x, t, None) - g(x, t, None)), atol=1e-12)


def test_autoguidance_with_the_model_as_its_guide_is_plain_sampling_bit_for_bit():
    s, m = Schedule.linear(T), _affine(0)
    x_T, c = _x(6, seed=3), _c(6)
    for sampler in (ddpm, dpmpp_2m):
        plain = sampler(m, s, x_T, c, steps=7, generator=seeded_generators(6))
        guided = sampler(autoguidance(m, m, 3.0), s, x_T, c, steps=7, generator=seeded_generators(6))
        assert torch.equal(guided, plain)  # out_m - out_g is exactly 0, so out_g + w·0 is out_m exactly


def test_autoguidance_composes_with_cfg_beside_it():
    m, g, x, t, c = _affine(0), _affine(1), _x(), torch.tensor([5] * 4), _c()
    assert torch.equal(cfg(autoguidance(m, m, 2.0), 3.0)(x, t, c), cfg(m, 3.0)(x, t, c))
    both = cfg(autoguidance(m, g, 2.0), 3.0)(x, t, c)
    u, k = (autoguidance(m, g, 2.0)(x, t, ctx) for ctx in (torch.zeros_like(c), c))
    assert torch.allclose(both, u + 3.0 * (k - u), atol=1e-12)


def test_the_guide_beside_the_unconditional_branch_is_cfg_over_autoguidance():
    m, g, x, c = _affine(0), _affine(1), _x(), _c()
    t = torch.tensor([5] * 4)
    both = autoguided_cfg(m, g, 3.0, 2.0)
    assert torch.equal(both(x, t, c), cfg(autoguidance(m, g, 2.0), 3.0)(x, t, c))
    assert torch.equal(autoguided_cfg(m, m, 3.0, 2.0)(x, t, c), cfg(m, 3.0)(x, t, c))  # the model as its own guide
    guide_calls = []
    assert torch.equal(autoguided_cfg(m, _affine(1, guide_calls), 3.0, 1.0)(x, t, c), cfg(m, 3.0)(x, t, c))
    assert guide_calls == []  # guide scale 1: the guide is never run
    assert both.evaluations(5) == 4 and autoguided_cfg(m, g, 1.0, 2.0).evaluations(5) == 2
    inside = autoguided_cfg(m, g, 3.0, 2.0, interval=(0.5, 1.0), T=T)
    assert inside.evaluations(T - 1) == 4 and inside.evaluations(3) == 1
    assert torch.equal(inside(x, torch.tensor([3] * 4), c), m(x, torch.tensor([3] * 4), c))  # outside: the model


def test_the_interval_is_a_share_of_the_diffusion_time():
    t = torch.arange(T)
    inside = in_interval(t, (0.2, 0.7), T)  # (t + 1) / T in (0.2, 0.7]
    assert inside.tolist() == [0.2 < (k + 1) / T <= 0.7 for k in range(T)]
    assert in_interval(t, (0.0, 1.0), T).all() and not in_interval(t, (0.5, 0.5), T).any()
    grid = Schedule.linear(500).timesteps(10)  # trailing: (t + 1) / T = 1.0, 0.9, …, 0.1 exactly
    assert [(k + 1) / 500 for k in grid] == [round(1 - i / 10, 1) for i in range(10)]
    assert in_interval(torch.tensor(grid), (0.2, 0.7), 500).sum() == 5


@pytest.mark.parametrize("guide", [False, True])
def test_an_interval_covering_everything_is_the_guidance_itself(guide):
    s, m, g = Schedule.linear(T), _affine(0), _affine(1)
    x_T, c = _x(6, seed=5), _c(6)

    def closure(interval):
        kw = {} if interval is None else {"interval": interval, "T": T}
        return autoguidance(m, g, 3.0, **kw) if guide else cfg(m, 3.0, **kw)

    ref = dpmpp_2m(closure(None), s, x_T, c, steps=8)
    for interval in ((0.0, 1.0), (0.5 / T, 1.0)):
        assert torch.equal(dpmpp_2m(closure(interval), s, x_T, c, steps=8), ref)


@pytest.mark.parametrize("guide", [False, True])
def test_an_empty_interval_is_scale_1_with_one_evaluation_per_step(guide):
    s, calls = Schedule.linear(T), []
    m, g = _affine(0, calls), _affine(1, calls)
    x_T, c = _x(6, seed=6), _c(6)
    plain = ddpm(m, s, x_T, c, steps=9, generator=seeded_generators(6))
    calls.clear()
    closure = autoguidance(m, g, 4.0, interval=(0.3, 0.3), T=T) if guide else cfg(m, 4.0, interval=(0.3, 0.3), T=T)
    assert torch.equal(ddpm(closure, s, x_T, c, steps=9, generator=seeded_generators(6)), plain)
    assert calls == [6] * 9 and all(closure.evaluations(k) == 1 for k in range(T))


def test_inside_the_interval_guided_outside_conditional_per_image():
    calls = []
    m, x, c = _affine(0, calls), _x(), _c()
    t = torch.tensor([35, 5, 35, 5])  # (t+1)/T = 0.9 (inside (0.5, 1]) and 0.15 (outside)
    out = cfg(m, 3.0, interval=(0.5, 1.0), T=T)(x, t, c)
    full, cond = cfg(m, 3.0)(x, t, c), m(x, t, c)
    assert torch.equal(out[[0, 2]], full[[0, 2]]) and torch.equal(out[[1, 3]], cond[[1, 3]])
    calls.clear()
    guided = cfg(m, 3.0, interval=(0.5, 1.0), T=T)
    guided(x, torch.full((4,), 5), c)
    guided(x, torch.full((4,), 35), c)
    assert calls == [4, 8] and (guided.evaluations(5), guided.evaluations(35)) == (1, 2)


def test_bad_levers_are_refused_by_name():
    m = _affine(0)
    for bad in ((0.7, 0.2), (0.1, 1.5), (-0.1, 0.5), (0.5,), "0.1,0.7", (float("nan"), 1.0), (True, 1)):
        with pytest.raises(UsageError, match="guidance_interval"):
            cfg(m, 2.0, interval=bad, T=T)
    with pytest.raises(UsageError, match="T="):
        cfg(m, 2.0, interval=(0.1, 0.9))
    m.prediction, g = "v", _affine(1)
    with pytest.raises(UsageError, match="predicts 'eps' and the model 'v'"):
        autoguidance(m, g, 2.0)
    with pytest.raises(UsageError, match="guidance="):
        autoguidance(m, m, -1.0)


# --------------------------------------------------------------------------- the library on tiny networks
def _config(**over):
    return preset("tiny", image_size=8, context_width=2, T=T, **over)


def _card(config, **recommended):
    return {"model": config.to_dict(), "schedule": Schedule.linear(T).to_dict(),
            "context": ContextSpec.classes(["a", "b"]).to_dict(),
            "recommended": {"sampler": "dpmpp_2m", "steps": 5, "guidance": 3.0, **recommended}}


def _pipe(seed, card=None, path=None):
    torch.manual_seed(seed)
    config = _config()
    net = build_model(config).eval()
    torch.nn.init.normal_(net.out.weight, std=0.05)
    return Pipeline(net, Schedule.linear(T), ContextSpec.classes(["a", "b"]), card or _card(config), "eps", path)


@pytest.fixture(scope="module")
def pair():
    return _pipe(0), _pipe(1)


def test_pipeline_autoguidance_counts_both_networks(pair):
    pipe, weak = pair
    with counting_evaluations(pipe.model, weak.model) as seen:
        guided = pipe.sample(["a", "b"], n=2, guide=weak)
    assert seen == [5 * 4 * 2, 5 * 4, 5 * 4]  # per step and image: one of the model, one of the guide
    assert guided.shape == (4, 3, 8, 8) and not torch.equal(guided, pipe.sample(["a", "b"], n=2, guidance=1.0))
    plan = pipe.plan(["a", "b"], n=2, guide=weak)
    assert plan.guide is weak.model and plan.guided and plan.evaluations([39, 31, 23, 15, 7]) == 10
    with counting_evaluations(pipe.model, weak.model) as seen:  # the null context: autoguidance still acts
        pipe.sample("none", n=2, guide=weak)
    assert seen[1:] == [10, 10] and pipe.plan("none", guide=weak).note is None


def test_pipeline_guide_scale_puts_the_guide_beside_cfg(pair):
    pipe, weak = pair
    with counting_evaluations(pipe.model, weak.model) as seen:
        both = pipe.sample(["a", "b"], n=2, guide=weak, guide_scale=2.0)
    assert seen == [5 * 4 * 4, 5 * 4 * 2, 5 * 4 * 2]  # per step and image: both networks on both halves
    plan = pipe.plan(["a", "b"], n=2, guide=weak, guide_scale=2.0)
    assert plan.evaluations([39, 31, 23, 15, 7]) == 20 and plan.levers["guide_scale"] == 2.0
    assert torch.equal(pipe.sample(["a", "b"], n=2, guide=pipe, guide_scale=2.0), pipe.sample(["a", "b"], n=2))
    assert not torch.equal(both, pipe.sample(["a", "b"], n=2)) and not torch.equal(both, pipe.sample(
        ["a", "b"], n=2, guide=weak))
    with counting_evaluations(pipe.model, weak.model) as seen:  # the null context: autoguidance alone, said
        pipe.sample("none", n=2, guide=weak, guide_scale=2.0)
    assert seen[1:] == [10, 10] and "skipped" in pipe.plan("none", guide=weak, guide_scale=2.0).note
    with pytest.raises(UsageError, match="guide_scale=2.*give guide"):
        pipe.sample(["a"], guide_scale=2.0)
    with pytest.raises(UsageError, match="guide_scale"):
        pipe.sample(["a"], guide=weak, guide_scale=-1)


def test_pipeline_with_itself_as_guide_is_unguided_sampling(pair):
    pipe, _ = pair
    assert torch.equal(pipe.sample(["a", "b"], n=2, guide=pipe), pipe.sample(["a", "b"], n=2, guidance=1.0))


def test_pipeline_interval_given_and_from_the_card(pair):
    pipe, _ = pair
    carded = _pipe(0, _card(_config(), guidance_interval=[0.5, 0.5]))
    with counting_evaluations(carded.model) as seen:
        images = carded.sample(["a", "b"], n=2)
    assert seen[0] == 5 * 4 and torch.equal(images, pipe.sample(["a", "b"], n=2, guidance=1.0))
    assert carded.recommended["guidance_interval"] == [0.5, 0.5]
    everywhere = carded.sample(["a", "b"], n=2, guidance_interval=(0, 1))  # a given interval wins
    assert torch.equal(everywhere, pipe.sample(["a", "b"], n=2))
    with counting_evaluations(pipe.model) as seen:  # grid (t+1)/T = 1, .8, .6, .4, .2: three inside (0.3, 0.9]
        pipe.sample(["a"], n=1, guidance_interval=(0.3, 0.9))
    assert seen[0] == 3 * 2 + 2 and pipe.plan(["a"], guidance_interval=(0.3, 0.9)).levers == {
        "guidance_interval": [0.3, 0.9], "guide": None, "guide_scale": None, "snap": 0.0,
        "snapped_to": None}


def test_edits_count_the_interval_honestly(pair):
    pipe, _ = pair
    from tinydiffusion.sampling.edit_plans import plan_img2img, run_edit

    x = torch.zeros(3, 8, 8)
    job = plan_img2img(pipe, x, "a", strength=0.8, n=2, guidance_interval=(0.3, 0.9))  # the last 4 of 5 steps
    with counting_evaluations(pipe.model) as seen:
        list(run_edit(pipe, job))
    assert job.settings["nfe"] == seen[0] // 2 == 3 * 2 + 1  # (t+1)/T = .8, .6, .4 guided, .2 not


def test_a_guide_that_does_not_fit_is_refused(pair, tmp_path):
    pipe, _ = pair
    other = _pipe(2)
    other.config = {**other.config, "schedule": Schedule.cosine(T).to_dict()}
    with pytest.raises(UsageError, match="guide=.*schedule"):
        pipe.sample(["a"], guide=other)
    names = _pipe(2)
    names.config = {**names.config, "context": ContextSpec.classes(["a", "c"]).to_dict()}
    with pytest.raises(UsageError, match="guide=.*context"):
        pipe.sample(["a"], guide=names)
    config = preset("tiny", image_size=16, context_width=2, T=T)
    export_model(tmp_path / "big", build_model(config), {**_card(config)})
    with pytest.raises(UsageError, match="guide=.*image size"):
        pipe.sample(["a"], guide=str(tmp_path / "big"))
    with pytest.raises(UsageError, match="guide"):
        pipe.sample(["a"], guide="")


def test_students_refuse_both_levers():
    config = _config()
    card = _card(config, sampler="ddim", steps=2)
    card["distilled"] = {"method": "progressive", "sampler": "ddim", "steps": [2], "guidance": 3.0}
    student = _pipe(0, card)
    with pytest.raises(UsageError, match=r"guidance_interval=\[0.2, 0.8\] is not one this model supports.*folded"):
        student.sample(["a"], guidance_interval=(0.2, 0.8))
    with pytest.raises(UsageError, match="guide='sprites' is not one this model supports"):
        student.sample(["a"], guide="sprites")
    student.sample(["a"], guidance_interval=(0, 1), guide="none")  # 'everywhere' and 'none' are the student's own


# --------------------------------------------------------------------------- the card, the files, the command
def test_the_card_schema_takes_the_levers():
    card = _card(_config(), guidance_interval=[0.1, 0.75], guide="../early")
    assert check_config(json.loads(json.dumps(card)), "x")["recommended"]["guidance_interval"] == [0.1, 0.75]
    for bad in ([0.8, 0.1], [0.1], "0.1,0.8", [0, 2]):
        with pytest.raises(UsageError, match="recommended.guidance_interval"):
            check_config(_card(_config(), guidance_interval=bad), "x")
    with pytest.raises(UsageError, match="recommended.guide"):
        check_config(_card(_config(), guide=3), "x")


@pytest.fixture
def carded_folder(tmp_path):
    """A model whose card names a guide in its own folder (``m/guide``), autoguidance at 2 on (0.3, 0.9]."""
    config = _config()
    torch.manual_seed(0)
    export_model(tmp_path / "m", build_model(config), _card(config, guidance=2.0, guidance_interval=[0.3, 0.9],
                                                            guide="guide"))
    torch.manual_seed(1)
    export_model(tmp_path / "m" / "guide", build_model(config), _card(config))
    return tmp_path / "m"


def test_a_card_guide_is_found_beside_the_model_and_loaded_once(carded_folder):
    pipe = load(carded_folder)
    plan = pipe.plan(["a"], n=2)
    assert plan.guide is not None and plan.levers["guide"] == str(carded_folder / "guide")
    assert pipe.plan(["a"]).guide is plan.guide  # cached on the pipeline
    assert plan.evaluations(pipe.schedule.timesteps(5)) == 3 * 2 + 2
    assert pipe.plan(["a"], guide="none").guide is None and pipe.plan(["a"], guidance=1.0).guide is None
    (carded_folder / "guide" / "config.json").unlink()
    with pytest.raises(UsageError, match="the model card's guide 'guide'"):
        load(carded_folder).plan(["a"])


def test_the_sample_command_takes_and_reports_the_levers(carded_folder, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(carded_folder), "--context", "a", "--n", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "autoguidance by" in text and "(the model card's)" in text
    assert "8 network evaluations each (3 of them the guide's)" in text
    meta = json.loads(str(np.load(out)["metadata"]))
    assert meta["guide"] == str(carded_folder / "guide") and meta["guidance_interval"] == [0.3, 0.9]
    assert main(["sample", str(carded_folder), "--context", "a", "--n", "2", "--guide", "none",
                 "--guidance-interval", "0.5,0.5", "--out", str(out)]) == 0
    assert "5 network evaluations each:" in capsys.readouterr().out
    assert main(["sample", str(carded_folder), "--guidance-interval", "0.9,0.1", "--out", str(out)]) == 2
    assert "guidance_interval" in capsys.readouterr().err
    with pytest.raises(UsageError, match="guidance_interval"):
        SampleConfig("m", guidance_interval=(0.1,))
    with pytest.raises(UsageError, match="guide"):
        SampleConfig("m", guide=" ")


def test_guide_scale_from_the_command_line_and_the_card(carded_folder, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(carded_folder), "--context", "a", "--n", "2", "--guide-scale", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "at 2, beside classifier-free guidance" in text  # (t+1)/T in (0.3, 0.9]: 3 of 5 steps guided
    assert "14 network evaluations each (6 of them the guide's)" in text
    assert json.loads(str(np.load(out)["metadata"]))["guide_scale"] == 2.0
    assert main(["sample", str(carded_folder), "--guide", "none", "--guide-scale", "2", "--out", str(out)]) == 2
    assert "guide_scale=2" in capsys.readouterr().err
    card = json.loads((carded_folder / "config.json").read_text())
    card["recommended"]["guide_scale"] = 1.5
    (carded_folder / "config.json").write_text(json.dumps(card))
    pipe = load(carded_folder)
    assert pipe.recommended["guide_scale"] == 1.5 and pipe.plan(["a"]).levers["guide_scale"] == 1.5
    assert pipe.plan(["a"], guide="none").levers["guide_scale"] is None  # no guide: no scale
    with pytest.raises(UsageError, match="recommended.guide_scale"):
        check_config({**card, "recommended": {**card["recommended"], "guide_scale": -1}}, "x")
    with pytest.raises(UsageError, match="guide_scale"):
        SampleConfig("m", guide_scale=float("nan"))


def test_eval_and_compare_take_the_levers_from_the_card(carded_folder, tmp_path):
    from tinydiffusion.quality.compare import CompareConfig, compare
    from tinydiffusion.quality.evaluate import EvalConfig, evaluate
    from tinydiffusion.quality.featurenet import EvaluatorConfig, train_evaluator

    images, labels, _ = shapes(n_per_class=8)
    np.savez_compressed(tmp_path / "ab.npz", images=images[labels < 2], labels=labels[labels < 2],
                        class_names=np.array(["a", "b"]))
    train_evaluator(EvaluatorConfig(data=str(tmp_path / "ab.npz"), out=str(tmp_path / "ev"), size=8, low_size=4,
                                         width=8, epochs=1, members=1, batch_size=16, progress=False, device="cpu"))
    common = dict(evaluator=str(tmp_path / "ev"), data=str(tmp_path / "ab.npz"), per_class=3, device="cpu")
    report = evaluate(EvalConfig(str(carded_folder), out=str(tmp_path / "e.json"), **common))
    assert report["settings"]["guide"] == str(carded_folder / "guide")
    assert report["settings"]["guidance_interval"] == [0.3, 0.9] and report["settings"]["guidance"] == 2.0
    rows = compare(CompareConfig(str(carded_folder), settings=("dpmpp_2m:5",), guide="none", out=str(tmp_path / "c"),
                                 progress=False, **common))
    assert rows[0]["nfe"] == 3 * 2 + 2 and rows[0]["guide"] is None and rows[0]["guidance_interval"] == [0.3, 0.9]
