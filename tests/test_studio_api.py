"""The studio's HTTP API (``tinydiffusion serve``) over a tiny model: every endpoint, every refusal, streaming,
cancel, a disconnect, 20 concurrent clients, downloads. Contract: ``docs/studio_api.md``."""

import io
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

from starlette.testclient import TestClient  # noqa: E402

from studio_helpers import BASE, TINY, app, client, events, iter_events, picture, root, slow, stream  # noqa: E402,F401  (fixtures)
from tinydiffusion.studio.web.app import create_app  # noqa: E402


# ---------------------------------------------------------------------- models, page, docs
def test_models_are_listed_with_their_cards(client, root):
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {"tiny", "runs/tiny"}  # the given model, and the run's export found under --runs
    card = models["tiny"]
    assert card["kind"] == "class" and card["classes"] == ["square", "hbar", "vbar"]
    assert card["image_size"] == 8 and card["T"] == 50 and card["parameters"] > 1000 and card["available"]
    assert card["defaults"] == {"sampler": "dpmpp_2m", "steps": 10, "guidance": 3.0}
    assert "shapes.npz" in card["card"]["trained"] and card["card"]["training"]["steps"] == 3
    assert client.get("/api/models/runs/tiny").json()["name"] == "runs/tiny"
    shutil.copytree(root / "runs" / "tiny" / "model", root / "runs" / "later" / "model")
    try:
        assert "runs/later" not in {m["name"] for m in client.get("/api/models").json()}  # listed on request only
        assert "runs/later" in {m["name"] for m in client.get("/api/models?rescan=1").json()}
    finally:
        shutil.rmtree(root / "runs" / "later")
        client.get("/api/models?rescan=1")


def test_page_static_and_offline_docs(client):
    assert client.get("/").status_code == 200 and "html" in client.get("/").headers["content-type"]
    spec = client.get("/openapi.json").json()
    assert {"/api/models", "/api/sample", "/api/stream", "/api/compare", "/api/runs"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/stream" in docs.text
    assert "<script" not in docs.text and "cdn" not in docs.text.lower()  # works with no internet


# ---------------------------------------------------------------------- sampling
def test_sample_png_json_and_downloads(client):
    r = client.post("/api/sample", json={**TINY, "context": ["square", "hbar=1,vbar=0.5"]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert picture(r.content, "PNG").size == ((2 * 9 + 1) * 8, (2 * 9 + 1) * 8)  # 2 rows × 2 seeds of 8 px, ×8
    r = client.post("/api/sample", json={**TINY, "context": ["square", "vbar"]}, headers={"Accept": "application/json"})
    body = r.json()
    # the card's guidance 3: both halves evaluated, 2 network evaluations per step (the library's count)
    assert body["nfe"] == 6 and body["rows"] == ["square", "vbar"] and len(body["images"]) == 4
    assert body["grid"].startswith("data:image/png;base64,")
    job = body["job"]
    assert client.get(f"/api/jobs/{job}").json()["state"] == "done"
    picture(client.get(body["downloads"]["png"]).content, "PNG")
    gif = picture(client.get(body["downloads"]["gif"]).content, "GIF")
    assert gif.n_frames == 3 + 1  # every step's x_t, then the result
    npz = np.load(io.BytesIO(client.get(body["downloads"]["npz"]).content))
    assert npz["images"].shape == (4, 8, 8, 3) and npz["images"].dtype == np.uint8
    assert npz["contexts"].shape == (4, 3) and npz["labels"].tolist() == [0, 0, 2, 2]
    assert json.loads(str(npz["metadata"]))["steps"] == 3
    blend = client.post("/api/sample", json={**TINY, "context": "square", "context_to": "vbar", "mix": 0.25},
                        headers={"Accept": "application/json"}).json()
    assert blend["rows"] == ["square → vbar @ 0.25"] and len(blend["images"]) == 2
    # the same seeds give the same images, whatever else is in the request
    again = client.post("/api/sample", json={**TINY, "context": "vbar"}, headers={"Accept": "application/json"}).json()
    assert again["images"] == body["images"][2:]


@pytest.mark.parametrize("change, status, words", [
    ({"sampler": "plms"}, 422, "sampler='plms'"), ({"steps": 0}, 422, "steps=0"), ({"steps": 51}, 422, "1..50"),
    ({"steps": "ten"}, 422, "steps='ten'"), ({"guidance": float("nan")}, 422, "guidance=nan"),
    ({"guidance": float("inf")}, 422, "guidance=inf"), ({"guidance": -1}, 422, "guidance=-1"),
    ({"n": 0}, 422, "n=0"), ({"n": 65}, 422, "n=65"), ({"context": None, "n": 22}, 422, "at most 21"),
    ({"context": "x" * 201}, 422, "at most 200 characters"), ({"context": ["square"] * 9}, 422, "1 to 8"),
    ({"context": "circle"}, 422, "circle"), ({"context": "square=abc"}, 422, "weight"),
    ({"seed": -1}, 422, "seed=-1"), ({"eta": 0.5, "sampler": "ddpm"}, 422, "eta"), ({"eta": 2}, 422, "eta=2"),
    ({"guidance_rescale": 2}, 422, "guidance_rescale"), ({"mix": 0.5}, 422, "context_to"),
    ({"shell": "rm"}, 422, "unknown parameter 'shell'"), ({"model": "nope"}, 404, "model='nope'"),
    ({"model": None}, 422, "model"), ({"model": 3}, 422, "model=3"),
])
def test_bad_values_are_refused_with_the_library_message(client, change, status, words):
    r = client.post("/api/sample", content=json.dumps({**TINY, **change}), headers={"Content-Type": "application/json"})
    assert r.status_code == status and words in r.json()["error"], r.text


def test_bad_bodies(client):
    for content in (b"{not json", b"[1, 2]", b"x" * 70_000):
        r = client.post("/api/sample", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]


TRAVERSAL = ["../../etc/passwd", "/etc/passwd", "sprites/../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
             "runs/../../../etc/passwd", "runs/tiny/../../../../etc/passwd", "..", "tiny/../tiny", "\x00"]


def test_traversal_probes_read_nothing_outside(client, root):
    opened: list[str] = []
    recording = threading.Event()

    def audit(event, args):
        if recording.is_set() and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)
    recording.set()
    try:
        for name in TRAVERSAL:
            r = client.post("/api/sample", json={**TINY, "model": name})
            assert r.status_code == 404 and "error" in r.json()
            assert stream(client, {**TINY, "model": name})[0][1]["status"] == 404
        for path in ["/api/models/..%2F..%2Fetc%2Fpasswd", "/api/runs/%2e%2e/metrics", "/api/runs/..%2f..%2f/metrics",
                     "/api/runs/runs%2F..%2F..%2Fetc/samples/latest.png", "/api/runs//etc/passwd/metrics",
                     "/api/runs/runs/tiny/../../../etc/metrics", "/api/jobs/..%2f..%2fetc/grid.png",
                     "/api/jobs/%2e%2e/samples.npz", "/api/jobs/j1%2f..%2f..%2fetc/anim.gif", "/static/../pyproject.toml",
                     "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2f..%2f..%2fpyproject.toml"]:
            r = client.get(path)
            assert r.status_code in (404, 422) and "root:" not in r.text and "[project]" not in r.text, path
        assert client.post("/api/jobs/..%2f..%2fetc/cancel").status_code == 404
    finally:
        recording.clear()
    allowed = [str(root), str(Path(__file__).parents[1] / "src"), sys.prefix, sys.base_prefix, "/proc", "/sys", "/dev"]
    outside = [p for p in opened if not any(os.path.abspath(p).startswith(a) for a in allowed)]
    assert not outside and not any("passwd" in p for p in opened), outside


# ---------------------------------------------------------------------- streaming, cancel, disconnect
def test_stream_sends_a_frame_per_step_then_done(client):
    for sampler, steps in (("ddim", 5), ("ddpm", 50)):
        with client.stream("POST", "/api/stream", json={**TINY, "sampler": sampler, "steps": steps}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            got = events(r)
        kinds = [e for e, _ in got]
        assert kinds == ["queued"] + ["frame"] * steps + ["done"]
        frames = [d for e, d in got if e == "frame"]
        assert [f["step"] for f in frames] == list(range(1, steps + 1)) and frames[-1]["nfe"] == 2 * steps  # guided
        assert frames[0]["t"] == 49 and all(f["x_t"].startswith("data:image/png") and f["x0"] for f in frames)
        assert got[-1][1]["nfe"] == 2 * steps and set(got[-1][1]["downloads"]) == {"png", "npz", "gif"}


def test_stream_refuses_bad_values_as_json_before_any_job(client):
    for params, status in (({**TINY, "steps": 0}, 422), ({**TINY, "model": "nope"}, 404),
                           ({**TINY, "guidance": "nan"}, 422), ({**TINY, "context": ["square"] * 9}, 422),
                           ({**TINY, "guidance": 1e9}, 422), ({**TINY, "guidance": "1e400"}, 422)):
        got = stream(client, params)
        assert len(got) == 1 and got[0][0] == "refused" and got[0][1]["status"] == status and got[0][1]["error"]
    # a GET never starts work (an <img src=/api/stream?...> on any page did): the stream is a POST
    r = client.get("/api/stream", params=TINY)
    assert r.status_code == 405 and client.app.state.studio.jobs.counts()["waiting"] == 0


def test_long_runs_stream_at_most_60_frames_and_the_last():
    from tinydiffusion.studio.work.frames import Frames

    import torch

    class Job:
        id, sent = "j0", []

        def check(self):
            pass

        def emit(self, event, data):
            self.sent.append(data["step"])

    job = Job()
    frames = Frames(job, 500, 1, stream=True)
    x = torch.zeros(1, 3, 8, 8)
    for i in range(500):
        frames(i, 499 - i, x, x)
    assert len(job.sent) <= 61 and job.sent[0] == 1 and job.sent[-1] == 500
    # the GIF (the library's recorder) keeps the streamed steps but the last one: the GIF ends on the result
    assert len(frames.kept) == len(job.sent) - 1 <= 60 and frames.kept[0].shape == (1, 8, 8, 3)


def test_cancel_stops_the_job_and_frees_the_worker(client, slow):
    with client.stream("POST", "/api/stream", json={**TINY, "sampler": "ddpm", "steps": 50}) as r:
        got = []
        for event in iter_events(r):
            got.append(event)
            if event[0] == "frame" and event[1]["step"] == 2:
                assert client.post(f"/api/jobs/{event[1]['job']}/cancel").json()["cancelled"] is True
    assert got[-1][0] == "error" and got[-1][1]["cancelled"]
    assert sum(e == "frame" for e, _ in got) < 50
    job = got[0][1]["job"]
    assert client.get(f"/api/jobs/{job}").json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{job}/grid.png").status_code == 404
    assert client.post(f"/api/jobs/{job}/cancel").json()["cancelled"] is False
    start = time.perf_counter()
    assert client.post("/api/sample", json=TINY).status_code == 200 and time.perf_counter() - start < 5


def test_a_queued_job_can_be_cancelled(client, slow):
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: stream(client, {**TINY, "sampler": "ddpm", "steps": 50}))
        deadline = time.monotonic() + 5
        while client.app.state.studio.jobs.counts()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with client.stream("POST", "/api/stream", json=TINY) as r:
            got = iter_events(r)
            event, data = next(got)
            assert event == "queued" and data["position"] == 1
            assert client.post(f"/api/jobs/{data['job']}/cancel").json()["cancelled"] is True
            rest = list(got)
        assert [e for e, _ in rest] == ["error"] and rest[0][1]["cancelled"]
        assert first.result()[-1][0] == "done"  # the running job was not disturbed


def test_a_closed_stream_cancels_its_job(client, slow):
    with client.stream("POST", "/api/stream", json={**TINY, "sampler": "ddpm", "steps": 50}) as r:
        for event, data in iter_events(r):
            if event == "frame":
                job = data["job"]
                break
    deadline = time.monotonic() + 5
    while client.get(f"/api/jobs/{job}").json()["state"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(f"/api/jobs/{job}").json()["state"] == "cancelled"


def test_20_concurrent_clients_are_served_or_told_to_retry(client, slow):
    threads_before = threading.active_count()

    def one(_):
        return client.post("/api/sample", json={**TINY, "steps": 5})

    start = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert time.perf_counter() - start < 30
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and codes.count(200) >= 5 and codes.count(429) >= 1  # queue of 4 + 1 running
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["error"]
        else:
            picture(r.content, "PNG")
    assert threading.active_count() <= threads_before + 2
    assert client.app.state.studio.jobs.counts()["kept"] <= 32


def test_a_model_whose_extra_is_missing_is_listed_unavailable(monkeypatch):
    import importlib.util

    from tinydiffusion.sampling.pipeline import resolve_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentence_transformers" else
                        real(name, *a))
    with TestClient(create_app([], models={"emoji": resolve_model("emoji")}), base_url=BASE) as c:
        card = c.get("/api/models").json()[0]
        assert card["available"] is False and "pip install 'tinydiffusion[text]'" in card["reason"]
        assert card["kind"] == "text" and card["examples"]
        r = c.post("/api/sample", json={"model": "emoji", "context": "a red apple"})
        assert r.status_code == 422 and "tinydiffusion[text]" in r.json()["error"]


# ---------------------------------------------------------------------- compare, runs, errors, CLI
def test_compare_uses_the_same_seeds_for_every_setting(client):
    r = client.post("/api/compare", json={**TINY, "settings": ["ddim:2", "dpmpp_2m:3", "ddim:2"]})
    rows = r.json()["rows"]
    assert [x["setting"] for x in rows] == ["ddim:2", "dpmpp_2m:3", "ddim:2"] and [x["nfe"] for x in rows] == [4, 6, 4]  # guided
    assert rows[0]["grid"] == rows[2]["grid"] and rows[0]["grid"] != rows[1]["grid"]
    for settings in (["ddim:2"], ["ddim:2"] * 5, ["ddim:0", "ddim:2"], ["ddim:51", "ddim:2"], ["plms:3", "ddim:2"],
                     "ddim:2,ddim:3", None):
        r = client.post("/api/compare", json={**TINY, "settings": settings})
        assert r.status_code == 422 and "settings" in r.json()["error"]


def test_training_monitor(client):
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["runs/tiny"]["steps"] == 3 and runs["runs/tiny"]["has_model"] and runs["runs/tiny"]["updated"] > 0
    metrics = client.get("/api/runs/runs/tiny/metrics").json()
    assert metrics["step"] == [1, 2, 3] and len(metrics["loss"]) == len(metrics["images_per_s"]) == 3
    picture(client.get("/api/runs/runs/tiny/samples/latest.png").content, "PNG")
    for path in ("/api/runs/runs/nope/metrics", "/api/runs/tiny/metrics", "/api/runs/runs/tiny/samples/latest.png/x"):
        assert client.get(path).status_code == 404


def test_internal_errors_are_logged_not_shown(client, app, monkeypatch, caplog):
    def boom(*_):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app.state.studio.pipelines, "get", boom)
    monkeypatch.setattr(app.state.studio.catalog, "runs", boom)
    for r in (client.post("/api/sample", json=TINY), client.get("/api/runs")):
        assert r.status_code == 500 and r.json() == {"error": "internal error (see the server log)"}
    assert "secret detail" in caplog.text


def test_serve_command_checks_and_warns(monkeypatch, capsys, tmp_path):
    import subprocess

    from tinydiffusion.cli.main import main

    code = "import sys; import tinydiffusion.cli.main as c; c.build_parser(); print(sorted({'torch', 'fastapi'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    assert main(["serve", "--port", "70000"]) == 2 and "port=70000" in capsys.readouterr().err
    assert main(["serve", "--runs", str(tmp_path / "missing")]) == 2 and "runs=" in capsys.readouterr().err
    import uvicorn  # the real module, kept to put back (a fresh import would lose its loaded submodules)

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the extra not installed
    assert main(["serve"]) == 2 and "pip install 'tinydiffusion[serve]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", uvicorn)

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr()
    port = served[-1][1]  # --port 0: any free port, and the line says which
    assert port > 0 and "warning" in out.err and f"http://127.0.0.1:{port}/?token=" in out.out and ":0/" not in out.out
    assert main(["serve", "--port", "0"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and f"http://127.0.0.1:{served[-1][1]}/ in a browser" in out.out
    # a host that does not resolve, or a port in use, is a usage error naming the option (exit 2)
    assert main(["serve", "--host", "no.such.host"]) == 2 and "--host 'no.such.host'" in capsys.readouterr().err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2 and "--port" in capsys.readouterr().err


# ---------------------------------------------------------------------- progress: loading, compare
def test_the_first_job_says_it_loads_the_model(root):
    from tinydiffusion.studio.work.runner import Runner

    app = create_app([], device="cpu", models={"tiny": root / "runs" / "tiny" / "model"})
    with TestClient(app, base_url=BASE) as c:
        for loads in (True, False):
            with c.stream("POST", "/api/stream", json=TINY) as r:
                got = list(iter_events(r))
            kinds = [e for e, _ in got]
            assert kinds[-1] == "done" and (kinds[1] == "loading") is loads, kinds
            if loads:  # after queued, before the first frame
                assert got[1][1] == {"job": got[0][1]["job"], "what": "model", "model": "tiny"}
                assert kinds.index("loading") < kinds.index("frame")

    class Entry:  # a prompt model: its text encoder loads on its first prompt (seconds), said once
        name, path, available = "emoji", root, True
        config = {"context": {"kind": "text", "encoder": "all-MiniLM-L6-v2"}}

    class Loaded:
        def has(self, entry):
            return True

    runner = Runner(Loaded())
    assert runner.loading(Entry()) == ["text encoder"] and runner.loading(Entry()) == []
    Entry.config = {"context": {"kind": "text", "encoder": "hash-16"}}
    assert runner.loading(Entry()) == []


def test_compare_streams_its_progress_when_asked(client):
    body = {**TINY, "settings": ["ddim:4", "dpmpp_2m:2"]}
    with client.stream("POST", "/api/compare", json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    kinds = [e for e, _ in got]
    assert kinds[0] == "queued" and kinds[-1] == "done" and set(kinds[1:-1]) == {"progress"}
    steps = [(d["setting"], d["step"], d["steps"], d["settings"]) for e, d in got if e == "progress"]
    assert steps == [(0, 1, 4, 2), (0, 2, 4, 2), (0, 3, 4, 2), (0, 4, 4, 2), (1, 1, 2, 2), (1, 2, 2, 2)]
    assert all("x_t" not in d for _, d in got)  # progress only: no pictures until the end
    done = got[-1][1]
    assert [row["nfe"] for row in done["rows"]] == [8, 4] and done["contexts"] == ["square"]
    # the JSON answer is unchanged without the Accept header
    assert client.post("/api/compare", json=body).json()["rows"][0]["setting"] == "ddim:4"


def test_runs_say_whether_they_train_and_when_a_sample_grid_came(client, root):
    run = client.get("/api/runs").json()[0]
    assert run["state"] == "finished" and run["sample"] is not None and run["sample"] <= time.time()
    lock = root / "runs" / "tiny" / ".lock"
    lock.write_text("{}")
    try:
        assert client.get("/api/runs").json()[0]["state"] == "training"
    finally:
        lock.unlink()
    bare = root / "runs" / "bare"
    bare.mkdir()
    (bare / "metrics.csv").write_text("step,loss,images_per_s,elapsed_s\n1,0.5,10,1\n")
    try:
        runs = {r["name"]: r for r in client.get("/api/runs").json()}
        assert runs["runs/bare"]["state"] == "stopped" and runs["runs/bare"]["sample"] is None
        assert client.get("/api/runs/runs/bare/samples/latest.png").status_code == 404
    finally:
        shutil.rmtree(bare)
