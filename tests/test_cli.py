"""The command line as a user meets it: help, no TensorFlow at start-up, clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgeface.cli import COMMAND_MODULES, app

runner = CliRunner()


def test_help_lists_every_command_with_a_one_line_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__
        assert name in result.stdout
        assert (cmd.callback.__doc__ or "").strip(), f"{name} has no help"
    for group in app.registered_groups:
        assert group.name in result.stdout and group.typer_instance.info.help


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgeface.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "edgeface", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip()


def test_each_command_module_imports_on_its_own_without_tensorflow():
    """A command module imported first (a plugin, a test, `python -c`) must not hit a circular import through
    edgeface.cli, which imports every command module to register it."""
    code = (
        "import importlib, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "sys.exit(f'imports {heavy}' if heavy else 0)\n"
    )
    for name in COMMAND_MODULES:
        proc = subprocess.run([sys.executable, "-c", code, f"edgeface.commands.{name}"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"edgeface.commands.{name}: {proc.stderr.strip().splitlines()[-1:]}"


@pytest.mark.parametrize("args, line", [
    (["benchmark", "--runs", "0", "model.tflite"],
     "error: Invalid value for '--runs': Input should be greater than or equal to 1 (see 'edgeface benchmark --help')"),
    (["evaluate"], "error: Missing argument 'model'. (see 'edgeface evaluate --help')"),
    (["nosuch"], "error: No such command 'nosuch'. (see 'edgeface --help')"),
    (["info", "--bogus"], "error: No such option: --bogus (see 'edgeface info --help')"),
    (["data", "prepare", "--size", "abc", "faces"], "error: Invalid value for '--size': Input should be a valid "
     "integer, unable to parse string as an integer (see 'edgeface data prepare --help')"),
])
def test_a_usage_error_is_one_line_and_exit_2(args, line):
    """Typer's own rendering of these is a usage line, a hint and a framed box; edgeface prints one line, as for
    every other user mistake."""
    proc = subprocess.run([sys.executable, "-m", "edgeface", *args], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")


def test_help_and_bare_groups_still_print_help():
    proc = subprocess.run([sys.executable, "-m", "edgeface", "run", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--gallery" in proc.stdout and proc.stderr == ""
    proc = subprocess.run([sys.executable, "-m", "edgeface", "data"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "prepare" in proc.stdout  # like Typer: a bare group shows its help, exit 2
    assert proc.stderr == ""
