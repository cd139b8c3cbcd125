import io
import logging
import logging.config
import os
import sys
import warnings

import pytest

from seglab.logs import (
    NORMAL,
    QUIET,
    VERBOSE,
    VERBOSITY_ENV,
    command_log,
    last_log,
    progress_bars_enabled,
    reattach,
    verbosity,
)

BUNDLE_LIKE_CONF = """
[loggers]
keys=root
[handlers]
keys=console
[formatters]
keys=plain
[logger_root]
level=INFO
handlers=console
[handler_console]
class=StreamHandler
level=INFO
formatter=plain
args=(sys.stdout,)
[formatter_plain]
format=BUNDLE %(message)s
"""


def test_the_log_has_the_command_line_stdout_records_and_the_end(tmp_path, capsys):
    path = tmp_path / "out.log"
    with command_log(path, ["phantom", "lung", "out dir"]):
        print("a result line")
        logging.getLogger("seglab.test").info("an informational record")
        logging.getLogger("seglab.test").debug("a debug record")
    text = path.read_text()
    assert text.startswith("==== ") and "seglab phantom lung 'out dir'" in text
    assert "a result line\n" in text and "an informational record" in text
    assert "a debug record" not in text  # debug records only when verbose
    assert text.rstrip().splitlines()[-1].startswith("==== finished in ")
    assert capsys.readouterr().out == "a result line\n"  # stdout still reaches the terminal
    assert last_log() == path


def test_a_failure_is_recorded_with_its_traceback_and_raised_again(tmp_path):
    path = tmp_path / "out.log"
    with pytest.raises(RuntimeError, match="boom"):
        with command_log(path, ["x"]):
            raise RuntimeError("boom")
    text = path.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert text.rstrip().splitlines()[-1].startswith("==== failed after ")
    assert text.rstrip().endswith(": boom")


def test_reruns_append_below_the_earlier_ones(tmp_path):
    path = tmp_path / "out.log"
    for n in range(2):
        with command_log(path, [f"run{n}"]):
            print(f"line {n}")
    text = path.read_text()
    assert text.count("==== finished") == 2 and text.index("run0") < text.index("run1")


def test_no_folder_is_created_for_a_log_whose_folder_never_appears(tmp_path):
    path = tmp_path / "missing" / "out.log"
    with command_log(path, ["x"]):
        print("kept in memory")
    assert not path.parent.exists()
    assert last_log() is None


def test_records_wait_until_the_command_creates_the_folder(tmp_path):
    path = tmp_path / "made" / "out.log"
    with command_log(path, ["x"]):
        print("before the folder")
        path.parent.mkdir()
        print("after the folder")
    text = path.read_text()
    assert text.index("before the folder") < text.index("after the folder")


def test_a_store_logs_folder_is_created_once_the_store_exists(tmp_path):
    store = tmp_path / "mlruns"
    path = store / "logs" / "models-list.log"
    with command_log(path, ["models", "list"], create_folder=True):
        print("no store yet")
        store.mkdir()
    assert "no store yet" in path.read_text()


def test_a_folder_refusing_the_file_loses_the_log_quietly(tmp_path):
    path = tmp_path / "out.log"
    path.mkdir()  # a folder where the file should go: open() fails
    with command_log(path, ["x"]):
        print("nowhere to go")
    assert path.is_dir() and list(path.iterdir()) == []


def test_the_file_survives_a_bundle_logging_conf(tmp_path, capsys):
    conf = tmp_path / "logging.conf"
    conf.write_text(BUNDLE_LIKE_CONF)
    path = tmp_path / "out.log"
    with command_log(path, ["train"]):
        # what MONAI's ConfigWorkflow does: drops and closes the root's handlers
        logging.config.fileConfig(conf, disable_existing_loggers=False)
        reattach()
        logging.getLogger("ignite.engine").info("epoch 1 done")
        print("outcome")
    text = path.read_text()
    assert text.count("epoch 1 done") == 1  # from our handler; the bundle's goes to the terminal
    assert "outcome" in text and "==== finished" in text
    out = capsys.readouterr().out
    assert "BUNDLE epoch 1 done" in out
    # the root logger is as before the block
    assert not any(getattr(h, "path", None) == path for h in logging.getLogger().handlers)


@pytest.mark.parametrize(
    ("level", "shown"),
    [(QUIET, set()), (NORMAL, {"warn"}), (VERBOSE, {"warn", "info", "debug"})],
)
def test_the_level_decides_what_reaches_stderr(tmp_path, capsys, level, shown):
    with command_log(tmp_path / "out.log", ["x"], level):
        log = logging.getLogger("seglab.test")
        log.debug("debug")
        log.info("info")
        log.warning("warn")
        assert verbosity() == level
        assert progress_bars_enabled() == (level != QUIET)
    err = capsys.readouterr().err
    assert {word for word in ("debug", "info", "warn") if word in err} == shown
    if "warn" in shown:
        assert "seglab: warning: warn" in err
    assert "warn" in (tmp_path / "out.log").read_text()  # the file has it at every level


def test_python_warnings_are_one_line_on_stderr_and_kept_in_the_file(tmp_path, capsys):
    with command_log(tmp_path / "out.log", ["x"]):
        warnings.warn("weights are float64", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "seglab: warning: weights are float64\n"
    assert "UserWarning: weights are float64" in (tmp_path / "out.log").read_text()


def test_the_block_restores_stdout_logging_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(VERBOSITY_ENV, VERBOSE)
    root = logging.getLogger()
    before = (sys.stdout, list(root.handlers), root.level)
    with command_log(tmp_path / "out.log", ["x"], QUIET):
        assert os.environ[VERBOSITY_ENV] == QUIET
    assert (sys.stdout, list(root.handlers), root.level) == before
    assert os.environ[VERBOSITY_ENV] == VERBOSE


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown verbosity"):
        with command_log(None, ["x"], "loud"):
            pass


def test_no_file_still_applies_the_level(capsys):
    stream = io.StringIO()
    with command_log(None, ["x"], QUIET):
        logging.getLogger("seglab.test").warning("hidden")
        print("shown", file=stream)
    assert capsys.readouterr().err == "" and stream.getvalue() == "shown\n"
    assert last_log() is None


def test_bytes_written_to_stdout_pass_through_and_are_not_logged(tmp_path):
    path = tmp_path / "later" / "out.log"

    class Binary:
        written = []

        def write(self, data):
            self.written.append(data)
            return len(data)

        def flush(self):
            pass

    sink = Binary()
    saved = sys.stdout
    sys.stdout = sink
    try:
        with command_log(path, ["x"]):
            sys.stdout.write(b"")  # click's probe for a binary stream
            print("text")
            path.parent.mkdir()
    finally:
        sys.stdout = saved
    assert b"" in sink.written and "text" in path.read_text()
