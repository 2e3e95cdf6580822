"""The studio page in a real browser (the fixtures and helpers of ``test_studio_browser.py``: Playwright driving the
system's Chromium against the real server): the guidance levers in the Sampling card, and the Teach tab
fine-tuning a tiny model on pictures chosen on the page, followed to its report and into the Model list."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_studio_browser as base
from test_studio_browser import _select_tiny, until

# the fixtures of the browser tests (the Chromium, the served studio, a page on it) and their skip marks; the
# studio here serves this module's runs_dir
browser, studio, server, page, pytestmark = base.browser, base.studio, base.server, base.page, base.pytestmark


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """A ``--runs`` folder with a finished tiny run (``runs/tiny``), a distilled student of it (``runs/tiny-student``)
    and a copy of its model (``runs/guide``: an ordinary model that fits it as a guide)."""
    runs = base.trained_runs(tmp_path_factory.mktemp("studio-teach"))
    shutil.copytree(runs / "tiny" / "model", runs / "guide" / "model")
    return runs


def _diagonals(folder: Path, n: int) -> list[str]:
    """``n`` PNG files of a toy class the shapes never show (a coloured diagonal), their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        im = np.zeros((16, 16, 3), np.uint8)
        im[np.arange(16), np.arange(16)] = rng.integers(120, 256, 3)
        Image.fromarray(im).save(folder / f"diag{i:02d}.png")
        paths.append(str(folder / f"diag{i:02d}.png"))
    return paths


def test_guidance_levers_steer_generate_and_are_refused_by_name(page):
    from playwright.sync_api import expect

    name = _select_tiny(page)
    expect(page.get_by_test_id("snap")).to_be_disabled()  # a class model: snapping is for text prompts
    guides = page.get_by_test_id("guide").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert guides[:2] == ["", "none"] and any(g.endswith("/guide") for g in guides), guides
    assert not any(g.endswith("/tiny-student") or g == name for g in guides)  # no student, not itself
    page.get_by_test_id("sampler").select_option("ddim")
    page.get_by_test_id("steps").fill("4")
    page.get_by_test_id("n").fill("2")
    # one end only: the page says so and marks the field, no request
    page.get_by_test_id("guidance-lo").fill("0.5")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_contain_text("give both ends")
    expect(page.get_by_test_id("guidance-hi")).to_have_attribute("aria-invalid", "true")
    # the server's refusal names the parameter and the value
    page.get_by_test_id("guidance-lo").fill("0.8")
    page.get_by_test_id("guidance-hi").fill("0.2")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_contain_text("guidance_interval=[0.8, 0.2]")
    expect(page.get_by_test_id("guidance-lo")).to_have_attribute("aria-invalid", "true")
    # a fitting guide and the upper half of the time: fewer network evaluations than 2 per step, recorded
    page.get_by_test_id("guidance-lo").fill("0.5")
    page.get_by_test_id("guidance-hi").fill("1")
    guide = next(g for g in guides if g.endswith("/guide"))
    page.get_by_test_id("guide").select_option(guide)
    page.get_by_test_id("generate").click()
    page.wait_for_selector("#live[data-state=done]", state="attached")
    expect(page.get_by_test_id("error")).to_be_hidden()
    nfe = int(page.get_by_test_id("stat-nfe").inner_text())
    assert 4 < nfe < 8, nfe
    npz = np.load(io.BytesIO(page.request.get(page.get_by_test_id("dl-npz").get_attribute("href")).body()))
    page.screenshot(path=str(page.shots / "levers.png"), full_page=True)
    meta = json.loads(str(npz["metadata"]))
    assert meta["guide"] == guide and meta["guidance_interval"] == [0.5, 1.0]
    # the guide beside the unconditional branch: 4 evaluations per guided step (nfe - 4 of the 4 steps) instead of 2
    page.get_by_test_id("guide-scale").fill("2")
    page.get_by_test_id("generate").click()
    guided = nfe - 4
    expect(page.get_by_test_id("stat-nfe")).to_have_text(str(4 * guided + (4 - guided)), timeout=30_000)
    expect(page.get_by_test_id("error")).to_be_hidden()
    page.get_by_test_id("guide").select_option("none")  # a scale without a guide: the server names guide_scale
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_contain_text("guide_scale=2")
    expect(page.get_by_test_id("guide-scale")).to_have_attribute("aria-invalid", "true")
    page.get_by_test_id("guide-scale").fill("")
    # a student: the levers are off, like its guidance
    student = next(v for v in page.get_by_test_id("model-select").locator("option").evaluate_all(
        "os => os.map(o => o.value)") if v.endswith("/tiny-student"))
    page.get_by_test_id("model-select").select_option(student)
    for field in ("guidance-lo", "guidance-hi", "guide", "guide-scale", "guidance"):
        expect(page.get_by_test_id(field)).to_be_disabled()


def test_teach_fine_tunes_a_new_class_and_lists_its_model(page, tmp_path):
    from playwright.sync_api import expect

    _select_tiny(page)
    page.get_by_test_id("tab-teach").click()
    expect(page.get_by_test_id("panel-teach")).to_be_visible()
    bases = page.get_by_test_id("teach-base").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert any(b.endswith("/tiny") for b in bases) and not any(b.endswith("/tiny-student") for b in bases), bases
    page.get_by_test_id("teach-base").select_option(next(b for b in bases if b.endswith("/tiny")))
    page.get_by_test_id("teach-class").fill("diag")
    page.get_by_test_id("teach-minutes").fill("0.1")
    page.get_by_test_id("teach-report-samples").fill("2")
    # too few pictures (and a file that is no picture): refused by name, nothing started
    (tmp_path / "notes.txt").write_text("not a picture")
    page.set_input_files("#teach-file", _diagonals(tmp_path / "few", 3) + [str(tmp_path / "notes.txt")])
    expect(page.get_by_test_id("error")).to_contain_text("1 file skipped")
    expect(page.get_by_test_id("teach-count")).to_contain_text("3 pictures")
    page.get_by_test_id("teach-run").click()
    expect(page.get_by_test_id("error")).to_contain_text("images='3 pictures'")
    expect(page.get_by_test_id("teach-drop")).to_have_attribute("aria-invalid", "true")
    # a class the base has: the library's message
    page.get_by_test_id("teach-clear").click()
    page.set_input_files("#teach-file", _diagonals(tmp_path / "diag", 10))
    expect(page.get_by_test_id("teach-count")).to_have_text("10 pictures")
    assert page.get_by_test_id("teach-thumbs").locator("img").count() == 10
    page.get_by_test_id("teach-class").fill("hbar")
    page.get_by_test_id("teach-run").click()
    expect(page.get_by_test_id("error")).to_contain_text("class='hbar'")
    expect(page.get_by_test_id("teach-class")).to_have_attribute("aria-invalid", "true")
    # the fine-tune: followed while it trains, then its report and its model
    page.get_by_test_id("teach-class").fill("diag")
    page.get_by_test_id("teach-run").click()
    expect(page.get_by_test_id("teach-state")).to_have_text("done", timeout=240_000)
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("teach-info")).to_contain_text("class “diag”")
    until(page, "() => Number(document.getElementById('teach-chart').dataset.points) > 0")
    expect(page.get_by_test_id("teach-report")).to_be_visible()
    expect(page.get_by_test_id("teach-summary")).to_contain_text("recognised")
    until(page, "() => document.getElementById('teach-report-img').naturalWidth > 0")
    page.screenshot(path=str(page.shots / "teach-done.png"), full_page=True)
    run = page.get_by_test_id("teach-report").get_attribute("data-model")
    assert "/teach-diag-" in run
    until(page, "(run) => [...document.querySelectorAll('#model-select option')].some(o => o.value === run)", run)
    expect(page.get_by_test_id("announce")).to_contain_text(run)  # "… in the Model list"
    page.get_by_test_id("teach-use").click()
    expect(page.get_by_test_id("panel-generate")).to_be_visible()
    expect(page.get_by_test_id("model-card")).to_contain_text("diag")
    expect(page.get_by_test_id("slider-diag")).to_be_visible()
    page.get_by_test_id("tab-teach").click()
    page.get_by_test_id("teach-monitor").click()
    expect(page.get_by_test_id("panel-training")).to_be_visible()
    until(page, "(run) => document.getElementById('run-select').value === run", run)
    expect(page.get_by_test_id("run-state")).to_have_text("finished")
