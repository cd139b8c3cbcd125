import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.cli import logfiles
from seglab.cli.app import main
from seglab.cli.logfiles import LogPlace, beside, log_location

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).with_name("seglab"))


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_command_logs_beside_its_output(tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64")
    assert code == 0
    log = tmp_path / "ds.log"
    text = log.read_text()
    assert f"seglab phantom lung {out} --count 1 --size 64" in text.splitlines()[0]
    assert "wrote 1 lung phantoms" in text and stdout.strip() in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ds.log"]


def test_a_refused_command_keeps_its_traceback_in_the_log_and_one_line_on_stderr(tmp_path, capsys):
    out = tmp_path / "ds"
    assert run(capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64")[0] == 0
    code, _, err = run(capsys, "phantom", "lung", str(out), "--count", "1", "--size", "64")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("seglab: error: output folder")
    text = (tmp_path / "ds.log").read_text()
    assert text.count("==== finished") == 1 and "OutputExistsError" in text
    assert text.rstrip().splitlines()[-1].startswith("==== failed after")


def test_log_file_option_replaces_the_rule(tmp_path, capsys):
    log = tmp_path / "elsewhere.log"
    args = ("--log-file", str(log), "phantom", "lung", str(tmp_path / "ds"), "--size", "64")
    assert run(capsys, *args, "--count", "1")[0] == 0
    assert "wrote 1 lung phantoms" in log.read_text()
    assert not (tmp_path / "ds.log").exists()


def test_models_commands_log_into_the_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlruns"
    code, out, _ = run(capsys, "models", "list", "--store", str(store))
    assert code == 0
    text = (store / "logs" / "models-list.log").read_text()
    assert "seglab models list" in text and out.strip() in text


def test_an_unexpected_exception_is_one_line_naming_the_log(tmp_path, capsys, monkeypatch):
    import seglab.workflows.phantoms as phantoms

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(phantoms, "write_lung_phantoms", broken)
    out = tmp_path / "ds"
    code, _, err = run(capsys, "phantom", "lung", str(out))
    log = tmp_path / "ds.log"
    assert code == 1
    expected = "seglab: internal error: RuntimeError: boom (please report it; the traceback is in"
    assert err == f"{expected} {log})\n"
    assert 'raise RuntimeError("boom' in log.read_text()
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "phantom", "lung", str(out)])


def test_quiet_and_verbose_exclude_each_other(tmp_path, capsys):
    code, _, err = run(capsys, "-q", "-v", "phantom", "lung", str(tmp_path / "ds"))
    assert code == 2 and "exclude each other" in err
    assert not (tmp_path / "ds").exists()


def test_log_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(logfiles, "settings", logfiles.LogSettings())
    assert beside(tmp_path / "report") == tmp_path / "report.log"
    assert beside("labels.tif") == Path("labels.tif.log")
    train = log_location("train", {"bundle": "lung", "output": None})
    assert train == LogPlace(Path("checkpoints/lung.log"))
    assert log_location("train", {"bundle": "x", "output": tmp_path / "ck"}).path == (
        tmp_path / "ck.log"
    )
    recipe = REPO / "pipelines" / "search-demo.yaml"
    study = log_location("search", {"recipe": recipe, "out": None}).path
    assert study is not None and study.name == "report.log"
    assert study.parent.parent == Path("studies")
    assert log_location("run", {"recipe": tmp_path / "none.yaml", "out": None}).path is None
    assert log_location("models promote", {"store": None}) == LogPlace(
        Path("mlruns/logs/models-promote.log"), in_store=True
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert log_location("models list", {"store": None}).path is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/db/mlflow.db")
    assert log_location("ui", {"store": None}).path == tmp_path / "db" / "logs" / "ui.log"
    monkeypatch.setattr(logfiles, "settings", logfiles.LogSettings(log_file=tmp_path / "x.log"))
    assert log_location("ui", {"store": None}) == LogPlace(tmp_path / "x.log")


TINY_LUNG = [
    "--set", "network_options#unet#channels=[4,8]", "--set", "network_options#unet#strides=[2]",
    "--set", "network_options#unet#num_res_units=0", "--set", "epochs=1",
    "--set", "num_samples=2", "--set", "batch_size=2", "--set", "tiling_preset=no-overlap",
]  # fmt: skip


@pytest.mark.slow
def test_quiet_training_prints_only_its_outcome_and_logs_the_epochs(tmp_path, write_lung_dataset):
    # a real process: pytest's own logging plugin changes how MONAI's loggers reach stdout
    data = write_lung_dataset(tmp_path / "data", range(3), size=128)
    args = ["-q", "train", "lung", "--data", str(data), "--output", str(tmp_path / "ck")]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [SCRIPT, *args, "--store", str(tmp_path / "mlruns"), *TINY_LUNG],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    assert "Epoch" not in out and out.startswith("run ") and "checkpoints in" in out
    text = (tmp_path / "ck.log").read_text()
    assert "Epoch[1] Metrics" in text and text.count("Epoch: 1/1, Iter: 1/") == 1
    assert "==== finished" in text
