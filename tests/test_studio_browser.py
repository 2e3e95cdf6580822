"""The studio page in a real browser: Playwright for Python drives the system's Chromium against the real
server (uvicorn on a free port, in a thread) serving a tiny model trained here.

Skipped, with the reason, when ``fastapi``, ``uvicorn`` or ``playwright`` is not installed or no Chromium
executable is found (``playwright install`` cannot download browsers here: ``make test`` installs Debian's
``chromium``; ``TINYDIFFUSION_CHROMIUM=/path/to/chrome`` points at another one). Each test saves a
screenshot of the page under its pytest temporary directory.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest


def _missing_modules() -> list[str]:
    missing = []
    for name in ("fastapi", "uvicorn", "playwright.sync_api"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install counts as missing too
            missing.append(name.split(".")[0])
    return missing


def _chromium() -> str | None:
    for name in (os.environ.get("TINYDIFFUSION_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if not name:
            continue
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


MISSING = _missing_modules()
CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"the browser tests need {', '.join(MISSING)} "
                                             f"(pip install -e '.[serve,test]')"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium executable found (apt-get install chromium, "
                                                "or set TINYDIFFUSION_CHROMIUM)"),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 12  # DDIM steps of the generate test: one streamed frame each
TRAIN_STEPS = 4  # of the tiny run, one metrics.csv row each
TIMEOUT_MS = 30_000


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """A ``--runs`` folder holding one finished tiny run (``runs/tiny``: metrics.csv, samples/, model/) and a
    distilled student of its model (``runs/tiny-student``, listed after it: the page opens on the teacher)."""
    from conftest import shapes
    from tinydiffusion import TrainConfig
    from tinydiffusion.training.train import train

    root = tmp_path_factory.mktemp("studio")
    images, labels, names = shapes()
    data = root / "shapes.npz"
    np.savez_compressed(data, images=images, labels=labels, class_names=np.array(names))
    runs = root / "runs"
    train(TrainConfig(data=str(data), out=str(runs / "tiny"), model="tiny", image_size=8, T=50, batch_size=8,
                      steps=TRAIN_STEPS, log_every=1, progress=False, device="cpu"))
    from studio_helpers import make_student  # a consistency student of it (1, 2 or 4 steps): runs/tiny-student

    make_student(runs / "tiny" / "model", runs / "tiny-student", "consistency", steps=2, teacher_steps=4)
    return runs


@pytest.fixture(scope="module")
def server(runs_dir) -> str:
    """The real studio app on uvicorn, on a free port, serving only the models under ``runs_dir``."""
    import uvicorn
    from tinydiffusion.studio.web.app import create_app

    app = create_app(runs=[str(runs_dir)], device="cpu", models={})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the studio server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server, tmp_path):
    """A fresh page on the studio at a laptop's size; its screenshot is saved as ``tmp_path/studio.png``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True, base_url=server)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server + "/")
    try:
        yield pg
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        pg.screenshot(path=str(tmp_path / "studio.png"))
        context.close()


def _select_tiny(page, run: str = "tiny") -> str:
    """Pick the model of the run ``run`` (listed as ``RUNFOLDER/run``) and wait for its card."""
    from playwright.sync_api import expect

    select = page.get_by_test_id("model-select")
    page.wait_for_function("document.querySelectorAll('#model-select option').length > 0")
    name = next(v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)")
                if v.endswith(f"/{run}"))
    select.select_option(name)
    expect(page.get_by_test_id("model-card")).to_contain_text("square")
    return name


# ---------------------------------------------------------------------------------------------- tests
def test_generate_streams_frames_then_final_grid_and_downloads(page):
    from playwright.sync_api import expect
    from PIL import Image

    _select_tiny(page)
    # a class slider composes the CLI's mixture string
    page.get_by_test_id("slider-hbar").fill("0.6")
    expect(page.get_by_test_id("context-string")).to_have_text("square=1,hbar=0.6")
    page.get_by_test_id("sampler").select_option("ddim")
    page.get_by_test_id("steps").fill(str(STEPS))
    page.get_by_test_id("n").fill("4")
    # record every x0 frame put on the page, and whether the final grid was showing at that moment
    page.evaluate("""() => {
        window.__frames = [];
        const img = document.getElementById('live-x0');
        new MutationObserver(() => window.__frames.push({
            src: img.getAttribute('src'), final: !document.getElementById('result').hidden,
        })).observe(img, {attributes: true, attributeFilter: ['src']});
    }""")
    page.get_by_test_id("generate").click()
    page.wait_for_selector("#live[data-state=done]", state="attached")

    frames = page.evaluate("window.__frames")
    before_final = [f["src"] for f in frames if not f["final"]]
    assert len(set(before_final)) >= 3, f"only {len(before_final)} frames were shown before the final image"
    assert int(page.get_by_test_id("live").get_attribute("data-frames")) >= 3
    expect(page.get_by_test_id("stat-step")).to_have_text(f"{STEPS}/{STEPS}")
    final = page.get_by_test_id("final-grid")
    expect(final).to_be_visible()
    assert page.evaluate("document.getElementById('final-grid').naturalWidth") > 0
    expect(page.get_by_test_id("result")).to_contain_text("network evals")

    # the PNG download is a real PNG of one row of 4 images
    with page.expect_download() as info:
        page.get_by_test_id("dl-png").click()
    data = Path(info.value.path()).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    grid = Image.open(io.BytesIO(data))
    assert grid.width > grid.height >= 8
    # the other downloads answer with their formats
    for test_id, magic in (("dl-gif", b"GIF8"), ("dl-npz", b"PK")):
        href = page.get_by_test_id(test_id).get_attribute("href")
        response = page.request.get(href)
        assert response.status == 200 and response.body()[:len(magic)] == magic, (test_id, response.status)


@pytest.mark.parametrize("steps", ["0", "9999"])
def test_bad_value_shows_the_servers_error(page, steps):
    from playwright.sync_api import expect

    _select_tiny(page)
    page.get_by_test_id("steps").fill(steps)
    page.get_by_test_id("generate").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"steps={steps}")  # the server's message names the parameter and the value
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "error")
    assert page.get_by_test_id("live").get_attribute("data-frames") == "0"
    expect(page.get_by_test_id("generate")).to_be_enabled()


def test_compare_shows_settings_side_by_side_and_json_errors(page):
    from playwright.sync_api import expect

    _select_tiny(page)
    page.get_by_test_id("n").fill("3")
    page.get_by_test_id("tab-compare").click()
    samplers, steps = page.get_by_test_id("compare-sampler"), page.get_by_test_id("compare-steps")
    expect(samplers).to_have_count(2)
    samplers.nth(0).select_option("ddim")
    steps.nth(0).fill("5")
    samplers.nth(1).select_option("dpmpp_2m")
    steps.nth(1).fill("4")
    page.get_by_test_id("compare-run").click()
    items = page.get_by_test_id("compare-item")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("10 network evals")  # 5 guided steps (the card's guidance 3), 2 each
    expect(items.nth(1)).to_contain_text("DPM++ 2M")
    assert page.evaluate("[...document.querySelectorAll('#compare-results img')].every(i => i.naturalWidth > 0)")

    # a 4xx JSON answer ({"error": ...}) is shown on the page
    steps.nth(1).fill("9999")
    page.get_by_test_id("compare-run").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error")).to_contain_text("9999")


def test_training_monitor_draws_the_runs_curves(page):
    from playwright.sync_api import expect

    page.get_by_test_id("tab-training").click()
    page.wait_for_function("[...document.querySelectorAll('#run-select option')].some(o => o.value.endsWith('/tiny'))")
    run = page.get_by_test_id("run-select")
    run.select_option(next(v for v in run.locator("option").evaluate_all("os => os.map(o => o.value)")
                           if v.endswith("/tiny")))
    expect(page.get_by_test_id("run-info")).to_contain_text(f"{TRAIN_STEPS} steps")
    page.wait_for_function("Number(document.getElementById('chart-loss').dataset.points) >= 2")
    # the curve is drawn: the canvas holds pixels of the line's colour
    coloured = page.evaluate("""() => {
        const c = document.getElementById('chart-loss');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 200 && d[i] < 160) n++;
        return n;
    }""")
    assert coloured > 50, f"the loss chart has only {coloured} pixels of the curve's colour"
    assert int(page.get_by_test_id("chart-ips").get_attribute("data-points")) >= 2
    latest = page.get_by_test_id("run-latest")
    expect(latest).to_be_visible()
    assert page.evaluate("document.getElementById('run-latest').naturalWidth") > 0


def test_edit_inpaints_a_painted_sample_with_live_frames(page, tmp_path):
    from playwright.sync_api import expect

    _select_tiny(page)
    page.get_by_test_id("sampler").select_option("ddim")
    page.get_by_test_id("steps").fill("6")
    page.get_by_test_id("n").fill("2")
    page.get_by_test_id("generate").click()
    page.wait_for_selector("#live[data-state=done]", state="attached")
    # "use this sample": a click on the first image of the result opens it in the Edit tab
    box = page.get_by_test_id("final-grid").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    expect(page.get_by_test_id("panel-edit")).to_be_visible()
    canvas = page.get_by_test_id("edit-canvas")
    expect(canvas).to_have_attribute("data-input", "1")
    # paint a stroke across the top half: those pixels are generated, the rest kept
    c = canvas.bounding_box()
    page.mouse.move(c["x"] + c["width"] * 0.1, c["y"] + c["height"] * 0.25)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(c["x"] + c["width"] * (0.1 + 0.1 * k), c["y"] + c["height"] * 0.25, steps=2)
    page.mouse.up()
    painted = int(canvas.get_attribute("data-painted"))
    assert 0 < painted < 64, painted
    expect(page.get_by_test_id("edit-mask-info")).to_contain_text("inpainting")
    page.get_by_test_id("slider-vbar").fill("1")  # the target context comes from the left
    page.get_by_test_id("edit-run").click()
    page.wait_for_selector("#edit-live[data-state=done]", state="attached")
    assert int(page.get_by_test_id("edit-live").get_attribute("data-frames")) >= 2
    expect(page.get_by_test_id("edit-grid")).to_be_visible()
    assert page.evaluate("document.getElementById('edit-grid').naturalWidth") > 0
    expect(page.get_by_test_id("edit-info")).to_contain_text("inpainting")
    response = page.request.get(page.get_by_test_id("edit-dl-png").get_attribute("href"))
    assert response.status == 200 and response.body()[:8] == PNG_SIGNATURE
    page.screenshot(path=str(tmp_path / "edit.png"), full_page=True)


def test_a_student_regenerates_as_a_context_slider_moves(page, tmp_path):
    """The instant preview: with a distilled student, moving a context slider samples again by itself (no
    Generate), debounced, one request at a time, a stale answer never replacing a newer one."""
    from playwright.sync_api import expect

    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/sample" in r.url or "/api/stream" in r.url else None)
    _select_tiny(page, "tiny-student")
    # the controls offer only what the student was distilled for
    expect(page.get_by_test_id("distilled-note")).to_contain_text("distilled: 1, 2 or 4 steps, guidance 3 inside")
    expect(page.get_by_test_id("model-card")).to_contain_text("consistency distillation")
    sampler = page.get_by_test_id("sampler")
    assert sampler.locator("option").evaluate_all("os => os.map(o => o.value)") == ["consistency"]
    expect(sampler).to_be_disabled()
    choice = page.get_by_test_id("steps-choice")
    expect(choice).to_be_visible()
    expect(page.get_by_test_id("steps")).to_be_hidden()
    assert choice.locator("option").evaluate_all("os => os.map(o => o.value)") == ["1", "2", "4"]
    expect(choice).to_have_value("2")
    expect(page.get_by_test_id("guidance")).to_be_disabled()
    expect(page.get_by_test_id("guidance")).to_have_value("3")
    expect(page.get_by_test_id("guidance-rescale")).to_be_disabled()

    # a first picture comes by itself; moving a slider brings a new one, Generate untouched
    grid = page.get_by_test_id("final-grid")
    page.wait_for_function("document.getElementById('final-grid').dataset.job")
    first_src, first_job = grid.get_attribute("src"), grid.get_attribute("data-job")
    page.get_by_test_id("slider-hbar").fill("0.6")
    page.wait_for_function("j => document.getElementById('final-grid').dataset.job !== j", arg=first_job)
    expect(grid).to_have_attribute("data-rows", "square=1,hbar=0.6")
    assert grid.get_attribute("src") != first_src and grid.get_attribute("src").startswith("data:image/png")
    assert page.evaluate("document.getElementById('final-grid').naturalWidth") > 0
    expect(page.get_by_test_id("result")).to_contain_text("instant preview")
    assert not [u for u in sent if "/api/stream" in u], "Generate was not pressed: no stream expected"
    expect(page.get_by_test_id("generate")).to_be_enabled()

    # a burst of changes within the pause: one request, for the last of them
    page.wait_for_timeout(400)
    before = len(sent)
    page.evaluate("""() => {
        const s = document.getElementById('slider-vbar');
        for (const v of ['0.2', '0.4', '0.6', '0.8', '1']) { s.value = v; s.dispatchEvent(new Event('input', {bubbles: true})); }
    }""")
    expect(grid).to_have_attribute("data-rows", "square=1,hbar=0.6,vbar=1")
    page.wait_for_timeout(600)
    assert len(sent) - before == 1, sent[before:]

    # a stale answer (the first of two, made to arrive late) never replaces the newer one
    page.evaluate("""() => {
        const fetch0 = window.fetch;
        let first = true;
        window.fetch = (url, options = {}) => {
            const { signal, ...rest } = options;  // not abortable: the old answer really arrives, late
            const answer = fetch0(url, rest);
            if (!String(url).includes('/api/sample') || !first) return answer;
            first = false;
            return answer.then((r) => new Promise((ok) => setTimeout(() => ok(r), 1000)));
        };
    }""")
    with page.expect_request(lambda r: "/api/sample" in r.url):
        page.get_by_test_id("slider-square").fill("0.5")
    page.get_by_test_id("slider-hbar").fill("0")
    expect(grid).to_have_attribute("data-rows", "square=0.5,vbar=1")
    page.wait_for_timeout(1500)  # the late answer (square=0.5,hbar=0.6,vbar=1) has come and gone
    expect(grid).to_have_attribute("data-rows", "square=0.5,vbar=1")
    expect(page.get_by_test_id("error")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "instant.png"), full_page=True)

    # on another tab the sliders sample nothing; back on Generate, the change is shown
    page.get_by_test_id("tab-compare").click()
    assert page.get_by_test_id("compare-sampler").nth(0).locator("option").evaluate_all(
        "os => os.map(o => o.value)") == ["consistency"]
    before = len(sent)
    page.get_by_test_id("slider-hbar").fill("0.3")
    page.wait_for_timeout(600)
    assert len(sent) == before, sent[before:]
    page.get_by_test_id("tab-generate").click()
    expect(grid).to_have_attribute("data-rows", "square=0.5,hbar=0.3,vbar=1")

    # Generate still streams the student's steps
    page.get_by_test_id("generate").click()
    page.wait_for_selector("#live[data-state=done]", state="attached")
    expect(page.get_by_test_id("stat-step")).to_have_text("2/2")

    # a teacher keeps the Generate button: every sampler, and no sampling until it is pressed
    _select_tiny(page)
    expect(page.get_by_test_id("distilled-note")).to_be_hidden()
    assert "consistency" in sampler.locator("option").evaluate_all("os => os.map(o => o.value)")
    expect(sampler).to_be_enabled()
    expect(page.get_by_test_id("guidance")).to_be_enabled()
    expect(page.get_by_test_id("steps")).to_be_visible()
    before = len(sent)
    page.get_by_test_id("slider-vbar").fill("0.5")
    page.wait_for_timeout(600)
    assert len(sent) == before, sent[before:]
    expect(page.get_by_test_id("final-grid")).not_to_have_attribute("src", re.compile("."))
