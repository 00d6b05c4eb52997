"""The package's layering, read from the sources (tests/import_graph.py): who may import whom.

Lowest first: core (errors, fileio, choices, console) < runtime (the board: no TensorFlow) < nn (Keras layers)
< data < evaluate < train < converters, distill < importers < devices < commands (the CLI).  A package imports
only packages below it, eagerly or lazily: a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import subprocess
import sys

import import_graph
import pytest

pytestmark = pytest.mark.board

# package -> the packages it may import (besides itself).  "core" holds edgeface/*.py.
ALLOWED = {
    "core": set(),
    "runtime": {"core"},
    "nn": {"core"},
    "data": {"core", "runtime"},
    "evaluate": {"core", "runtime", "data", "nn"},
    "train": {"core", "runtime", "data", "nn", "evaluate"},
    "converters": {"core", "runtime", "data", "nn", "evaluate"},
    "distill": {"core", "runtime", "data", "nn", "evaluate", "train"},
    "importers": {"core", "runtime", "nn", "distill", "converters"},
    "devices": {"core", "runtime"},
    "commands": {"core", "runtime", "nn", "data", "evaluate", "train", "converters", "distill", "importers",
                 "devices"},
}


@pytest.fixture(scope="module")
def modules():
    return import_graph.modules()


def test_every_package_imports_only_packages_below_it(modules):
    wrong = []
    for mod in modules.values():
        src = import_graph.package_of(mod.name)
        assert src in ALLOWED, f"new package {src!r}: give it a place in ALLOWED"
        for target in sorted(mod.eager | mod.lazy):
            dst = import_graph.package_of(target)
            if dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{mod.name} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles_between_packages_or_modules(modules):
    assert import_graph.cycles(import_graph.package_graph(modules)) == []
    assert import_graph.cycles(import_graph.module_graph(modules)) == []


def test_the_graph_sees_lazy_and_relative_imports(modules):
    # The reader itself: a function-level import is lazy, a module-level one eager (else the rules above check
    # nothing). commands.run imports the runtime inside its command function.
    run = modules["edgeface.commands.run"]
    assert any(t.startswith("edgeface.runtime.") for t in run.lazy)
    assert "edgeface.errors" in run.eager


def test_runtime_and_devices_modules_import_without_tensorflow(tmp_path):
    # The board install has no TensorFlow or Keras: importing any runtime or devices module must not need them.
    code = (
        "import sys, importlib, pkgutil\n"
        "for blocked in ('tensorflow', 'keras', 'tf_keras'):\n"
        "    sys.modules[blocked] = None\n"
        "import edgeface.runtime, edgeface.devices\n"
        "names = []\n"
        "for pkg in (edgeface.runtime, edgeface.devices):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "        names.append(info.name)\n"
        "print(len(names))\n"
    )
    # From an empty folder: `python -c` puts the working folder first on sys.path, and the repository's
    # edgeface/ there is not the installed package (edgeface.devices installs from devices/).
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 20


def test_every_package_in_the_tree_is_listed_for_installation(modules):
    # pyproject lists packages by hand (two live outside edgeface/): one left out works in an editable install
    # and is missing from `pip install .`, the board's install.
    import tomllib

    listed = set(tomllib.loads((import_graph.ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m.name for m in modules.values() if m.path.name == "__init__.py"}
    assert packages - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
