"""The studio's guidance levers (``guidance_interval``, ``guide``): passed to the library by ``POST /api/sample``,
``/api/stream``, ``/api/compare`` and ``/api/edit/stream``, counted in the network evaluations, recorded in the
outputs' metadata, taken from the model card when left out, and refused (422, naming the parameter) when they are
malformed, name no listed model, do not fit the model, or are asked of a distilled student.
Contract: ``docs/studio_api.md``."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

import studio_helpers
from studio_helpers import TINY, checked_client, events, make_student, stream
from test_studio_edit import EDIT_INPUT, data_url

root = studio_helpers.root  # the fixture: a tiny model trained under root/runs

JSON = {"Accept": "application/json"}
# TINY's 3 DDIM steps on T = 50 enter at t = 49, 32, 16: (t + 1) / T = 1, 0.66, 0.34. Guidance 3 (the card's):
EVERYWHERE, UPPER_HALF = 6, 5  # 2 evaluations per guided step, 1 outside the interval (0.5, 1]


def _copy(src, dst, **card):
    """A copy of the model folder ``src`` with its config.json changed: ``recommended`` updated by ``card``, or
    (``names=``) other class names (the same weights: a model of another context)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    names = card.pop("names", None)
    if names:
        config["context"]["names"] = names
    config["recommended"] = {**config["recommended"], **card}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture(scope="module")
def client(root):
    """``tiny`` and ``runs/tiny`` (the same model: a guide that fits), ``odd`` (other class names: one that does
    not), ``carded`` (a card with the guidance interval (0.5, 1]) and ``runs/student`` (a distilled student)."""
    from tinydiffusion.studio.web.app import create_app

    model = root / "runs" / "tiny" / "model"
    odd = _copy(model, root / "odd", names=["a", "b", "c"])
    carded = _copy(model, root / "carded", guidance_interval=[0.5, 1.0])
    make_student(model, root / "runs" / "student", "progressive", steps=2, teacher_steps=4)
    models = {"tiny": model, "odd": odd, "carded": carded}
    yield from checked_client(create_app([root / "runs"], device="cpu", queue_size=4, models=models))


def sample(client, **change):
    return client.post("/api/sample", json={**TINY, **change}, headers=JSON)


def test_the_interval_guides_only_inside_and_is_recorded(client):
    body = sample(client, guidance_interval=[0.5, 1]).json()
    assert body["nfe"] == UPPER_HALF and body["guidance_interval"] == [0.5, 1.0] and body["guide"] is None
    assert sample(client).json()["nfe"] == EVERYWHERE
    assert sample(client, guidance_interval=[0, 1]).json()["nfe"] == EVERYWHERE
    npz = np.load(io.BytesIO(client.get(body["downloads"]["npz"]).content))
    meta = json.loads(str(npz["metadata"]))
    assert meta["guidance_interval"] == [0.5, 1.0] and meta["guide"] is None
    # a stream's frames count the same way
    done = next(d for e, d in stream(client, {**TINY, "guidance_interval": [0.5, 1]}) if e == "done")
    assert done["nfe"] == UPPER_HALF and done["guidance_interval"] == [0.5, 1.0]


def test_a_listed_guide_is_used_and_recorded(client):
    body = sample(client, guide="runs/tiny").json()
    assert body["guide"] == "runs/tiny" and body["nfe"] == EVERYWHERE  # the model and its guide: 2 per step
    meta = json.loads(str(np.load(io.BytesIO(client.get(body["downloads"]["npz"]).content))["metadata"]))
    assert meta["guide"] == "runs/tiny"
    # autoguidance by a guide of the same weights is the model alone: the unguided images
    plain = sample(client, guidance=1).json()
    assert body["images"] == plain["images"]
    assert sample(client, guide="none").json()["guide"] is None
    both = sample(client, guide="runs/tiny", guidance_interval=[0.5, 1]).json()
    assert both["nfe"] == UPPER_HALF and both["guide"] == "runs/tiny"


def test_a_guide_scale_puts_the_guide_beside_guidance(client):
    body = sample(client, guide="runs/tiny", guide_scale=2).json()
    assert body["guide_scale"] == 2.0 and body["nfe"] == 2 * EVERYWHERE  # both networks on both halves
    assert body["images"] == sample(client).json()["images"]  # a guide of the same weights: plain guidance
    meta = json.loads(str(np.load(io.BytesIO(client.get(body["downloads"]["npz"]).content))["metadata"]))
    assert meta["guide_scale"] == 2.0
    r = sample(client, guide_scale=2)  # no guide: refused by name before any work
    assert r.status_code == 422 and "guide_scale=2" in r.json()["error"]
    r = sample(client, guide="runs/tiny", guide_scale="2")
    assert r.status_code == 422 and "guide_scale='2'" in r.json()["error"]


def test_the_card_levers_are_listed_used_and_switched_off(client):
    card = client.get("/api/models/carded").json()
    assert card["defaults"]["guidance_interval"] == [0.5, 1.0]
    assert "guidance_interval" not in client.get("/api/models/tiny").json()["defaults"]
    assert sample(client, model="carded").json()["nfe"] == UPPER_HALF  # the card's interval
    off = sample(client, model="carded", guidance_interval=[0, 1]).json()
    assert off["nfe"] == EVERYWHERE and off["guidance_interval"] is None  # (0, 1): guided everywhere


@pytest.mark.parametrize("change, words", [
    ({"guidance_interval": [0.8, 0.2]}, ["guidance_interval=[0.8, 0.2]", "LO <= HI"]),
    ({"guidance_interval": [0, 2]}, ["guidance_interval=[0, 2]"]),
    ({"guidance_interval": "0.2,0.8"}, ["guidance_interval='0.2,0.8'"]),
    ({"guidance_interval": [0.2]}, ["guidance_interval=[0.2]"]),
    ({"guidance_interval": [True, 1]}, ["guidance_interval"]),
    ({"guide": 3}, ["guide=3", "listed ordinary model"]),
    ({"guide": ""}, ["guide=''"]),
    ({"guide": "nowhere"}, ["guide='nowhere'", "listed ordinary model"]),
    ({"guide": "../../etc/passwd"}, ["guide='../../etc/passwd'"]),
    ({"guide": "odd"}, ["guide='odd'", "context"]),  # another context: a 422 before any work, not a 500
    ({"guide": "runs/student"}, ["guide='runs/student'", "distilled student"]),
    ({"model": "runs/student", "guidance_interval": [0.5, 1], "sampler": None, "steps": None},
     ["guidance_interval=[0.5, 1.0]", "student"]),
    ({"model": "runs/student", "guide": "tiny", "sampler": None, "steps": None}, ["guide='tiny'", "student"]),
])
def test_bad_levers_are_refused_by_name(client, change, words):
    body = {k: v for k, v in {**TINY, **change}.items() if v is not None}
    for route in ("/api/sample", "/api/stream"):
        r = client.post(route, json=body, headers=JSON)
        assert r.status_code == 422, (route, r.text)
        assert all(w in r.json()["error"] for w in words), r.json()["error"]
        assert "/" + "tmp" not in r.json()["error"]  # no server path


def test_compare_and_edit_take_the_levers(client):
    r = client.post("/api/compare", json={"model": "tiny", "context": "square", "n": 2,
                                          "settings": ["ddim:3", "ddpm:3"], "guidance_interval": [0.5, 1],
                                          "guide": "runs/tiny"}, headers=JSON)
    body = r.json()
    assert r.status_code == 200 and body["guide"] == "runs/tiny" and body["guidance_interval"] == [0.5, 1.0]
    assert body["rows"][0]["nfe"] == UPPER_HALF
    assert client.post("/api/compare", json={"model": "tiny", "settings": ["ddim:3", "ddpm:3"], "guide": "odd"},
                       headers=JSON).status_code == 422
    request = {"model": "tiny", "image": data_url(EDIT_INPUT), "context": "vbar", "n": 2, "sampler": "ddim",
               "steps": 6, "strength": 1, "guidance_interval": [0.5, 1], "guide": "runs/tiny"}
    with client.stream("POST", "/api/edit/stream", json=request) as r:
        done = next(d for e, d in events(r) if e == "done")
    assert done["guidance_interval"] == [0.5, 1.0] and done["guide"] == "runs/tiny" and done["nfe"] < 2 * 6
    with client.stream("POST", "/api/edit/stream", json={**request, "guide": "odd"}) as r:
        r.read()
        assert r.status_code == 422 and "guide='odd'" in r.json()["error"]


def test_the_openapi_description_names_the_levers(client):
    spec = client.get("/openapi.json").json()
    props = spec["paths"]["/api/sample"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"guidance_interval", "guide", "guide_scale"} <= set(props)
