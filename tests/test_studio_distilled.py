"""The studio with distilled students (``tinydiffusion distill``): listed with their ``distilled`` card, sampled
with the card's settings when a request gives none, and any other sampler, step count, guidance scale or
guidance rescale refused (422) with a message naming the setting, before any work is queued.
Contract: ``docs/studio_api.md``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

from studio_helpers import checked_client, events, make_student, root, stream  # noqa: E402,F401  (fixtures)
from test_studio_edit import EDIT_INPUT, data_url  # noqa: E402

STUDENT = "runs/student"  # progressive: DDIM in 2 steps
CSTUDENT = "runs/cstudent"  # consistency: its sampler in 1, 2 or 4 steps


@pytest.fixture(scope="module")
def client(root):
    """The studio over ``root/runs``: the tiny teacher (``runs/tiny``) and two students of it."""
    from tinydiffusion.studio.web.app import create_app

    teacher = root / "runs" / "tiny" / "model"
    make_student(teacher, root / "runs" / "student", "progressive", steps=2, teacher_steps=4)
    make_student(teacher, root / "runs" / "cstudent", "consistency", steps=2, teacher_steps=4)
    yield from checked_client(create_app([root / "runs"], device="cpu", queue_size=4, models={}))


def sample(client, model: str, **params):
    return client.post("/api/sample", json={"model": model, "context": "square", "n": 2, **params},
                       headers={"Accept": "application/json"})


# ---------------------------------------------------------------------- the listing
def test_students_are_listed_with_their_distilled_card(client, root):
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {"runs/tiny", STUDENT, CSTUDENT}
    assert models["runs/tiny"]["distilled"] is None  # an ordinary model
    card = models[STUDENT]
    # the teacher is named as the listing names it (its run folder under --runs), never by a server path
    assert card["distilled"] == {"method": "progressive", "sampler": "ddim", "steps": [2], "guidance": 3.0,
                                 "teacher": "runs/tiny/model", "teacher_sampler": "ddim", "teacher_steps": 4}
    assert card["defaults"] == {"sampler": "ddim", "steps": 2, "guidance": 3.0}  # what a request without them gets
    assert card["kind"] == "class" and card["classes"] == ["square", "hbar", "vbar"] and card["available"]
    c = models[CSTUDENT]["distilled"]
    assert c["method"] == "consistency" and c["sampler"] == "consistency" and {2, 4} <= set(c["steps"])
    assert models[CSTUDENT]["defaults"] == {"sampler": "consistency", "steps": 2, "guidance": 3.0}
    assert client.get(f"/api/models/{STUDENT}").json()["distilled"] == card["distilled"]


# ---------------------------------------------------------------------- sampling
def test_a_student_samples_with_its_card_settings(client):
    body = sample(client, STUDENT).json()
    assert (body["sampler"], body["steps"], body["guidance"], body["nfe"]) == ("ddim", 2, 3.0, 2)
    assert len(body["images"]) == 2 and body["grid"].startswith("data:image/png;base64,")
    # its own sampler without steps takes the card's steps; the values it allows may be given explicitly
    assert sample(client, STUDENT, sampler="ddim").json()["nfe"] == 2
    same = sample(client, STUDENT, sampler="ddim", steps=2, guidance=3, guidance_rescale=0, eta=0).json()
    assert same["images"] == body["images"]
    for steps in (1, 4):  # a consistency student: any of its step counts
        got = sample(client, CSTUDENT, steps=steps).json()
        assert (got["sampler"], got["nfe"]) == ("consistency", steps)
    # the stream too: a frame per student step
    got = stream(client, {"model": STUDENT, "context": "hbar=1,vbar=0.5", "n": 1})
    assert [e for e, _ in got] == ["queued", "frame", "frame", "done"]
    assert got[-1][1]["steps"] == 2 and got[-1][1]["rows"] == ["hbar=1,vbar=0.5"]


@pytest.mark.parametrize("model, change, words", [
    (STUDENT, {"sampler": "ddpm"}, "sampler='ddpm'"), (STUDENT, {"sampler": "euler", "steps": 2}, "sampler='euler'"),
    (STUDENT, {"sampler": "consistency"}, "sampler='consistency'"), (STUDENT, {"steps": 3}, "steps=3"),
    (STUDENT, {"sampler": "ddim", "steps": 8}, "steps=8"), (STUDENT, {"guidance": 5}, "guidance=5"),
    (STUDENT, {"guidance": 1}, "guidance=1"), (STUDENT, {"guidance_rescale": 0.5}, "guidance_rescale=0.5"),
    (CSTUDENT, {"sampler": "ddim"}, "sampler='ddim'"), (CSTUDENT, {"steps": 3}, "steps=3"),
])
def test_what_a_student_was_not_distilled_for_is_refused_by_name(client, model, change, words):
    r = sample(client, model, **change)
    assert r.status_code == 422, r.text
    message = r.json()["error"]
    assert words in message and "distilled" in message and "Traceback" not in message
    # the stream refuses it the same way, before any job is queued
    got = stream(client, {"model": model, "context": "square", **change})
    assert len(got) == 1 and got[0][0] == "refused" and got[0][1]["status"] == 422 and words in got[0][1]["error"]


def test_compare_and_edit_keep_to_what_a_student_supports(client):
    r = client.post("/api/compare", json={"model": CSTUDENT, "context": "square", "n": 1,
                                          "settings": ["consistency:1", "consistency:4"]})
    assert r.status_code == 200 and [row["nfe"] for row in r.json()["rows"]] == [1, 4]
    r = client.post("/api/compare", json={"model": STUDENT, "context": "square", "n": 1,
                                          "settings": ["ddim:2", "ddpm:50"]})
    assert r.status_code == 422 and "settings='ddpm:50'" in r.json()["error"] and "sampler='ddpm'" in r.json()["error"]
    # img2img runs the tail of the student's own grid; inpainting (RePaint over DDPM steps) is refused by name
    with client.stream("POST", "/api/edit/stream", json={"model": STUDENT, "image": data_url(EDIT_INPUT),
                                                         "context": "vbar", "n": 1, "strength": 1.0}) as r:
        got = events(r)
    assert got[-1][0] == "done" and got[-1][1]["nfe"] == 2 and got[-1][1]["sampler"] == "ddim"
    mask = np.full((8, 8, 3), 255, np.uint8)
    mask[:4] = 0
    r = client.post("/api/edit/stream", json={"model": STUDENT, "image": data_url(EDIT_INPUT), "mask": data_url(mask),
                                              "context": "vbar", "n": 1})
    assert r.status_code == 422 and r.json()["error"].startswith("mask=") and "distilled" in r.json()["error"]


def test_the_openapi_description_names_the_consistency_sampler(client):
    spec = json.dumps(client.get("/openapi.json").json())
    assert "consistency" in spec


def test_an_edit_on_a_one_step_grid_must_not_ignore_its_input(client):
    """A 1-step grid has no partial tail: round(strength · 1) steps is the whole grid from pure noise, so any
    strength below 1 would give the same pictures whatever the input (the review: bit-identical outputs)."""
    body = {"model": CSTUDENT, "image": data_url(EDIT_INPUT), "context": "vbar", "n": 1, "steps": 1}
    for strength in (0.2, 0.6, 0.99):
        r = client.post("/api/edit/stream", json={**body, "strength": strength})
        assert r.status_code == 422 and r.json()["error"].startswith(f"strength={strength}") and \
            "grid of one step" in r.json()["error"]
    # with more steps, a strength that rounds to the whole grid is refused the same way (4 · 0.9 rounds to 4)
    r = client.post("/api/edit/stream", json={**body, "steps": 4, "strength": 0.9})
    assert r.status_code == 422 and "rounds to all 4" in r.json()["error"]
    with client.stream("POST", "/api/edit/stream", json={**body, "strength": 1}) as r:
        assert events(r)[-1][0] == "done"
    with client.stream("POST", "/api/edit/stream", json={**body, "steps": 2, "strength": 0.5}) as r:
        assert events(r)[-1][1]["steps"] == 2
