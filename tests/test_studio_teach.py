"""The studio's Teach (``POST /api/teach``): a fine-tune of a listed model on pictures sent as data URLs, written to
a fresh folder under ``--runs`` and run in the background, one at a time (409 while one runs); every bad value
refused as 422 naming it (the library's messages: a student base, a class the base has, a text model without a
prompt) with nothing left behind; the run listed and monitored like any, its model listed with the new class.
Contract: ``docs/studio_api.md``."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

import studio_helpers
from studio_helpers import checked_client, make_student
from tinydiffusion.vocab import FINETUNE_MINUTES

root = studio_helpers.root  # the fixture: a tiny model trained under root/runs (its data: root/shapes.npz)

JSON = {"Accept": "application/json"}


def diagonals(n: int = 8, size: int = 16, seed: int = 0) -> list[str]:
    """``n`` PNG data URLs of a toy class the shapes never show: a coloured diagonal on black."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = np.zeros((8, 8, 3), np.uint8)
        im[np.arange(8), np.arange(8)] = rng.integers(120, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(im).resize((size, size), Image.NEAREST).save(buffer, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


@pytest.fixture(scope="module")
def client(root):
    """The studio over ``root/runs`` (``runs/tiny`` and a student of it) with ``tiny`` and a tiny text model."""
    from tinydiffusion.studio.web.app import create_app
    from tinydiffusion.training.train import TrainConfig, train

    make_student(root / "runs" / "tiny" / "model", root / "runs" / "student", "progressive", steps=2, teacher_steps=4)
    data = np.load(root / "shapes.npz")
    names = [str(n) for n in data["class_names"]]
    captions = [f"a {names[k]}" for k in data["labels"]]
    np.savez_compressed(root / "captioned.npz", **data, captions=np.array(captions))
    train(TrainConfig(data=str(root / "captioned.npz"), out=str(root / "text"), model="tiny", image_size=8, T=50,
                      batch_size=16, steps=2, context="text", encoder="hash", progress=False, device="cpu"))
    models = {"tiny": root / "runs" / "tiny" / "model", "text": root / "text" / "model"}
    yield from checked_client(create_app([root / "runs"], device="cpu", queue_size=4, models=models))


def teach(client, **change):
    body = {"base": "tiny", "class": "diag", "images": diagonals(), "steps": 3, "report_samples": 0, **change}
    return client.post("/api/teach", json={k: v for k, v in body.items() if v is not None}, headers=JSON)


def folders(root) -> list[str]:
    return sorted(os.listdir(root / "runs"))


def test_the_teach_state_says_idle_with_its_limits(client):
    state = client.get("/api/teach").json()
    assert state["state"] == "idle" and state["enabled"] and state["reason"] is None
    assert state["limits"]["min_images"] == 8 and state["limits"]["max_images"] == 100
    assert state["limits"]["default_minutes"] == FINETUNE_MINUTES


@pytest.mark.parametrize("change, words", [
    ({"shell": "rm"}, ["unknown parameter 'shell'"]),
    ({"base": None}, ["base=None"]), ({"base": "nope"}, ["base='nope'", "listed model"]),
    ({"base": "../../etc"}, ["base='../../etc'"]),
    ({"images": diagonals(3)}, ["images='3 pictures'", "8 to 100"]), ({"images": "x"}, ["images='str'"]),
    ({"images": diagonals(7) + ["data:image/png;base64,AAAA"]}, ["images[7]", "could not be read"]),
    ({"class": None}, ["class=None", "new class"]), ({"class": "hbar"}, ["class='hbar'", "square, hbar, vbar"]),
    ({"class": "a,b"}, ["class='a,b'"]), ({"class": 5}, ["class=5"]),
    ({"minutes": 0}, ["minutes=0"]), ({"minutes": 100}, ["minutes=100"]), ({"steps": 0}, ["steps=0"]),
    ({"method": "magic"}, ["method='magic'"]), ({"report_samples": 99}, ["report_samples=99"]),
    ({"prompt": "a line"}, ["prompt='a line'", "class model"]),
    ({"base": "runs/student"}, ["distilled student", "distill"]),
    ({"base": "text", "class": None}, ["text model", "prompt"]),
])
def test_bad_requests_are_refused_by_name_and_leave_nothing(client, root, change, words):
    before = folders(root)
    r = teach(client, **change)
    assert r.status_code == 422, r.text
    assert all(w in r.json()["error"] for w in words), r.json()["error"]
    assert str(root) not in r.text  # no server path
    assert folders(root) == before  # nothing written (or what was written, removed)


def test_a_body_over_the_limit_and_a_get_never_start(client):
    r = client.post("/api/teach", content=b"x" * (16 * 2**20 + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "over" in r.json()["error"]
    assert client.post("/api/teach", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415


def test_a_fine_tune_runs_is_monitored_and_its_model_listed(client, root):
    r = teach(client, report_samples=2)
    assert r.status_code == 202, r.text
    state = r.json()
    run = state["run"]
    assert run.startswith("runs/teach-diag-") and state["state"] in ("training", "done") and state["base"] == "tiny"
    again = teach(client)
    assert again.status_code == 409 and "already running" in again.json()["error"]  # one at a time
    deadline = time.monotonic() + 300
    while state["state"] not in ("done", "error"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
        state = client.get("/api/teach").json()
    assert state["state"] == "done", state
    assert state["model"] == run and state["steps"] == 3 and state["summary"] and "recognised" in state["report"]
    assert str(root) not in json.dumps(state)
    folder = root / "runs" / run.split("/", 1)[1]
    assert sorted(p.name for p in (folder / "pictures").iterdir()) == [f"{i:03d}.png" for i in range(8)]
    assert client.get("/api/teach/report.png").content[:4] == b"\x89PNG"
    # the run is listed and monitored like any; its model joined the listing with the new class
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs[run]["state"] == "finished" and runs[run]["has_model"] and runs[run]["steps"] == 3
    assert client.get(f"/api/runs/{run}/metrics").json()["step"][-1] == 3
    assert client.get(f"/api/runs/{run}/samples/latest.png").status_code in (200, 404)
    card = client.get(f"/api/models/{run}").json()
    assert card["classes"] == ["square", "hbar", "vbar", "diag"] and card["available"]
    r = client.post("/api/sample", json={"model": run, "context": "diag", "n": 2, "sampler": "ddim", "steps": 3},
                    headers=JSON)
    assert r.status_code == 200 and len(r.json()["images"]) == 2
    # the next one may start now
    second = teach(client, **{"class": "other"})
    assert second.status_code == 202 and second.json()["run"] != run
    while client.get("/api/teach").json()["state"] not in ("done", "error"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
