"""The malformed-input corpus harness: a bad input must be refused at the boundary, cleanly.

``assert_refused(argv, names, folder, capsys)`` runs the CLI in-process and checks the four
promises: exit status 2, no traceback, a message naming each of ``names`` (the parameter or file
and the bad value), and no file under ``folder`` created, changed or removed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

from tinydiffusion.cli.main import main


def snapshot(folder: str | Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with a hash of its bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(argv: Sequence[str], names: Iterable[str], folder: str | Path, capsys) -> str:
    """Run ``tinydiffusion ARGV``; assert a clean refusal that touches nothing; return the message."""
    before = snapshot(folder)
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refuses malformed flags itself, with status 2
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {list(argv)}: {err or out}"
    assert "Traceback" not in err + out, err
    assert err.startswith("error:") or "error:" in err, err
    for name in names:
        assert name.lower() in err.lower(), f"{name!r} not named in: {err}"
    after = snapshot(folder)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return err
