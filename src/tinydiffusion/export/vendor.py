"""onnxruntime-web for the static site: pinned to one version, taken from its npm package, checked by checksum.

``ort_web_files()`` returns the two files the page needs (the WebAssembly build's ES module and its ``.wasm``),
each checked against the sha256 pinned here. They come from the user cache
(``~/.cache/tinydiffusion/onnxruntime-web-VERSION``) or, the first time, from the package tarball that
``npm pack onnxruntime-web@VERSION`` fetches from the npm registry (its sha512 checked against the registry's
integrity pinned here), or from such a tarball given as ``source`` (a machine without npm). Nothing is fetched
at run time: the site carries the files. The module is renamed ``.js`` so that any file server sends it with
a JavaScript MIME type (some do not know ``.mjs``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..store.files import user_cache_dir, write_bytes

PACKAGE, VERSION = "onnxruntime-web", "1.30.0"
TARBALL_SHA512 = "q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
FILES = {  # name in the site's vendor/ -> (path in the package tarball, sha256)
    "ort.wasm.bundle.min.js": ("package/dist/ort.wasm.bundle.min.mjs",
                               "11e64bd8ffe11bd1a2a2f0d6275fdfbbba7262f0b76b99b53d228a8a22ef3d90"),
    "ort-wasm-simd-threaded.wasm": ("package/dist/ort-wasm-simd-threaded.wasm",
                                    "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2"),
}
MAX_FILE = 64 << 20  # the .wasm is 14 MB; anything far bigger is not this package
NPM_TIMEOUT = 300
LICENSE = """onnxruntime-web {version}: https://www.npmjs.com/package/onnxruntime-web (MIT licence, as its package.json
states; source: https://github.com/microsoft/onnxruntime)

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def cache_dir() -> Path:
    return user_cache_dir() / f"{PACKAGE}-{VERSION}"


def ort_web_files(source: str | Path | None = None) -> dict[str, bytes]:
    """``{name: bytes}`` of the vendored files plus their licence and a ``VENDOR.json`` record of the checksums:
    from ``source`` (a tarball of ``npm pack``), else the cache, else ``npm pack``; each file checked."""
    files = None if source is not None else _cached()
    if files is None:
        if source is not None:
            tarball = Path(source)
            if not tarball.is_file():
                raise UsageError(f"ort_web={str(source)!r} is not a file; expected the tarball that `npm pack "
                                 f"{PACKAGE}@{VERSION}` writes")
            files = _unpack(tarball)
        else:
            with tempfile.TemporaryDirectory(prefix="tinydiffusion-npm-") as tmp:
                files = _unpack(_npm_pack(Path(tmp)))
        for name, data in files.items():  # cached for the next export; a failure to cache is not an error
            try:
                write_bytes(cache_dir() / name, data)
            except (OSError, UsageError):
                break
    record = {"package": PACKAGE, "version": VERSION, "integrity": f"sha512-{TARBALL_SHA512}",
              "files": {name: {"from": path, "sha256": digest} for name, (path, digest) in FILES.items()}}
    return {**files, "LICENSE-onnxruntime-web.txt": LICENSE.format(version=VERSION).encode(),
            "VENDOR.json": (json.dumps(record, indent=2) + "\n").encode()}


def _cached() -> dict[str, bytes] | None:
    folder = cache_dir()
    if not all((folder / name).is_file() for name in FILES):
        return None
    files = {name: (folder / name).read_bytes() for name in FILES}
    if any(hashlib.sha256(data).hexdigest() != FILES[name][1] for name, data in files.items()):
        return None  # a damaged cache is fetched again
    return files


def _npm_pack(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise UsageError(f"format web needs {PACKAGE} {VERSION}, taken from its npm package, and npm is not "
                         f"installed; install Node.js (npm), or run `npm pack {PACKAGE}@{VERSION}` on another "
                         f"machine and give the tarball with --ort-web")
    cmd = [npm, "pack", f"{PACKAGE}@{VERSION}", "--ignore-scripts", "--silent", "--pack-destination", str(folder)]
    try:
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise UsageError(f"`npm pack {PACKAGE}@{VERSION}` did not finish in {NPM_TIMEOUT} s (no registry?); "
                         f"give a tarball with --ort-web") from None
    tarball = folder / f"{PACKAGE}-{VERSION}.tgz"
    if done.returncode != 0 or not tarball.is_file():
        raise UsageError(f"`npm pack {PACKAGE}@{VERSION}` failed ({(done.stderr or done.stdout).strip()[-300:]}); "
                         f"give a tarball with --ort-web")
    return tarball


def _unpack(tarball: Path) -> dict[str, bytes]:
    """The pinned files from a package tarball: its sha512 first, then each member's sha256."""
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != TARBALL_SHA512:
        raise UsageError(f"{tarball} is not the registry's {PACKAGE}-{VERSION}.tgz (sha512-{digest[:16]}…, "
                         f"expected sha512-{TARBALL_SHA512[:16]}…)")
    files = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for name, (member, expected) in FILES.items():
            info = archive.getmember(member)  # by exact name: nothing else is read or extracted
            if not info.isfile() or info.size > MAX_FILE:
                raise UsageError(f"{tarball}: {member} is not a regular file of at most {MAX_FILE >> 20} MB")
            data = archive.extractfile(info).read()
            if hashlib.sha256(data).hexdigest() != expected:
                raise UsageError(f"{tarball}: {member} does not have the pinned sha256 {expected}")
            files[name] = data
    return files
