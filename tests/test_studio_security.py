"""The studio as a boundary that other web pages must not drive (``web/guard.py``; ``docs/studio_api.md``, "Who
may call it"): Host (DNS rebinding), Origin and browser fetch metadata (cross-site requests), JSON-only bodies,
a token on a non-loopback address, unguessable job ids, security headers on every answer, no server paths in
answers, and JSON nesting bombs. The hostile inputs of the 2026-12-04 review and more of our own."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

from starlette.testclient import TestClient  # noqa: E402

from studio_helpers import BASE, TINY, app, client, events, root, stream  # noqa: E402,F401  (fixtures)
from tinydiffusion.studio.web.app import create_app  # noqa: E402

JSON = {"Content-Type": "application/json"}
BODY = json.dumps(TINY)


def jobs_run(client) -> int:
    """Jobs the worker has finished (kept) or holds: what a refused request must not change."""
    counts = client.app.state.studio.jobs.counts()
    return counts["kept"] + counts["waiting"] + counts["running"]


# ---------------------------------------------------------------------- Host: DNS rebinding
@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "LocalHost:8000",
                                  "[::1]:8000", "[0:0:0:0:0:0:0:1]:8000", "127.0.0.2:8000",
                                  "[::ffff:127.0.0.1]:8000"])
def test_loopback_hosts_with_the_port_are_served(client, host):
    assert client.get("/api/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", [
    "evil.example:8000", "evil.example", "127.0.0.1:9999", "localhost:80", "127.0.0.1", "localhost.:8000",
    "127.0.0.1.:8000", "localhost:8000.evil.example", "127.0.0.1:8000@evil.example", "evil.example:8000:8000",
    "[::1", "[::1]x:8000", "", "localhost:", "127.1:8000", "2130706433:8000", "0x7f000001:8000",
    "localhost.localdomain:8000", "sub.localhost:8000", "10.0.0.5:8000", "[fe80::1]:8000", "0.0.0.0:8000",
    "%6cocalhost:8000", "localhost:8000\tx",
])
def test_other_hosts_are_refused_before_anything_runs(client, host):
    before = jobs_run(client)
    for method, path in (("GET", "/"), ("GET", "/api/models"), ("GET", "/api/runs"), ("POST", "/api/sample")):
        r = client.request(method, path, headers={"Host": host, **JSON}, content=BODY if method == "POST" else None)
        assert r.status_code in (400, 403), (host, path, r.status_code)
        assert "Host" in r.json()["error"] or "host" in r.json()["error"].lower()
    assert jobs_run(client) == before


def test_one_host_header_exactly(client):
    r = client.get("/api/models", headers=[("Host", "127.0.0.1:8000"), ("Host", "evil.example:8000")])
    assert r.status_code == 400


# ---------------------------------------------------------------------- Origin, fetch metadata, content type
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8000",
                                    "http://localhost:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000.evil",
                                    "http://user@127.0.0.1:8000", "file://", "http://127.0.0.1", "HTTP://EVIL.EXAMPLE"])
def test_a_foreign_origin_changes_nothing(client, origin):
    before = jobs_run(client)
    for path in ("/api/sample", "/api/stream", "/api/compare", "/api/edit/stream"):
        r = client.post(path, content=BODY, headers={**JSON, "Origin": origin})
        assert r.status_code == 403 and "Origin" in r.json()["error"], (path, r.text)
    assert client.get("/api/models", headers={"Origin": origin}).status_code == 403
    assert jobs_run(client) == before


def test_the_pages_own_origin_is_served(client):
    r = client.post("/api/sample", content=BODY, headers={**JSON, "Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200
    r = client.post("/api/sample", content=BODY, headers={**JSON, "Origin": "http://LOCALHOST:8000",
                                                          "Host": "localhost:8000"})
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                  None, "application/json-patch+json", "text/json", "application/jsonp",
                                  "application/x-json", "application/json, text/plain"])
def test_json_only_as_application_json(client, kind):
    """What a foreign page can send without a preflight (a form, text/plain, no type) is refused, 415."""
    before = jobs_run(client)
    headers = {} if kind is None else {"Content-Type": kind}
    for path in ("/api/sample", "/api/stream", "/api/compare", "/api/edit/stream"):
        r = client.post(path, content=BODY, headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["error"], (path, kind, r.text)
    assert jobs_run(client) == before
    for ok in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        assert client.post("/api/sample", content=BODY, headers={"Content-Type": ok}).status_code == 200


def test_cross_site_requests_are_refused_but_a_link_opens_the_page(client):
    for mode, dest in (("no-cors", "empty"), ("cors", "empty"), ("no-cors", "image"), ("no-cors", "script")):
        for site in ("cross-site", "same-site"):
            r = client.post("/api/sample", content=BODY, headers={**JSON, "Sec-Fetch-Site": site,
                                                                  "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest})
            assert r.status_code == 403
            r = client.get("/api/runs", headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode,
                                                 "Sec-Fetch-Dest": dest})
            assert r.status_code == 403
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert client.get("/", headers=link).status_code == 200
    assert client.post("/api/sample", content=BODY, headers={**JSON, **link}).status_code == 403  # a form's POST
    assert client.get("/", headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}).status_code == 200


def test_cancel_needs_the_pages_origin_and_the_job_id(client):
    got = stream(client, TINY)
    job = got[0][1]["job"]
    assert re.fullmatch(r"j[A-Za-z0-9_-]{16}", job)  # 96 random bits, URL-safe
    for origin in ("http://evil.example", "null"):
        assert client.post(f"/api/jobs/{job}/cancel", headers={"Origin": origin}).status_code == 403
        assert client.post(f"/api/jobs/{job}/cancel", headers={"Origin": origin, "Content-Type": "text/plain"},
                           content="x").status_code == 403
    assert client.post(f"/api/jobs/{job}/cancel", content="{}", headers={"Content-Type": "text/plain"}).status_code == 415
    # the sequential ids of old (j1, j2, …) name nothing now
    for k in range(1, 40):
        assert client.post(f"/api/jobs/j{k}/cancel").status_code == 404
        assert client.get(f"/api/jobs/j{k}/grid.png").status_code == 404
    assert client.post(f"/api/jobs/{job}/cancel").json() == {"job": job, "cancelled": False}  # finished: ours


def test_job_ids_do_not_repeat(client):
    ids = {client.post("/api/sample", json=TINY, headers={"Accept": "application/json"}).json()["job"] for _ in range(6)}
    assert len(ids) == 6


# ---------------------------------------------------------------------- a token on a non-loopback address
@pytest.fixture(scope="module")
def exposed(root):
    """The studio as ``serve --host 0.0.0.0`` makes it: a token needed by every request."""
    app = create_app([root / "runs"], device="cpu", queue_size=4, models={"tiny": root / "runs" / "tiny" / "model"},
                     host="0.0.0.0", token="s3cret-token_value")
    with TestClient(app, base_url=BASE) as c:
        yield c


def test_without_the_token_nothing_is_served(exposed):
    for method, path in (("GET", "/"), ("GET", "/api/models"), ("GET", "/docs"), ("POST", "/api/sample"),
                         ("GET", "/static/app.js")):
        r = exposed.request(method, path, content=BODY if method == "POST" else None, headers=JSON)
        assert r.status_code == 403 and "token" in r.json()["error"], (path, r.text)
    assert exposed.get("/api/models", params={"token": "s3cret-token_value "}).status_code == 403
    for wrong in ("s3cret-token_valu", "s3cret-token_value2", "S3CRET-TOKEN_VALUE", "", "null", "s3cret%2Dtoken_value"):
        assert exposed.get("/api/models", params={"token": wrong}).status_code == 403
        assert exposed.get("/api/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 403
        assert exposed.get("/api/models", headers={"Cookie": f"tinydiffusion-token-8000={wrong}"}).status_code == 403
    assert exposed.get("/api/models", headers={"Authorization": "Basic s3cret-token_value"}).status_code == 403
    # another port's cookie is another studio's
    assert exposed.get("/api/models", headers={"Cookie": "tinydiffusion-token-9000=s3cret-token_value"}).status_code == 403


def test_the_printed_url_sets_a_strict_cookie_then_the_page_works(exposed):
    exposed.cookies.clear()
    r = exposed.get("/", params={"token": "s3cret-token_value"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"  # the token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("tinydiffusion-token-8000=s3cret-token_value") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert exposed.get("/").status_code == 200  # the cookie now goes with every request of the page
    assert exposed.post("/api/sample", json=TINY).status_code == 200
    exposed.cookies.clear()
    assert exposed.get("/api/models").status_code == 403
    # scripts: the token in a header, or in the query (the header is better: URLs end up in logs)
    assert exposed.post("/api/sample", json=TINY, headers={"Authorization": "Bearer s3cret-token_value"}).status_code == 200
    assert exposed.post("/api/sample?token=s3cret-token_value", json=TINY).status_code == 200
    # the token does not make a foreign Origin or Host acceptable
    ok = {"Authorization": "Bearer s3cret-token_value"}
    assert exposed.post("/api/sample", json=TINY, headers={**ok, "Origin": "http://evil.example"}).status_code == 403
    assert exposed.get("/api/models", headers={**ok, "Host": "evil.example:8000"}).status_code == 403
    # listening on every interface, the machine's IP addresses are its names too
    assert exposed.get("/api/models", headers={**ok, "Host": "192.168.1.5:8000"}).status_code == 200


def test_a_loopback_studio_needs_no_token(client):
    assert client.get("/api/models").status_code == 200


# ---------------------------------------------------------------------- headers
HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
           "cross-origin-resource-policy": "same-origin"}


def test_every_answer_carries_the_security_headers(client):
    answers = [client.get(p) for p in ("/", "/docs", "/static/app.js", "/static/style.css", "/api/models",
                                       "/api/runs", "/nope", "/api/models/nope", "/openapi.json")]
    answers += [client.post("/api/sample", json={"model": "tiny", "steps": 0}),
                client.post("/api/sample", content="x", headers={"Content-Type": "text/plain"}),
                client.get("/", headers={"Host": "evil.example:8000"}),
                client.post("/api/sample", json=TINY)]
    for r in answers:
        for name, value in HEADERS.items():
            assert r.headers.get(name) == value, (r.url, r.status_code, name)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert "img-src 'self' data: blob:" in csp


def test_the_pages_need_no_inline_script_or_style(client):
    """The CSP allows no inline script, style or handler: the page and /docs must not need one."""
    for path in ("/", "/docs"):
        text = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=|javascript:", text, re.I), path
    static = Path(__file__).parents[1] / "src" / "tinydiffusion" / "studio" / "static"
    for script in static.glob("*.js"):
        code = script.read_text()
        assert not re.search(r"""setAttribute\(\s*["']style|["']style["']\s*:|innerHTML|\beval\(|new Function""",
                             code), script.name


# ---------------------------------------------------------------------- no server paths in answers
def test_no_absolute_server_path_in_any_answer(client, root, app, monkeypatch):
    home = str(Path.home())
    broken = root / "runs" / "broken" / "model"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    try:
        texts = [client.get("/api/models?rescan=1").text, client.get("/api/runs").text,
                 client.get("/api/models/runs/tiny").text, client.get("/api/runs/runs/tiny/metrics").text]
        models = {m["name"]: m for m in client.get("/api/models").json()}
        assert models["runs/broken"]["available"] is False and "runs/broken" in models["runs/broken"]["reason"]
        card = models["runs/tiny"]["card"]
        assert card["training"]["out"] == "runs/tiny" and card["training"]["data"] == "shapes.npz"
        assert "shapes.npz data" in card["trained"]
        # a library message naming a file: the folder as the listing names it
        from tinydiffusion.errors import UsageError

        def broken_load(entry):
            raise UsageError(f"model file {root / 'runs' / 'tiny' / 'model' / 'model.safetensors'} is truncated "
                             f"(and {home}/x.npz, /proc/self/environ)")

        monkeypatch.setattr(app.state.studio.pipelines, "get", broken_load)
        got = stream(client, TINY)
        message = got[-1][1]["error"]
        # (the model given as "tiny" is that folder: its name is the shortest way there)
        assert "model file tiny/model.safetensors is truncated" in message and "~/x.npz" in message, message
        texts.append(message)
        monkeypatch.setattr(app.state.studio.catalog, "model", lambda name: broken_load(None))
        r = client.post("/api/sample", json=TINY)
        assert r.status_code == 422
        texts.append(r.text)
    finally:
        shutil.rmtree(broken.parent)
        client.get("/api/models?rescan=1")
    for text in texts:
        assert str(root) not in text and home not in text and "/tmp/" not in text, text
        assert "/proc/self/environ" not in text


def test_redaction_keeps_api_paths():
    from tinydiffusion.studio.catalog import Catalog

    catalog = Catalog([], {})
    text = "not a model this server lists (GET /api/models; ?rescan=1 …); see /docs and /static/x"
    assert catalog.redact(text) == text
    assert catalog.redact("read /usr/lib/thing.so here") == "read …/thing.so here"
    assert catalog.shown("/tmp/w/sprites") == "sprites" and catalog.shown("runs/a") == "runs/a"
    assert catalog.shown(["/a/b.npz", 3]) == ["b.npz", 3]


# ---------------------------------------------------------------------- JSON bombs and odd bodies
@pytest.mark.parametrize("body", [
    "[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "[" * 60_000,
    json.dumps({**TINY, "context": [[[[[[[[[["square"]]]]]]]]]]}), json.dumps({"model": {"a": {"b": {"c": {"d": {
        "e": {"f": {"g": {"h": 1}}}}}}}}}),
])
def test_nesting_bombs_are_refused_not_crashes(client, body):
    assert len(body) <= 64 * 1024
    for path in ("/api/sample", "/api/compare", "/api/stream", "/api/edit/stream"):
        r = client.post(path, content=body, headers=JSON)
        assert r.status_code == 422 and ("nests" in r.json()["error"] or "JSON" in r.json()["error"]), (path, r.text)


def test_a_big_nesting_bomb_on_the_edit_route(client):
    r = client.post("/api/edit/stream", content="[" * 3_000_000 + "]" * 3_000_000, headers=JSON)
    assert r.status_code == 422 and "nests" in r.json()["error"]


@pytest.mark.parametrize("body, words", [
    ('{"model": "tiny", "steps": 1' + "0" * 5000 + "}", "JSON"), ('{"model": "tiny", "guidance": 1e400}', "guidance"),
    ('{"model": "tiny", "guidance": NaN}', "guidance"), ('{"model": "tiny", "guidance": -Infinity}', "guidance"),
    ("null", "NoneType"), ('"tiny"', "str"), ("\ufeff{}", "model"), ('{"model": "tiny", "n": 1e2}', "n="),
    ('{"model": "tiny", "model": "../../etc"}', "model="), (b'{"model": "\xff\xfe"}', "JSON"),
])
def test_odd_json_bodies(client, body, words):
    r = client.post("/api/sample", content=body, headers=JSON)
    assert r.status_code in (404, 422) and words in r.json()["error"], r.text


def test_requests_in_progress_are_bounded_not_connections():
    """Beyond MAX_ACTIVE requests in progress: 503 with Retry-After (idle connections never count: see
    test_studio_server.py, which holds 100 of them open)."""
    from tinydiffusion.studio.web.guard import Guard

    async def hello(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    guard = Guard(hello, max_active=2)
    c = TestClient(guard, base_url=BASE)  # no lifespan: a bare ASGI app
    assert c.get("/").status_code == 200 and guard.active == 0
    guard.active = 2  # two requests in progress
    r = c.get("/")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "busy" in r.json()["error"]
    assert r.headers["x-frame-options"] == "DENY"
