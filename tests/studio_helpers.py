"""Fixtures and helpers shared by the studio's API tests: a tiny trained model under a runs folder, the app
and a TestClient over it, a slowed-down sampler for cancel tests, a tiny distilled student, and readers of
streamed events and pictures."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from tinydiffusion.studio.web.app import create_app

TINY = {"model": "tiny", "context": "square", "n": 2, "steps": 3, "sampler": "ddim"}
BASE = "http://127.0.0.1:8000"  # the studio answers only to its own names (Host), so the test client uses one

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``root/runs/tiny``: a tiny model trained 3 steps (metrics.csv, samples/, model/)."""
    from conftest import shapes
    from tinydiffusion.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("studio")
    images, labels, names = shapes()
    np.savez_compressed(root / "shapes.npz", images=images, labels=labels, class_names=np.array(names))
    train(TrainConfig(data=str(root / "shapes.npz"), out=str(root / "runs" / "tiny"), model="tiny", image_size=8, T=50,
                      batch_size=16, steps=3, log_every=1, progress=False, device="cpu"))
    return root


def make_student(teacher, out, method: str = "progressive", steps: int = 2, teacher_steps: int = 4):
    """A few-step student of the exported model folder ``teacher`` (two optimizer steps: seconds), in ``out``;
    its model folder (``out/model``, whose config.json has the ``distilled`` card)."""
    from tinydiffusion.training.distill import DistillConfig, distill

    return distill(DistillConfig(teacher=str(teacher), out=str(out), method=method, steps=steps,
                                 teacher_steps=teacher_steps, iterations=2, batch_size=4, sample_every=1000,
                                 checkpoint_every=1000, progress=False, device="cpu")).model_dir


@pytest.fixture(scope="module")
def app(root):
    return create_app([root / "runs"], device="cpu", queue_size=4, models={"tiny": root / "runs" / "tiny" / "model"})


def checked_client(app):
    """A test client that fails any plain (non-stream) response showing a traceback."""
    def no_traceback(response):
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
            assert "Traceback" not in response.text, response.text

    with TestClient(app, base_url=BASE) as c:
        c.event_hooks = {"request": [], "response": [no_traceback]}
        yield c


@pytest.fixture(scope="module")
def client(app):
    yield from checked_client(app)


@pytest.fixture
def slow(app):
    """The tiny network made slow (20 ms a forward pass) so that a job can be caught mid-way."""
    studio = app.state.studio
    pipe = studio.pipelines.get(studio.catalog.model("tiny"))
    hook = pipe.model.register_forward_hook(lambda *_: time.sleep(0.02))
    yield
    hook.remove()


def iter_events(response):
    """``(event, data)`` of a Server-Sent Events response, as they arrive."""
    event = None
    for line in response.iter_lines():
        assert "Traceback" not in line
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line.split(":", 1)[1])


def events(response) -> list[tuple[str, dict]]:
    """The events of a stream (``loading``, sent when a job first loads its model, left out)."""
    return [e for e in iter_events(response) if e[0] != "loading"]


def stream(client, params: dict) -> list[tuple[str, dict]]:
    """The events of one ``POST /api/stream`` (or ``[("refused", {"status", "error"})]`` when it is refused before
    any job is queued: a JSON error instead of a stream)."""
    with client.stream("POST", "/api/stream", json=params) as r:
        if "text/event-stream" not in r.headers.get("content-type", ""):
            r.read()
            return [("refused", {"status": r.status_code, **r.json()})]
        return events(r)


def picture(data: bytes, kind: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == kind
    return image


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1"):
    """``app`` on a real uvicorn server as ``tinydiffusion serve`` runs it (its socket, protocol and settings), in a
    thread, on a free port; yields ``(url, port)``."""
    import uvicorn

    from tinydiffusion.studio.web import connections
    from tinydiffusion.studio.web.server import bind

    sock = bind(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(connections.config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the studio server did not start")
            time.sleep(0.05)
        yield f"http://{host}:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
