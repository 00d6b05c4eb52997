"""`edgeface benchmark` on this machine: latency tables, JSON/CSV/PNG, accuracy, the video pipeline, references."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.devices.bench_worker import latency_stats
from edgeface.devices.benchmark import board_warnings, expand_models, parse_threads
from edgeface.errors import UserError
from edgeface.runtime.bundle import default_bundle_dir

runner = CliRunner()


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def bench_report(exported_bundle, tmp_path_factory):
    """One CLI run: the bundle's two formats x 1 and 2 threads, with --json, --csv and --plot."""
    out = tmp_path_factory.mktemp("bench")
    result = invoke(["benchmark", exported_bundle, "--threads", "1,2", "--warmup", "2", "--runs", "15", "--json",
                     "--csv", out / "bench.csv", "--plot", out / "bench.png"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_latency_stats_use_every_run():
    s = latency_stats([float(v) for v in range(1, 101)])
    assert s["runs"] == 100 and s["mean_ms"] == pytest.approx(50.5) and s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["min_ms"] == 1 and s["max_ms"] == 100  # the outlier is reported, not trimmed
    assert s["fps"] == pytest.approx(1000 / 50.5) and s["std_ms"] == pytest.approx(np.std(range(1, 101), ddof=1))


def test_parse_threads():
    assert parse_threads("1,2,4") == [1, 2, 4] and parse_threads("2, 2,1") == [2, 1]
    for bad in ("a", "0", ""):
        with pytest.raises(UserError, match="--threads"):
            parse_threads(bad)


def test_board_warnings_for_governor_throttling_and_heat():
    assert board_warnings({"governor": "performance", "throttled": "0x0", "temperature_c": 50.0}) == []
    w = board_warnings({"governor": "ondemand", "throttled": "0x50005", "temperature_c": 83.0})
    assert len(w) == 3 and "'ondemand'" in w[0] and "0x50005" in w[1] and "83" in w[2]


def test_expand_models_from_bundles_and_files(exported_bundle):
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    specs = expand_models([exported_bundle])
    assert [s.format for s in specs] == [f["format"] for f in manifest["files"]]
    assert {s.model for s in specs} == {manifest["model"]["name"]}
    int8 = next(f for f in manifest["files"] if f["format"] == "int8")
    one = expand_models([exported_bundle / int8["path"]])  # a file inside a bundle keeps its names
    assert [(s.format, s.model) for s in one] == [("int8", manifest["model"]["name"])]
    assert [s.format for s in expand_models([exported_bundle], formats=["fp32"])] == ["fp32"]
    with pytest.raises(UserError, match="edgetpu_compiled"):
        expand_models([exported_bundle], delegate="edgetpu")


def test_benchmark_table_json_csv_and_plot(bench_report, exported_bundle):
    report, out = bench_report
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    formats = [f["format"] for f in manifest["files"]]
    assert [(r["format"], r["threads"]) for r in report["results"]] == [(f, t) for f in formats for t in (1, 2)]
    for r in report["results"]:
        assert r["runs"] == 15 and r["warmup"] == 2
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["fps"] == pytest.approx(1000 / r["mean_ms"]) and r["init_ms"] > 0 and r["first_ms"] > 0
        assert r["size_mb"] == pytest.approx(os.path.getsize(r["file"]) / 1e6)
        assert r["peak_rss_mb"] >= r["base_rss_mb"] > 0  # measured in a process of its own
        assert r["backend"] == "ai_edge_litert" and r["delegate"] == "cpu"
    int8 = next(r for r in report["results"] if r["format"] == "int8")
    assert int8["input"]["dtype"] in ("uint8", "int8")
    board = report["board"]
    assert board["machine"] == platform.machine() and board["cores"] == os.cpu_count()
    assert report["profile"]["name"].startswith("generic-") or board["model_from_device_tree"]
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [(r["format"], int(r["threads"])) for r in rows] == [(r["format"], r["threads"]) for r in report["results"]]
    assert float(rows[0]["p50_ms"]) == pytest.approx(report["results"][0]["p50_ms"])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_csv_flags_results_outside_tolerance(bench_report, exported_bundle, tmp_path):
    report, out = bench_report
    # A reference where fp32 was twice as fast as measured now and int8 as fast as now.
    rows = list(csv.DictReader((out / "bench.csv").open()))
    for r in rows:
        if r["format"] == "fp32":
            r["p50_ms"] = str(float(r["p50_ms"]) / 2)
    ref = tmp_path / "ref.csv"
    with ref.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from edgeface.devices.benchmark import BenchmarkConfig, finish_report

    again = json.loads(json.dumps(report))
    finish_report(again, BenchmarkConfig(models=[], reference=ref, tolerance=0.15))
    by_fmt = {(r["format"], r["threads"]): r for r in again["results"]}
    assert by_fmt[("fp32", 1)]["flag"] == "slower" and by_fmt[("fp32", 1)]["vs_reference"] == pytest.approx(1.0)
    assert by_fmt[("int8", 2)]["flag"] == "ok" and by_fmt[("int8", 2)]["vs_reference"] == pytest.approx(0.0)
    # The CLI shows the comparison column (one quick run against the same reference).
    table = invoke(["benchmark", exported_bundle, "--format", "fp32", "--threads", "1,2", "--runs", "5", "--warmup",
                    "1", "--reference", ref, "--tolerance", "1000"])
    assert table.exit_code == 0, table.output
    assert "vs ref" in table.stdout and " ok" in table.stdout


def test_accuracy_column_matches_edgeface_evaluate(exported_bundle, lfw_dir, tmp_path):
    # 12 LFW pairs from View 2 (6 same, 6 different people), raw photos aligned on the fly.
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines[:6] + lines[300:306]) + "\n")
    images = lfw_dir / "lfw-deepfunneled"
    result = invoke(["benchmark", exported_bundle, "--format", "int8", "--threads", "1", "--runs", "3", "--warmup",
                     "0", "--pairs", pairs, "--images", images, "--json"])
    assert result.exit_code == 0, result.output
    acc = json.loads(result.stdout)["results"][0]["accuracy"]
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    int8 = next(f for f in manifest["files"] if f["format"] == "int8")
    ev = invoke(["evaluate", exported_bundle / int8["path"], "--pairs", pairs, "--images", images, "--json"])
    assert ev.exit_code == 0, ev.output
    expected = json.loads(ev.stdout)
    expected = expected["verification"] if "verification" in expected else expected
    assert 0.0 <= acc <= 1.0 and acc == pytest.approx(expected["accuracy_mean"])


def test_video_pipeline_split_by_stage(exported_bundle, media_dir):
    result = invoke(["benchmark", exported_bundle, "--format", "int8", "--threads", "1", "--runs", "3", "--warmup",
                     "0", "--video", media_dir / "short_hamilton_clip.mp4", "--video-frames", "30", "--json"])
    assert result.exit_code == 0, result.output
    (video,) = json.loads(result.stdout)["video"]
    assert video["frames"] == 30 and video["faces"] >= 5  # a face is in view from frame 20 on
    stages = video["median_ms"]
    assert set(stages) == {"capture", "detect", "align", "embed", "match"}
    assert stages["detect"] > 0 and stages["embed"] > 0 and video["fps"] > 0
    # Every frame's total includes each of its stages, so each stage's median is at most the frame's.
    assert all(v <= video["median_frame_ms"] + 1e-6 for v in stages.values())
    table = invoke(["benchmark", exported_bundle, "--format", "int8", "--threads", "1", "--runs", "3", "--warmup",
                    "0", "--video", media_dir / "short_hamilton_clip.mp4", "--video-frames", "5"])
    assert table.exit_code == 0 and "detect ms" in table.stdout and "short_hamilton_clip.mp4" in table.stdout


def test_benchmark_mistakes_get_one_line(exported_bundle, tmp_path, monkeypatch):
    assert "nothing to benchmark" in one_error_line(invoke(["benchmark"]))
    assert "--threads" in one_error_line(invoke(["benchmark", exported_bundle, "--threads", "two"]))
    not_model = tmp_path / "notes.txt"
    not_model.write_text("x")
    assert "not a .tflite file" in one_error_line(invoke(["benchmark", not_model]))
    assert "name it .png" in one_error_line(invoke(["benchmark", exported_bundle, "--plot", tmp_path / "a.jpg"]))
    assert "--pairs and --images go together" in one_error_line(
        invoke(["benchmark", exported_bundle, "--pairs", not_model]))
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as on a board without the train extra
    assert "needs matplotlib" in one_error_line(invoke(["benchmark", exported_bundle, "--plot", tmp_path / "a.png"]))


# --- checked before anything is timed; the delegate in the accuracy pass; the worker's output ----------
# (run_worker replaced by a recorder: no model is loaded, nothing is measured)


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


def test_unwritable_outputs_and_a_wrong_video_fail_before_anything_is_measured(tmp_path, no_timing, media_dir):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not read: nothing is measured")
    (tmp_path / "afile").write_text("a file, not a folder\n")
    for args, message in [
        (["--csv", tmp_path / "afile" / "x.csv"], f"--csv {tmp_path}/afile/x.csv: cannot create it, "
                                                  f"{tmp_path}/afile is a file"),
        (["--plot", tmp_path / "afile" / "p.png"], f"--plot {tmp_path}/afile/p.png: cannot create it"),
    ]:
        assert message in one_error_line(invoke(["benchmark", model, "--threads", "1", *args]))
    bundle = default_bundle_dir()
    line = one_error_line(invoke(["benchmark", bundle, "--threads", "1", "--video", media_dir / "obama.jpg"]))
    assert line == f"error: --video {media_dir / 'obama.jpg'}: not a video file (got a image source)"
    assert no_timing == []


def test_pairs_accuracy_runs_with_the_delegate(tmp_path, no_timing, monkeypatch):
    """An Edge TPU-compiled file runs only through the delegate: the accuracy pass must use it too."""
    from edgeface.devices.benchmark import BenchmarkConfig, run_benchmark
    from edgeface.evaluate import verification
    from edgeface.runtime import interpreter

    made = []

    class FakeEmbedder:
        def __init__(self, path, threads=None, backend=None, delegate=None, spec=None):
            made.append(delegate)

    monkeypatch.setattr(interpreter, "Embedder", FakeEmbedder)
    monkeypatch.setattr(verification, "evaluate_pairs", lambda embedder, pairs, images: SimpleNamespace(
        accuracy_mean=0.75))
    model = tmp_path / "m_edgetpu.tflite"
    model.write_bytes(b"x")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a 1 2\na 1 b 1\n")
    accuracy = verification.FileAccuracy(pairs, tmp_path, delegate="edgetpu")  # what the CLI builds for --pairs
    report = run_benchmark(BenchmarkConfig(models=[model], threads=[1], runs=1, warmup=0, delegate="edgetpu",
                                           pairs=pairs, images=tmp_path), accuracy=accuracy)
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
