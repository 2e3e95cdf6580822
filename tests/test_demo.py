"""`make demo` is what a newcomer runs first, and runs again: it must succeed every time and write only under RUN."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _demo_training_command(run: Path, minutes: float) -> list[str]:
    """The demo's ``tinydiffusion train`` command as make would run it (``make -n``)."""
    text = subprocess.run(["make", "-s", "-n", "demo", f"RUN={run}", f"MINUTES={minutes}", "STAMP="], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in text.splitlines() if "/tinydiffusion train " in line]
    return shlex.split(line, comments=True)


def test_the_demos_training_step_runs_twice_and_stays_in_its_folder(tmp_path):
    run = tmp_path / "demo"
    train = _demo_training_command(run, 0.01)
    train = [sys.executable, "-m", "tinydiffusion", *train[1:], "--model", "tiny", "--no-progress"]
    for attempt in range(2):
        done = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"attempt {attempt + 1}: {done.stderr}"
    assert sorted(p.name.split(".old-")[0] for p in run.iterdir()) == ["train", "train"]  # the first moved aside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing outside RUN


@pytest.mark.slow
def test_make_demo_twice(tmp_path):
    run = tmp_path / "demo"
    for attempt in range(2):
        done = subprocess.run(["make", "demo", f"RUN={run}", "MINUTES=0.05"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"attempt {attempt + 1}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert (run / "train" / "model" / "config.json").is_file() and (run / "shipped_fast4.png").is_file()
