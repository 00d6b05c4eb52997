"""``edgeface benchmark --target``: the same benchmark, run by the board's flashed runtime over SSH.

Models named on the command line are uploaded to a scratch folder on the board first (bundles whole,
checksums included); with none, the flashed release's own bundle is measured.  The board prints its
report as JSON, which comes back here to be compared, tabulated and plotted with the local code.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

from edgeface.devices.benchmark import BenchmarkConfig, finish_report, load_reference
from edgeface.devices.inventory import Board
from edgeface.devices.remote import CURRENT, parse_json_output, q, remote_probe, upload
from edgeface.devices.ssh import SSHConnection, SSHOptions
from edgeface.errors import UserError

SCRATCH = "bench"


def _members(path: Path, prefix: str) -> tuple[list[tuple[Path, str]], str]:
    """Files to upload for one model argument, and the argument's path relative to the scratch folder."""
    from edgeface.runtime.bundle import MANIFEST_NAME, Bundle

    if path.is_dir() or path.name == MANIFEST_NAME:
        bundle = Bundle.load(path)
        files = [(bundle.root / MANIFEST_NAME, f"{prefix}/{MANIFEST_NAME}")]
        for entry in list(bundle.files) + list(bundle.manifest.get("detectors", [])):
            files.append((bundle.root / entry["path"], f"{prefix}/{entry['path']}"))
        return files, prefix
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    return [(path, f"{prefix}/{path.name}")], f"{prefix}/{path.name}"


def benchmark_args(cfg: BenchmarkConfig, models: list[str], video: Optional[str]) -> list[str]:
    """The board-side ``edgeface benchmark`` arguments for ``cfg`` (always --json)."""
    args = ["benchmark", *models, "--json", "--warmup", str(cfg.warmup), "--runs", str(cfg.runs)]
    if cfg.threads:  # else the board's own default (1 and all its cores)
        args += ["--threads", ",".join(str(t) for t in cfg.threads)]
    if cfg.delegate:
        args += ["--delegate", cfg.delegate]
    if cfg.backend:
        args += ["--backend", cfg.backend]
    for fmt in cfg.formats or []:
        args += ["--format", fmt]
    if video:
        args += ["--video", video]
        if cfg.video_frames:
            args += ["--video-frames", str(cfg.video_frames)]
    if cfg.profile:
        args += ["--profile", cfg.profile]
    return args


def run_remote_benchmark(board: Board, options: SSHOptions, cfg: BenchmarkConfig,
                         timeout: float = 3600) -> dict:
    """Benchmark on ``board`` with its current release; the report, labelled with the board's name."""
    if cfg.pairs:
        raise UserError("--pairs runs where the command is typed, not with --target: accuracy is a property of the "
                        "model file, measure it on the workstation")
    load_reference(cfg)  # before the board is even contacted
    with SSHConnection(board, options) as conn:
        ident = remote_probe(conn, board.python, "identity", board.remote_dir)
        root = ident["remote_dir"]
        exe = f"{root}/{CURRENT}/venv/bin/edgeface"
        if not conn.run(["test", "-x", exe], timeout=30).ok:
            raise UserError(f"no edgeface release on {board.address} under {root}: flash one first "
                            f"(`edgeface flash {board.address} --bundle DIR`)")
        scratch = None
        members: list[tuple[Path, str]] = []
        remote_models: list[str] = []
        remote_video = None
        if cfg.models or cfg.video:
            scratch = f"{root}/{SCRATCH}/{uuid.uuid4().hex[:12]}"
            for i, model in enumerate(cfg.models):
                files, rel = _members(Path(model), f"m{i}")
                members += files
                remote_models.append(f"{scratch}/{rel}")
            if cfg.video:
                members.append((Path(cfg.video), f"video/{Path(cfg.video).name}"))
                remote_video = f"{scratch}/video/{Path(cfg.video).name}"
        if not remote_models:
            remote_models = [f"{root}/{CURRENT}/bundle"]
        try:
            if members:
                upload(conn, scratch, members, None)
            cmd = f"cd {q(root + '/' + CURRENT)} && {q(exe)} " + " ".join(
                q(a) for a in benchmark_args(cfg, remote_models, remote_video))
            result = conn.run(cmd, timeout=timeout)
        finally:
            if scratch:
                conn.run(f"rm -rf {q(scratch)}", timeout=60)
    if not result.ok:
        # Typer draws usage errors in a box: keep the words.
        lines = [ln.strip(" │╭╮╰╯─") for ln in result.stderr.strip().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("Error")]
        reason = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")),
                      " ".join(lines[-2:]) or f"exit {result.returncode}")
        if "No such command" in reason or "No such option" in reason:
            reason += " (the board runs an older edgeface: flash a newer release)"
        raise UserError(f"benchmark on {board.name} failed: {reason}")
    report = parse_json_output(result.stdout)
    if not report or "results" not in report:
        raise UserError(f"benchmark on {board.name} printed no report: {result.stdout[:120]!r}")
    report["label"] = board.name
    finish_report(report, cfg)
    return report
