"""Run settings (edgeface.runtime.settings): bad flags are one line naming the flag, with a suggestion; the choice
tables equal the runtime's; settings written as TOML read back, and ``edgeface run --config`` runs with them.
"""

from __future__ import annotations

import shutil

import pytest
from run_cli import NEEDS_DEFAULT, events_of, invoke

from edgeface.errors import SettingError
from edgeface.runtime.settings import RunSettings, SettingConflict

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_bad_options_are_one_line_with_a_suggestion(runtime_bundle, media_dir):
    cases = [
        (["--detector", "shrt"], "error: --detector 'shrt' is not valid (did you mean 'short'?): choose one of auto, "
                                 "short, full, haar"),
        (["--backend", "ai_edge_lite"], "error: --backend 'ai_edge_lite' is not valid (did you mean "
                                        "'ai_edge_litert'?): choose one of ai_edge_litert, tflite_runtime, tensorflow"),
        (["--preview", "localhost"], "error: --preview 'localhost' is not HOST:PORT (e.g. 127.0.0.1:8080, :8080, or "
                                     "0.0.0.0:8080 to serve the whole network)"),
        (["--fps-limit", "0"], "error: --fps-limit must be a positive number, got 0.0"),
        (["--fps-limit", "nan"], "error: --fps-limit must be a positive number, got nan"),
        (["--fps-limit", "1e-300"], "error: --fps-limit 1e-300 is below 0.001 (one frame every 1000 s)"),
    ]
    for extra, message in cases:
        result = invoke("run", "-s", media_dir / "obama2.jpg", "-m", runtime_bundle, *extra)
        assert result.exit_code == 2 and result.stderr.strip() == message, result.output
    result = invoke("run", "-m", runtime_bundle)
    assert result.exit_code == 2 and result.stderr.startswith("error: --source is required")


def test_choice_tables_equal_the_runtime_tables_and_int8_mixed_is_a_format():
    from edgeface.commands import detector_options
    from edgeface.runtime import settings
    from edgeface.runtime.bundle import FORMAT_PREFERENCE
    from edgeface.runtime.detector import DEFAULT_DETECTOR, DETECTOR_KINDS, DETECTOR_PRECISIONS, DETECTORS
    from edgeface.runtime.interpreter import BACKENDS

    # the copies kept in the settings module (the runtime modules are too heavy for --help) must not drift
    assert settings.DETECTOR_CHOICES == DETECTOR_KINDS == ("auto", *DETECTORS, "haar")
    assert settings.DETECTOR_PRECISION_CHOICES == DETECTOR_PRECISIONS
    assert detector_options.DEFAULT_DETECTOR == settings.DEFAULT_DETECTOR == DEFAULT_DETECTOR
    assert settings.BACKEND_CHOICES == BACKENDS
    assert settings.FORMAT_CHOICES == (*FORMAT_PREFERENCE, "edgetpu", "edgetpu_compiled")
    settings.check_choice("format", "int8_mixed", settings.FORMAT_CHOICES)  # a format: no error


def test_threshold_out_of_range_is_one_line_before_the_model_loads(media_dir, tmp_path):
    # a folder that is no bundle: had the models been loaded first, that would have been the error
    result = invoke("run", "-s", media_dir / "obama.jpg", "-m", tmp_path, "--threshold", "1.5")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --threshold 1.5 is not a cosine similarity: use a value between -1 and 1"


# --- the settings object, its TOML, and run --config ----------------------------------------------------------


def test_library_errors_name_the_setting_and_the_cli_names_the_flag():
    with pytest.raises(SettingError) as err:
        RunSettings(threshold=1.5, threads=0).check()  # everything, in the table's order: threads first
    assert str(err.value) == "threads must be a positive number, got 0"
    with pytest.raises(SettingError) as err:
        RunSettings(threshold=1.5, threads=0).check("threshold", "threads")  # the keys asked for, in that order
    assert str(err.value) == "threshold 1.5 is not a cosine similarity: use a value between -1 and 1"
    assert str(err.value.as_flag()) == "--threshold 1.5 is not a cosine similarity: use a value between -1 and 1"
    assert RunSettings(threads=0).check("model", "threshold") == RunSettings(threads=0)  # nothing asked was wrong
    with pytest.raises(ValueError, match="no setting 'threshhold'"):
        RunSettings().check("threshhold")
    conflict = SettingConflict("{delegate} edgetpu runs the 'edgetpu_compiled' model; drop {format} {x}",
                               ("delegate", "format"))
    assert str(conflict) == "delegate edgetpu runs the 'edgetpu_compiled' model; drop format {x}"
    assert str(conflict.as_flag()) == "--delegate edgetpu runs the 'edgetpu_compiled' model; drop --format {x}"
    assert RunSettings(detector="full").replace(detector=None, threads=2) == RunSettings(detector="full", threads=2)


@NEEDS_DEFAULT
def test_edgetpu_delegate_with_another_format_names_both_flags(media_dir, monkeypatch):
    import edgeface.runtime.interpreter as interpreter

    monkeypatch.setattr(interpreter, "check_edgetpu_library", lambda: None)  # as if libedgetpu were installed
    result = invoke("run", "-s", media_dir / "obama.jpg", "--delegate", "edgetpu", "--format", "int8", "-q")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --delegate edgetpu runs the 'edgetpu_compiled' model; drop --format int8"


def test_settings_written_as_toml_read_back_equal(tmp_path):
    settings = RunSettings(model="bundle", format="int8", detector="full", threads=4, backend="ai_edge_litert",
                           delegate="edgetpu", threshold=0.7, gallery="gallery.npz", key_file="gallery.key",
                           source="rtsp://cam/stream", capture_size="640x480", fps_limit=2.5, max_frames=100,
                           events="events.jsonl", preview="0.0.0.0:8080", preview_token_file="token",
                           save_unknown="unknown", unknown_max_files=10, unknown_max_mb=5.0, unknown_max_days=2.0,
                           track=False)
    path = tmp_path / "edgeface.toml"
    path.write_text(settings.to_toml(header="written by a test\n\nof settings", extra='[board]\nprofile = "pi4"\n'))
    assert RunSettings.from_toml(path) == settings
    path.write_text(RunSettings().to_toml())
    assert path.read_text() == "[run]\n" and RunSettings.from_toml(path) == RunSettings()
    path.write_text(settings.to_toml(keys=("model", "threads", "source")))  # as flash writes a release's
    assert RunSettings.from_toml(path) == RunSettings(model="bundle", threads=4, source="rtsp://cam/stream")


def test_a_bad_setting_in_the_config_file_is_one_line_naming_the_file_and_key(tmp_path):
    config = tmp_path / "edgeface.toml"
    for table, message in (
            ('threshold = 1.5', "threshold 1.5 is not a cosine similarity: use a value between -1 and 1"),
            ('detector = "shrt"', "detector 'shrt' is not valid (did you mean 'short'?): choose one of auto, short, "
                                  "full, haar"),
            ('threshhold = 0.5', "unknown setting 'threshhold' (did you mean 'threshold'?)"),
            ('threads = "4"', "setting 'threads' must be a whole number, got '4'"),
            ('track = "no"', "setting 'track' must be true or false, got 'no'"),
            ('threads = true', "setting 'threads' must be a whole number, got True")):
        config.write_text(f'[run]\nsource = "0"\n{table}\n')
        for extra in ([], ["--self-test"]):
            result = invoke("run", "--config", config, *extra)
            assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {config}: {message}\n")
    result = invoke("run", "--config", tmp_path / "none.toml")
    assert result.exit_code == 2 and result.stderr == f"error: settings file not found: {tmp_path / 'none.toml'}\n"


@NEEDS_DEFAULT
def test_run_config_gives_the_events_of_the_same_flags_and_flags_beside_it_win(media_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("biden.jpg", "obama.jpg", "two_people.jpg"):
        shutil.copy(media_dir / name, photos / name)
    gallery = tmp_path / "g.npz"
    assert invoke("enroll", "obama", media_dir / "obama2.jpg", "-g", gallery).exit_code == 0
    config = tmp_path / "edgeface.toml"
    config.write_text(RunSettings(source=str(photos), gallery=str(gallery), detector="full", threshold=0.9,
                                  max_frames=2).to_toml(header="the same settings as the flags below"))

    def run(*args) -> tuple[list, dict]:
        result = invoke("run", *args, "-q")
        assert result.exit_code == 0, result.output
        frames, summary = events_of(result.stdout)
        for frame in frames:
            del frame["ms"], frame["timestamp"]
        return frames, {k: summary[k] for k in ("frames", "faces", "identities", "source", "model", "detector",
                                                 "threshold", "gallery", "people")}

    by_flags = run("-s", photos, "-g", gallery, "--detector", "full", "--threshold", "0.9", "--max-frames", 2)
    assert run("--config", config) == by_flags
    assert by_flags[1]["frames"] == 2 and by_flags[1]["identities"] == {"obama": 1, "unknown": 1}
    assert by_flags[1]["detector"] == "full" and by_flags[1]["threshold"] == 0.9
    # a flag given beside the file wins; a flag left at its default (--detector auto) does not override the file
    frames, summary = run("--config", config, "--max-frames", 3, "--threshold", "0.95")
    assert (summary["frames"], summary["detector"], summary["threshold"]) == (3, "full", 0.95)
