"""The studio's edit endpoint (``POST /api/edit/stream``): img2img and inpainting streamed live, refusals as JSON
before any work, a body over the limit, cancel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'serve' extra)")

from studio_helpers import TINY, app, client, events, iter_events, picture, root, slow  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------------- edit
def data_url(array: np.ndarray, kind: str = "PNG") -> str:
    import base64

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def bomb_png(side: int = 20_000) -> bytes:
    """A PNG whose header claims ``side``² pixels (no pixel data worth decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


EDIT_INPUT = np.zeros((8, 8, 3), np.uint8)
EDIT_INPUT[2:6, 2:6] = (250, 30, 90)


def edit(client, **change):
    """The events of one ``POST /api/edit/stream`` (or the response itself when it is not a stream)."""
    body = {"model": "tiny", "image": data_url(EDIT_INPUT), "context": "vbar", "n": 2, "sampler": "ddim",
            "steps": 6, "strength": 0.5, **change}
    with client.stream("POST", "/api/edit/stream", json={k: v for k, v in body.items() if v is not None}) as r:
        if "text/event-stream" not in r.headers.get("content-type", ""):
            r.read()
            return r
        return events(r)


def test_edit_img2img_streams_frames_and_keeps_downloads(client):
    got = edit(client, image=data_url(np.repeat(np.repeat(EDIT_INPUT, 4, 0), 4, 1), "JPEG"))  # any size, JPEG too
    kinds = [e for e, _ in got]
    assert kinds[0] == "queued" and kinds[-1] == "done" and kinds.count("frame") == 3  # round(0.5 · 6) steps
    frame = got[1][1]
    assert frame["x_t"].startswith("data:image/png;base64,") and frame["steps"] == 3 and frame["step"] == 1
    done = got[-1][1]
    assert done["nfe"] == 6 and done["strength"] == 0.5  # 3 guided steps, 2 evaluations each and not done["inpaint"] and done["rows"] == ["vbar"]
    grid = picture(client.get(done["downloads"]["png"]).content, "PNG")
    assert grid.size == ((3 * 9 + 1) * 8, (1 * 9 + 1) * 8)  # the input, then 2 edits, 8 px ×8
    npz = np.load(io.BytesIO(client.get(done["downloads"]["npz"]).content))
    assert npz["images"].shape == (2, 8, 8, 3) and npz["labels"].tolist() == [2, 2]
    again = [np.load(io.BytesIO(client.get(edit(client)[-1][1]["downloads"]["npz"]).content))["images"]
             for _ in range(2)]
    assert np.array_equal(*again)  # seeded
    whole = edit(client, strength=1)[-1][1]  # strength 1 ignores the input: sample from the same seeds
    sample = client.post("/api/sample", json={**TINY, "context": "vbar", "steps": 6}).content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(client.get(whole["downloads"]["png"]).content)))[:, 9 * 8:],
                          np.asarray(Image.open(io.BytesIO(sample))))


def test_edit_inpaints_where_the_mask_is_black(client):
    keep = np.full((8, 8, 3), 255, np.uint8)
    keep[:, :4] = 0  # the left half is generated
    got = edit(client, mask=data_url(np.repeat(np.repeat(keep, 3, 0), 3, 1)), strength=None, steps=5)
    done = got[-1][1]
    assert done["inpaint"] and done["sampler"] == "ddpm" and done["strength"] == 1 and done["nfe"] == 10
    assert [e for e, _ in got].count("frame") == 5
    images = np.load(io.BytesIO(client.get(done["downloads"]["npz"]).content))["images"]
    assert np.array_equal(images[:, :, 4:], np.broadcast_to(EDIT_INPUT[:, 4:], images[:, :, 4:].shape))  # kept exactly
    assert not np.array_equal(images[:, :, :4], np.broadcast_to(EDIT_INPUT[:, :4], images[:, :, :4].shape))
    grid = picture(client.get(done["downloads"]["png"]).content, "PNG")
    assert grid.size == ((4 * 9 + 1) * 8, (1 * 9 + 1) * 8)  # input, mask, 2 edits


@pytest.mark.parametrize("change, status, words", [
    ({"image": "data:image/png;base64,aGVsbG8="}, 422, "image: the picture could not be read"),
    ({"image": "not base64 !"}, 422, "image="), ({"image": 3}, 422, "image="), ({"image": None}, 422, "image=None"),
    ({"image": "data:image/png;base64," + __import__("base64").b64encode(bomb_png()).decode()}, 422, "decompression"),
    ({"mask": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}, 422, "mask: the picture could not be read"),
    ({"mask": data_url(np.full((8, 8, 3), 255, np.uint8))}, 422, "keeps every pixel"),
    ({"mask": data_url(np.zeros((8, 8, 3), np.uint8))}, 422, "generates every pixel"),
    ({"strength": 0}, 422, "strength=0"), ({"strength": 1.5}, 422, "strength=1.5"),
    ({"strength": "half"}, 422, "strength='half'"), ({"n": 17}, 422, "n=17"), ({"steps": 51}, 422, "1..50"),
    ({"context": "circle"}, 422, "circle"), ({"model": "nope"}, 404, "model='nope'"),
    ({"shell": "rm"}, 422, "unknown parameter 'shell'"),
    ({"image": "data:image/png;base64," + "A" * 3_000_000}, 422, "at most 2 MB"),
])
def test_edit_refusals_are_json_before_any_work(client, change, status, words):
    r = edit(client, **change)
    assert not isinstance(r, list), r
    assert r.status_code == status and words in r.json()["error"], r.text


def test_edit_body_over_the_limit(client):
    r = client.post("/api/edit/stream", content=b"x" * (6 * 2**20 + 10), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "over" in r.json()["error"]


def test_an_edit_can_be_cancelled(client, slow):
    keep = np.full((8, 8, 3), 255, np.uint8)
    keep[:4] = 0
    body = {"model": "tiny", "image": data_url(EDIT_INPUT), "mask": data_url(keep), "steps": 50, "n": 1}
    with client.stream("POST", "/api/edit/stream", json=body) as r:
        got = []
        for event in iter_events(r):
            got.append(event)
            if event[0] == "frame" and event[1]["step"] == 2:
                assert client.post(f"/api/jobs/{event[1]['job']}/cancel").json()["cancelled"] is True
    assert got[-1][0] == "error" and got[-1][1]["cancelled"] and sum(e == "frame" for e, _ in got) < 50
    assert client.get(f"/api/jobs/{got[0][1]['job']}").json() | {"seconds": None} == {
        "job": got[0][1]["job"], "kind": "edit", "state": "cancelled", "model": "tiny", "seconds": None,
        "downloads": False}
