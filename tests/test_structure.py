"""The house rules of docs/architecture.md, measured from the source (scripts/structure.py): no import cycle, no
import from a layer above, imports of the package inside functions only in cli/, bounded folders, files,
functions and README."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "structure.py"


def _structure():
    spec = importlib.util.spec_from_file_location("structure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_keeps_its_structure():
    problems, figures = _structure().findings()
    assert problems == [], "\n".join(problems)
    assert figures["cycles"] == 0 and figures["imports inside functions outside cli/"] == 0


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    s = _structure()
    assert s.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert s.cycles({"a": {"b"}, "b": set()}) == []
    assert s.layer("core.samplers") < s.layer("sampling.pipeline") < s.layer("cli.main")
    source = tmp_path / "mod.py"
    source.write_text("from ..sampling import pipeline\n\ndef f():\n    from ..store import files\n")
    found = s.imports("core.mod", source, {"sampling.pipeline", "store.files"})
    assert found == [("sampling.pipeline", 1, False), ("store.files", 4, True)]
