"""`edgeface benchmark`: what is checked before anything is timed, the delegate in the accuracy pass, and the
worker's output, with the timing worker replaced (no model is loaded, nothing is measured)."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def no_timing(monkeypatch):
    """run_worker replaced by a recorder returning a plausible result (nothing is loaded or timed)."""
    from edgeface.devices import benchmark

    jobs = []

    def fake_worker(job, timeout=None):
        jobs.append(job)
        return {"backend": "fake", "delegate": job.get("delegate") or "cpu", "init_ms": 1.0, "first_ms": 1.0,
                "mean_ms": 1.0, "std_ms": 0.0, "min_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0,
                "max_ms": 1.0, "fps": 1000.0, "peak_rss_mb": 1.0}

    monkeypatch.setattr(benchmark, "run_worker", fake_worker)
    return jobs


def test_bad_reference_csv_fails_before_anything_is_measured(tmp_path, no_timing):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not read: nothing is measured")
    ref = tmp_path / "ref.csv"
    ref.write_text("model,format,threads\nm,tflite,1\n")  # no p50_ms column
    line = one_error_line(invoke(["benchmark", model, "--threads", "1", "--reference", ref]))
    assert "is not a benchmark CSV: it needs the columns format, model, p50_ms, threads" in line
    assert no_timing == []
    ref.write_text("model,format,threads,p50_ms\nm,tflite,one,2.0\n")
    assert f"{ref}:2: threads and p50_ms must be numbers" in one_error_line(
        invoke(["benchmark", model, "--threads", "1", "--reference", ref]))
    assert no_timing == []


def test_pairs_accuracy_runs_with_the_delegate(tmp_path, no_timing, monkeypatch):
    """An Edge TPU-compiled file runs only through the delegate: the accuracy pass must use it too."""
    from edgeface.devices.benchmark import BenchmarkConfig, run_benchmark
    from edgeface.evaluate import verification
    from edgeface.runtime import interpreter

    made = []

    class FakeEmbedder:
        def __init__(self, path, threads=None, backend=None, delegate=None):
            made.append(delegate)

    monkeypatch.setattr(interpreter, "Embedder", FakeEmbedder)
    monkeypatch.setattr(verification, "evaluate_pairs", lambda embedder, pairs, images: SimpleNamespace(
        accuracy_mean=0.75))
    model = tmp_path / "m_edgetpu.tflite"
    model.write_bytes(b"x")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a 1 2\na 1 b 1\n")
    report = run_benchmark(BenchmarkConfig(models=[model], threads=[1], runs=1, warmup=0, delegate="edgetpu",
                                           pairs=pairs, images=tmp_path))
    assert made == ["edgetpu"] and [j["delegate"] for j in no_timing] == ["edgetpu"]
    assert report["results"][0]["accuracy"] == 0.75


def test_worker_lines_that_look_like_json_but_are_not(monkeypatch):
    from edgeface.devices import benchmark

    outputs = []

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, outputs[0][0], stdout=outputs[0][1], stderr="Killed")

    monkeypatch.setattr(benchmark.subprocess, "run", fake_run)
    outputs[:] = [(0, '{"p50_ms": 2.5}\n{delegate: edgetpu (not JSON)\n')]  # a library's line after the result
    assert benchmark.run_worker({"mode": "model", "path": "m.tflite"}) == {"p50_ms": 2.5}
    outputs[:] = [(137, '{"p50_ms": 2.')]  # killed mid-write
    with pytest.raises(UserError, match=r"^the benchmark process failed \(exit 137\): Killed$"):
        benchmark.run_worker({"mode": "model", "path": "m.tflite"})


def test_default_threads_follow_the_affinity_mask_not_the_machine(monkeypatch):
    """Pinned to one CPU (taskset, a container's cpuset) the default is [1], not [1, every core of the host]."""
    from edgeface.cpus import usable_cpus
    from edgeface.devices.benchmark import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 1 and default_threads() == [1]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert default_threads() == [1, 4]
    monkeypatch.delattr(os, "sched_getaffinity")  # no affinity API (macOS): the machine's count
    assert usable_cpus() == 64
