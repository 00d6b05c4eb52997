"""`edgeface flash`, `rollback`, `status` and `benchmark --target` against a real OpenSSH server on 127.0.0.1.

The "board" is this machine: sshd started by the tests with a generated host key and user key, and a
temporary `--remote-dir`.  The runtime really is installed there: a venv made by the board's Python, with
the edgeface wheel built from this checkout and its dependencies from wheels downloaded once per run
(`--offline`, the path a board without an index takes), then `edgeface run --self-test` on the board.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.runtime.gallery_crypto import read_key_file
from edgeface.runtime.settings import RunSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sshd_server import SSHD, SSHServer, free_port, keygen  # noqa: E402

runner = CliRunner()
BOARD_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single `error:` line a failed command prints (and no traceback)."""
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    return errors[0]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SSHD} missing: CI must install openssh-server (.ci/run)")
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    server.trust()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory) -> Path:
    """The edgeface wheel built from this checkout, once for the module (flash --wheel reuses it)."""
    from edgeface.devices.wheels import build_runtime_wheel

    return build_runtime_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheelhouse")


def ssh_args(sshd, remote_dir, known_hosts=None) -> list:
    return ["-i", sshd.user_key, "--known-hosts", known_hosts or sshd.known_hosts, "--remote-dir", remote_dir,
            "--python", BOARD_PYTHON]


def current_of(remote: Path) -> str:
    return os.readlink(remote / "current")


def events_of(remote: Path) -> list[dict]:
    return [json.loads(ln) for ln in (remote / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def board(sshd, runtime_wheel, wheelhouse, exported_bundle, tmp_path_factory):
    """A board with one release flashed through the CLI (offline wheels)."""
    remote = tmp_path_factory.mktemp("board") / "edgeface"
    result = invoke(["flash", sshd.target, "--bundle", exported_bundle, "--offline", "--wheelhouse", wheelhouse,
                     "--wheel", runtime_wheel, *ssh_args(sshd, remote)])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(dir=remote, first=current_of(remote).split("/")[-1], output=result)


def test_flash_installs_a_healthy_release_and_switches_current(board, exported_bundle):
    rel = board.dir / "releases" / board.first
    assert current_of(board.dir) == f"releases/{board.first}"
    # The release tree: bundle as exported, the wheels, settings, the venv with the runtime, the health mark.
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    for entry in manifest["files"] + manifest["detectors"]:
        assert (rel / "bundle" / entry["path"]).read_bytes() == (exported_bundle / entry["path"]).read_bytes()
    assert any(p.name.startswith("edgeface-") for p in (rel / "wheels").iterdir())
    assert any(p.name.startswith("numpy-") for p in (rel / "wheels").iterdir())  # --offline brought the deps
    assert (rel / "venv" / "bin" / "edgeface").is_file()
    info = json.loads((rel / "release.json").read_text())
    assert info["id"] == board.first and info["settings"]["profile"].startswith("generic-")
    assert info["settings"]["format"] == "int8"  # the profile's format, which the bundle has
    health = json.loads((rel / "HEALTHY").read_text())
    assert health["ok"] is True and health["format"] == "int8" and all(health["checks"].values())
    # run.sh starts the runtime with the release's edgeface.toml, which holds every setting
    assert 'exec ./venv/bin/edgeface run --config edgeface.toml "$@"' in (rel / "run.sh").read_text()
    assert 'format = "int8"' in (rel / "edgeface.toml").read_text()
    run = RunSettings.from_toml(rel / "edgeface.toml")
    assert (run.model, run.format, run.source) == ("bundle", "int8", info["settings"]["source"])
    # The installed runtime runs from the release on its own.
    proc = subprocess.run([str(rel / "venv" / "bin" / "edgeface"), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip()
    # Every step was shown; the service step says why it was skipped.
    err = board.output.stderr
    for title in ("connect", "check board", "download wheels", "check free disk", "upload", "install runtime",
                  "health check", "switch current", "prune old releases"):
        assert title in err, title
    assert "skipped: systemd is not running on this board" in err
    last = events_of(board.dir)[-1]
    assert last["event"] == "flash" and last["status"] == "ok" and last["release"] == board.first


def test_status_reports_current_release_and_events(sshd, board):
    result = invoke(["status", sshd.target, "--json", *ssh_args(sshd, board.dir)])
    assert result.exit_code == 0, result.output
    st = json.loads(result.stdout)
    assert st["current"] == current_of(board.dir).split("/")[-1]
    assert [r["id"] for r in st["releases"] if r["current"]] == [st["current"]]
    assert all(r["healthy"] for r in st["releases"])
    assert st["service"]["state"] == "not installed"
    assert st["events"][-1]["event"] in ("flash", "rollback")
    assert st["identity"]["machine"] == os.uname().machine
    table = invoke(["status", sshd.target, *ssh_args(sshd, board.dir)])
    assert table.exit_code == 0 and st["current"][:15] in table.stdout


def test_devices_detect_over_ssh(sshd, board):
    result = invoke(["devices", "detect", sshd.target, "--json", "-i", sshd.user_key, "--known-hosts",
                     sshd.known_hosts, "--python", BOARD_PYTHON])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    arch = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[os.uname().machine]
    assert out["profile"] == f"generic-{arch}" and out["identity"]["cores"] == os.cpu_count()


def test_remote_benchmark_brings_the_board_report_back(sshd, board, exported_bundle):
    result = invoke(["benchmark", "--target", sshd.target, "--runs", "5", "--warmup", "1", "--json",
                     *ssh_args(sshd, board.dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    # No --threads: the board measures 1 thread and all of its cores.
    threads = sorted({1, os.cpu_count()})
    assert [(r["format"], r["threads"]) for r in report["results"]] == [
        (f["format"], t) for f in manifest["files"] for t in threads]
    for r in report["results"]:
        assert "/current/bundle/" in r["file"] and r["runs"] == 5
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["peak_rss_mb"] > 0 and r["model"] == manifest["model"]["name"]
    assert report["board"]["machine"] == os.uname().machine and report["label"] == sshd.target
    # A model given on the command line is uploaded to a scratch folder, measured, and removed.
    int8 = next(f for f in manifest["files"] if f["format"] == "int8")
    table = invoke(["benchmark", exported_bundle / int8["path"], "--target", sshd.target, "--runs", "3",
                    "--warmup", "0", "--threads", "1", *ssh_args(sshd, board.dir)])
    assert table.exit_code == 0, table.output
    assert "int8" in table.stdout and "p50" in table.stdout
    assert not any((board.dir / "bench").iterdir())


def test_inventory_group_flash_in_parallel_then_rollback(sshd, board, runtime_wheel, wheelhouse, exported_bundle,
                                                          media_dir, tmp_path):
    # A second version: the same bundle with a gallery enrolled from a real photo.
    gallery = tmp_path / "gallery.npz"
    enrolled = invoke(["enroll", "Barack Obama", media_dir / "obama.jpg", "--model", exported_bundle, "--gallery",
                       gallery])
    assert enrolled.exit_code == 0, enrolled.output
    inv = tmp_path / "boards.toml"
    inv.write_text(
        f'[defaults]\nuser = "{sshd.user}"\nidentity = "{sshd.user_key}"\npython = "{BOARD_PYTHON}"\n\n'
        f'[boards.bench]\nhost = "127.0.0.1"\nport = {sshd.port}\nprofile = "generic-{_arch()}"\n'
        f'groups = ["lab"]\nremote_dir = "{board.dir}"\n\n'
        f'[boards.ghost]\nhost = "127.0.0.1"\nport = {free_port()}\ngroups = ["lab"]\n'
    )
    before = current_of(board.dir)
    result = invoke(["flash", "lab", "--inventory", inv, "--parallel", "2", "--bundle", exported_bundle,
                     "--gallery", gallery, "--offline", "--wheelhouse", wheelhouse, "--wheel", runtime_wheel,
                     "--known-hosts", sshd.known_hosts, "--json"])
    assert "1 of 2 boards failed" in one_error_line(result)
    rows = {r["board"]: r for r in json.loads(result.stdout)}
    assert rows["bench"]["ok"] and rows["bench"]["profile"] == f"generic-{_arch()}"
    assert not rows["ghost"]["ok"] and rows["ghost"]["failed_step"] == "connect"
    assert "connection refused" in rows["ghost"]["error"]
    second = current_of(board.dir)
    assert second != before
    # Same wheels and Python as the release it replaces: its dependencies were hard-linked, not reinstalled.
    install = next(st for st in rows["bench"]["steps"] if st["step"] == "install")
    assert "hard links" in install["detail"], install
    numpy_init = sorted((board.dir / before / "venv" / "lib").glob("python3*/site-packages/numpy/__init__.py"))[0]
    twin = board.dir / second / numpy_init.relative_to(board.dir / before)
    assert twin.stat().st_ino == numpy_init.stat().st_ino
    assert (board.dir / second / "gallery.npz").read_bytes() == gallery.read_bytes()
    assert RunSettings.from_toml(board.dir / second / "edgeface.toml").gallery == "gallery.npz"

    back = invoke(["rollback", "bench", "--inventory", inv, "--known-hosts", sshd.known_hosts])
    assert back.exit_code == 0, back.output
    assert current_of(board.dir) == before
    assert "self-test passed" in back.stderr
    last = events_of(board.dir)[-1]
    assert last["event"] == "rollback" and last["status"] == "ok" and last["previous"] == second.split("/")[-1]
    # And forward again to a named release, past the lock a killed flash left on the board.
    (board.dir / ".lock").mkdir()
    (board.dir / ".lock" / "owner").write_text('{"what": "flash", "by": "ci@laptop", "since": "2026-01-01"}\n')
    fwd = ["rollback", "bench", "--inventory", inv, "--known-hosts", sshd.known_hosts, "--to", second.split("/")[-1],
           "--no-check"]
    busy = invoke(fwd)
    assert busy.exit_code == 2 and "a flash by ci@laptop since 2026-01-01 holds" in busy.stderr
    assert "run again with --break-lock" in busy.stderr and current_of(board.dir) == before
    fwd = invoke(fwd + ["--break-lock", "--json"])
    assert fwd.exit_code == 0, fwd.output
    check = next(s for s in json.loads(fwd.stdout)[0]["steps"] if s["step"] == "check")
    assert check["detail"].endswith("; removed the lock of a flash by ci@laptop since 2026-01-01")
    assert not (board.dir / ".lock").exists()  # released at the end, as always
    assert current_of(board.dir) == second
    # status of the group: the unreachable board is named, the other's status is still there
    st = invoke(["status", "--all", "--inventory", inv, "--known-hosts", sshd.known_hosts, "--json"])
    assert st.exit_code == 2 and "1 of 2 boards gave no status: ghost" in st.stderr
    statuses = {r["board"]: r for r in json.loads(st.stdout)}
    assert statuses["bench"]["current"] and "connection refused" in statuses["ghost"]["error"]


def _arch() -> str:
    return {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[os.uname().machine]


def test_failing_health_check_leaves_current_unchanged(sshd, board, runtime_wheel, wheelhouse, exported_bundle,
                                                       tmp_path):
    # A bundle whose int8 file is truncated, with a manifest updated to match: it passes the local checksum
    # check and reaches the board, where the self-test cannot load it.
    from edgeface.runtime.bundle import sha256_file

    broken = tmp_path / "broken"
    shutil.copytree(exported_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["format"] == "int8")
    data = (broken / entry["path"]).read_bytes()
    (broken / entry["path"]).write_bytes(data[: len(data) // 2])
    entry["sha256"] = sha256_file(broken / entry["path"])
    (broken / "manifest.json").write_text(json.dumps(manifest))
    before = current_of(board.dir)
    releases = sorted(p.name for p in (board.dir / "releases").iterdir())
    result = invoke(["flash", sshd.target, "--bundle", broken, "--offline", "--wheelhouse", wheelhouse, "--wheel",
                     runtime_wheel, *ssh_args(sshd, board.dir)])
    line = one_error_line(result)
    assert "failed at step 'health'" in line and "self-test" in line
    assert f"stays on release {before.split('/')[-1]}" in line
    assert current_of(board.dir) == before
    assert sorted(p.name for p in (board.dir / "releases").iterdir()) == releases  # the failed one is gone
    last = events_of(board.dir)[-1]
    assert last["status"] == "failed" and last["step"] == "health" and last["current"] == before.split("/")[-1]


def test_corrupted_bundle_is_refused_before_reaching_the_board(sshd, board, runtime_wheel, exported_bundle,
                                                                tmp_path):
    broken = tmp_path / "tampered"
    shutil.copytree(exported_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    path = broken / manifest["files"][0]["path"]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    n_events = len(events_of(board.dir))
    result = invoke(["flash", sshd.target, "--bundle", broken, "--wheel", runtime_wheel, *ssh_args(sshd, board.dir)])
    assert "checksum mismatch" in one_error_line(result)
    assert len(events_of(board.dir)) == n_events  # the board was never contacted


def test_dropped_connection_mid_upload_keeps_the_previous_release(sshd, board, runtime_wheel, wheelhouse,
                                                                 exported_bundle):
    from edgeface.devices.flash import FlashConfig, flash_board
    from edgeface.devices.inventory import Board
    from edgeface.devices.release import prepare_release
    from edgeface.devices.ssh import SSHOptions

    cfg = FlashConfig(bundle=exported_bundle, offline=True, wheelhouse=wheelhouse, wheel=runtime_wheel)
    local = prepare_release(cfg.bundle, wheel=cfg.wheel)
    target = Board(name="bench", host="127.0.0.1", port=sshd.port, user=sshd.user, identity=sshd.user_key,
                   remote_dir=str(board.dir), python=BOARD_PYTHON)
    before = current_of(board.dir)
    releases = sorted(p.name for p in (board.dir / "releases").iterdir())
    killed = []

    def cut_the_link(done: int, total: int) -> None:
        # A quarter through, the transfer is surely flowing over the connection (not in a pipe buffer).
        if not killed and total // 4 < done < total:
            killed.append(sshd.drop_connections())  # kill sshd's side of the connection mid-transfer

    try:
        res = flash_board(target, cfg, local, SSHOptions(known_hosts=sshd.known_hosts), upload_progress=cut_the_link)
    finally:
        local.cleanup()
    assert killed and killed[0] >= 1
    assert not res.ok and res.failed_step == "upload", res
    assert "connection" in res.error.lower()
    assert res.release == before.split("/")[-1]
    assert current_of(board.dir) == before
    assert sorted(p.name for p in (board.dir / "releases").iterdir()) == releases
    incoming = board.dir / ".incoming"
    assert not incoming.exists() or not any(incoming.iterdir())  # the partial upload was cleaned up
    # The board still answers and runs the same release.
    st = invoke(["status", sshd.target, "--json", *ssh_args(sshd, board.dir)])
    assert st.exit_code == 0 and json.loads(st.stdout)["current"] == before.split("/")[-1]


def test_changed_host_key_is_refused(sshd, board, tmp_path):
    keygen(tmp_path / "other")
    pub = (tmp_path / "other.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    for extra in ([], ["--accept-new-host-key"]):
        result = invoke(["status", sshd.target, *ssh_args(sshd, board.dir, known), *extra])
        line = one_error_line(result)
        assert "host key" in line and "CHANGED" in line and "ssh-keygen -R" in line


def test_unknown_host_key_needs_accept_new(sshd, board, tmp_path):
    known = tmp_path / "known_hosts"
    result = invoke(["status", sshd.target, *ssh_args(sshd, board.dir, known)])
    assert "--accept-new-host-key" in one_error_line(result)
    accepted = invoke(["status", sshd.target, "--accept-new-host-key", *ssh_args(sshd, board.dir, known)])
    assert accepted.exit_code == 0, accepted.output
    assert known.read_text().strip()  # the key was recorded
    again = invoke(["status", sshd.target, *ssh_args(sshd, board.dir, known)])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("case", ["unreachable", "wrong-user", "no-space"])
def test_connection_and_space_problems_give_one_clear_line(case, sshd, board, runtime_wheel, exported_bundle):
    target = sshd.target
    extra: list = []
    if case == "unreachable":
        target = f"{sshd.user}@127.0.0.1:{free_port()}"
        expected = "connection refused"
    elif case == "wrong-user":
        target = f"nosuchuser@127.0.0.1:{sshd.port}"
        expected = "refused for user nosuchuser"
    else:
        extra = ["--min-free-mb", "1e12"]
        expected = "not enough disk space"
    before = current_of(board.dir)
    result = invoke(["flash", target, "--bundle", exported_bundle, "--wheel", runtime_wheel, *extra,
                     *ssh_args(sshd, board.dir)])
    assert expected in one_error_line(result)
    assert current_of(board.dir) == before



def test_encrypted_gallery_goes_with_its_key_kept_apart(sshd, board, runtime_wheel, wheelhouse, exported_bundle,
                                                        media_dir, tmp_path):
    key_file = tmp_path / "gallery.key"
    assert invoke(["gallery", "keygen", "--out", key_file]).exit_code == 0
    gallery = tmp_path / "sealed.npz"
    enrolled = invoke(["enroll", "Barack Obama", media_dir / "obama.jpg", "--model", exported_bundle, "--gallery",
                       gallery, "--key-file", key_file])
    assert enrolled.exit_code == 0, enrolled.output
    os.chmod(gallery, 0o644)  # opened up here: it must still land 0600 on the board
    secret = key_file.read_text().strip()
    before = current_of(board.dir)
    common = ["--bundle", exported_bundle, "--gallery", gallery, "--offline", "--wheelhouse", wheelhouse, "--wheel",
              runtime_wheel, *ssh_args(sshd, board.dir)]

    # Refused before the board is touched: no key, a wrong key; and a --board-key-file the board lacks
    assert "is encrypted: pass --key-file" in one_error_line(invoke(["flash", sshd.target, *common]))
    other = tmp_path / "other.key"
    assert invoke(["gallery", "keygen", "--out", other]).exit_code == 0
    assert "give the gallery's own key" in one_error_line(invoke(["flash", sshd.target, *common, "--key-file", other]))
    missing = invoke(["flash", sshd.target, *common, "--board-key-file", str(board.dir / "nowhere.key")])
    assert "no such file on" in one_error_line(missing)
    assert current_of(board.dir) == before

    result = invoke(["flash", sshd.target, *common, "--key-file", key_file])
    assert result.exit_code == 0, result.output
    rel = board.dir / current_of(board.dir)
    key_id = read_key_file(key_file).key_id
    on_board = board.dir / "keys" / f"gallery-{key_id}.key"
    assert on_board.read_text().strip() == secret
    assert stat.S_IMODE(on_board.stat().st_mode) == 0o600 and stat.S_IMODE(on_board.parent.stat().st_mode) == 0o700
    assert (rel / "gallery.npz").read_bytes() == gallery.read_bytes()
    assert stat.S_IMODE((rel / "gallery.npz").stat().st_mode) == 0o600
    assert RunSettings.from_toml(rel / "edgeface.toml").key_file == str(on_board)
    # the key is in its file alone: not in the release, the settings, the events log or flash's output
    for text in [result.output, (board.dir / "events.jsonl").read_text()] + \
            [p.read_text() for p in rel.iterdir() if p.is_file() and p.suffix != ".npz"]:
        assert secret not in text
    # the board's runtime, started as the service starts it (run.sh: the settings of edgeface.toml, a source given
    # beside them winning), opens it with that key and names the enrolled face
    proc = subprocess.run([str(rel / "run.sh"), "-s", str(media_dir / "obama.jpg"), "-q"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frame = next(json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith('{"frame"'))
    assert [d["identity"] for d in frame["detections"]] == ["Barack Obama"]
    # --board-key-file: the user placed the key; flash checks it is there and private, and points run.sh at it
    os.chmod(on_board, 0o644)
    opened = invoke(["flash", sshd.target, *common, "--board-key-file", str(on_board)])
    assert "other accounts can read it; run `chmod 600" in one_error_line(opened)
    os.chmod(on_board, 0o600)


# --- the service step's undo, on a stand-in board (no sshd, no systemd needed) -------------------------


FAKE_SYSTEMCTL = """#!/bin/sh
# Records every call; `is-active` answers with the next line of $FAKE_ANSWERS (failed, active, ...).
echo "$*" >> "$FAKE_LOG"
[ "$1" = "--user" ] && shift
if [ -n "$FAKE_FAIL" ] && [ "$1" = "$FAKE_FAIL" ]; then
    echo "Failed to $1 unit: Access denied" >&2
    exit 1
fi
if [ "$1" = "is-active" ]; then
    head -n 1 "$FAKE_ANSWERS"
    sed -i 1d "$FAKE_ANSWERS"
fi
exit 0
"""


class LocalBoard:
    """A board whose shell is this machine's `sh`, with a fake `systemctl` first on PATH."""

    def __init__(self, tmp_path: Path, answers: list[str], fail: str = "") -> None:
        from edgeface.devices.inventory import Board

        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
        (bin_dir / "systemctl").chmod(0o755)
        self.log = tmp_path / "systemctl.log"
        self.log.write_text("")
        (tmp_path / "answers").write_text("".join(a + "\n" for a in answers))
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(self.log),
                    "FAKE_ANSWERS": str(tmp_path / "answers"), "FAKE_FAIL": fail}
        self.board = Board(name="fake", host="127.0.0.1")

    def run(self, argv, input=None, timeout=120):
        from edgeface.devices.ssh import Result, remote_command

        p = subprocess.run(["sh", "-c", remote_command(argv)], input=input, capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)

    def check(self, argv, what, **kwargs):
        from edgeface.errors import UserError

        result = self.run(argv, **kwargs)
        if not result.ok:
            raise UserError(f"{what} failed: {result.tail()}")
        return result

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def service_board(tmp_path, monkeypatch):
    """make(answers, previous, had_service, fail) -> (conn, flash, root, unit path): a user-mode service, the new
    release r2 just made current; ``had_service`` installs an earlier flash's unit and service.json first;
    ``fail`` names a systemctl verb that fails (exit 1)."""
    from edgeface.devices import service
    from edgeface.devices.flash import Flash, FlashConfig

    monkeypatch.setattr(service, "SERVICE_SETTLE_S", 0.0)
    root, home = tmp_path / "edgeface", tmp_path / "home"
    unit = home / ".config" / "systemd" / "user" / "edgeface.service"

    def make(answers, previous, had_service, fail=""):
        for rid in ("r1", "r2"):
            (root / "releases" / rid).mkdir(parents=True)
        os.symlink("releases/r2", root / "current")  # the switch step has run
        if had_service:
            unit.parent.mkdir(parents=True)
            unit.write_text("OLD UNIT\n")
            info = {"mode": "user", "name": "edgeface", "unit": str(unit), "uid": 1000}
            (root / "service.json").write_text(json.dumps(info) + "\n")
        conn = LocalBoard(tmp_path, answers, fail)
        flash = Flash(conn, FlashConfig(bundle=tmp_path, service="user"), local=None)
        flash.root, flash.release_id, flash.state, flash.switched = str(root), "r2", {"current": previous}, True
        flash.identity = {"systemd": True, "uid": 1000, "home": str(home), "user": "pi"}
        return conn, flash, root, unit

    return make


def test_failing_service_on_a_first_flash_removes_the_unit(service_board):
    from edgeface.devices.flash import _service
    from edgeface.errors import UserError

    make = service_board
    conn, flash, root, unit = make(["failed"], previous=None, had_service=False)
    with pytest.raises(UserError, match=r"edgeface service did not stay up on the new release \(failed: .*\); no "
                                        r"previous release to go back to; the edgeface unit was removed"):
        _service(flash)
    # Left enabled with Restart=on-failure, the unit would restart a release that no longer exists, forever.
    assert not unit.exists() and not (root / "service.json").exists()
    calls = conn.calls()
    assert "--user disable --now edgeface" in calls and calls.index("--user disable --now edgeface") > \
        calls.index("--user restart edgeface")
    assert flash.switched  # flash's recovery then removes the `current` link


def test_failing_service_over_a_release_without_one_starts_nothing(service_board):
    from edgeface.devices.flash import _service
    from edgeface.errors import UserError

    make = service_board
    conn, flash, root, unit = make(["failed"], previous="r1", had_service=False)
    with pytest.raises(UserError, match=r"; back on release r1; the edgeface unit was removed$"):
        _service(flash)
    assert os.readlink(root / "current") == "releases/r1" and not flash.switched
    assert not unit.exists() and not (root / "service.json").exists()
    assert [c for c in conn.calls() if "restart" in c] == ["--user restart edgeface"]  # never on r1


def test_failing_service_puts_the_old_unit_back_and_restarts_it(service_board):
    from edgeface.devices.flash import _service
    from edgeface.errors import UserError

    make = service_board
    conn, flash, root, unit = make(["failed", "active"], previous="r1", had_service=True)
    old = json.loads((root / "service.json").read_text())
    with pytest.raises(UserError, match=r"did not stay up on the new release \(failed: .*\); back on release r1$"):
        _service(flash)
    assert os.readlink(root / "current") == "releases/r1"
    assert unit.read_text() == "OLD UNIT\n" and json.loads((root / "service.json").read_text()) == old
    calls = conn.calls()
    assert calls.count("--user restart edgeface") == 2 and not [c for c in calls if "disable" in c]


@pytest.mark.parametrize("had_service", [False, True])
def test_a_unit_that_cannot_be_enabled_leaves_the_service_as_it_was(service_board, had_service):
    """systemctl refusing `enable` after the unit file was written: a first flash's unit is removed, an earlier
    flash's unit and service.json come back (the new unit overwrote them)."""
    from edgeface.devices.flash import _service
    from edgeface.errors import UserError

    make = service_board
    conn, flash, root, unit = make([], previous="r1" if had_service else None, had_service=had_service,
                                 fail="enable")
    old = (root / "service.json").read_text() if had_service else None
    with pytest.raises(UserError, match=r"^enabling the service failed: Failed to enable unit: Access denied; the "
                                        r"board's service was left as it was before this flash$"):
        _service(flash)
    if had_service:
        assert unit.read_text() == "OLD UNIT\n" and (root / "service.json").read_text() == old
    else:
        assert not unit.exists() and not (root / "service.json").exists()
    assert not [c for c in conn.calls() if "restart" in c]  # nothing was started on the new release


def test_a_step_that_crashes_is_recorded_as_failed():
    from edgeface.devices.steps import FlashResult, StepRunner

    seen = []
    runner_ = StepRunner(FlashResult(board="b", address="a"), lambda board, step: seen.append(step))

    def bug() -> str:
        raise KeyError("profile")

    with pytest.raises(KeyError):
        runner_.run("check", bug)
    assert [(s.step, s.status) for s in seen] == [("check", "running"), ("check", "failed")]
    assert runner_.result.steps[-1].detail == "KeyError: 'profile'"


def test_low_disk_hint_does_not_promise_what_keep_cannot_do(tmp_path):
    from edgeface.devices.flash import Flash, FlashConfig, _space
    from edgeface.errors import UserError

    wheel = tmp_path / "edgeface-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x" * 1000)
    local = SimpleNamespace(bundle_files=[], gallery=None)
    flash = Flash(None, FlashConfig(bundle=tmp_path, offline=True), local)
    flash.wheels, flash.identity, flash.root = [wheel], {"free_bytes": 5e6, "hostname": "pi"}, "/home/pi/.edgeface"
    with pytest.raises(UserError) as exc:
        _space(flash)
    message = str(exc.value)
    assert message.startswith("not enough disk space on pi: 5.0 MB free under /home/pi/.edgeface")
    assert "pruned only after a flash succeeds" in message and "or lower --keep" not in message


def test_a_restart_that_gets_no_answer_puts_the_old_service_back(service_board):
    """The link dropping (or the 120 s limit passing) right after `systemctl restart`: the new release is not
    known to be up, so the board gets its old unit back on the previous release, as for a failed restart."""
    from edgeface.devices.flash import _service
    from edgeface.errors import UserError

    make = service_board
    conn, flash, root, unit = make(["active"], previous="r1", had_service=True)
    plain_run = conn.run
    lost = []

    def run(argv, **kwargs):
        if "is-active" in str(argv) and not lost:
            lost.append(argv)
            raise UserError("the connection to 127.0.0.1 was lost")
        return plain_run(argv, **kwargs)

    conn.run = run
    with pytest.raises(UserError, match=r"did not stay up on the new release \(the connection to 127.0.0.1 was "
                                        r"lost\); back on release r1$"):
        _service(flash)
    assert os.readlink(root / "current") == "releases/r1" and not flash.switched
    assert unit.read_text() == "OLD UNIT\n"
    assert conn.calls().count("--user restart edgeface") == 2  # the new release, then the old one again


def test_a_new_service_name_removes_the_unit_an_earlier_flash_installed(service_board):
    import dataclasses

    from edgeface.devices.flash import _service

    make = service_board
    conn, flash, root, unit = make(["active"], previous="r1", had_service=True)
    flash.cfg = dataclasses.replace(flash.cfg, service_name="door-cam")
    detail = _service(flash)
    assert "the previous unit edgeface was removed" in detail
    assert not unit.exists() and (unit.parent / "door-cam.service").is_file()
    assert json.loads((root / "service.json").read_text())["name"] == "door-cam"
    assert "--user disable --now edgeface" in conn.calls()
    # --service none over an installed unit: the release switches, and the output says the unit runs the old one
    flash.cfg = dataclasses.replace(flash.cfg, service="none")
    detail = _service(flash)
    assert "the user unit door-cam an earlier flash installed still runs the previous release" in detail


def test_one_flash_or_rollback_at_a_time_per_board(tmp_path):
    from edgeface.devices.remote import acquire_lock, check_remote_dir, release_lock
    from edgeface.errors import UserError

    conn = LocalBoard(tmp_path, [])
    root = str(tmp_path / "deploy")
    assert acquire_lock(conn, root, "flash") == ""
    with pytest.raises(UserError, match=r"^127.0.0.1 is busy: a flash by \S+ since \S+ holds .*/deploy/.lock; "
                                        r"wait for it, or if it is no longer running .*run again with --break-lock$"):
        acquire_lock(conn, root, "rollback")
    release_lock(conn, root)
    acquire_lock(conn, root, "rollback")  # free again
    # a lock left by a killed command: --break-lock takes it over, says whose it was and logs it on the board
    holder = acquire_lock(conn, root, "flash", break_lock=True)
    assert re.fullmatch(r"a rollback by \S+ since \S+", holder)
    owner = json.loads((tmp_path / "deploy" / ".lock" / "owner").read_text())
    assert owner["what"] == "flash"
    event = json.loads((tmp_path / "deploy" / "events.jsonl").read_text().splitlines()[-1])
    assert event["event"] == "break-lock" and event["message"] == f"removed the lock of {holder}"
    for bad in ('/home/pi/$(reboot)', '/home/pi/a;b', '/srv/50%', '/home/pi/"x"'):
        with pytest.raises(UserError, match="pip and systemd cannot use such a path"):
            check_remote_dir(bad, "pi@door")
    check_remote_dir("/home/pi/my edgeface's dir", "pi@door")  # spaces and quotes are fine


def test_rollback_goes_to_what_ran_before_not_to_the_next_older_id():
    from edgeface.devices.manage import previous_in_history

    # flash X, flash Y, roll back to X, flash Z: before Z ran X, though Y's id is newer
    events = [{"event": "flash", "status": "ok", "current": "X", "previous": None},
              {"event": "flash", "status": "ok", "current": "Y", "previous": "X"},
              {"event": "rollback", "status": "ok", "current": "X", "previous": "Y"},
              {"event": "flash", "status": "failed", "current": "X", "previous": "X"},
              {"event": "flash", "status": "ok", "current": "Z", "previous": "X"}]
    assert previous_in_history(events, "Z") == "X"
    assert previous_in_history(events, "X") == "Y"  # the last event that made X current: the rollback from Y
    assert previous_in_history(events, "W") is None and previous_in_history([], "Z") is None


def test_the_unit_quotes_a_folder_with_spaces_and_percent():
    from edgeface.devices.service import unit_file

    unit = unit_file("user", "/home/pi/my 100% dir", "pi", "r1")
    assert 'ExecStart="/home/pi/my 100%% dir/current/run.sh"\n' in unit
    assert "WorkingDirectory=/home/pi/my 100%% dir/current\n" in unit
