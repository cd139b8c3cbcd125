"""Command logs: a log file beside each command's outputs, and the quiet/normal/verbose levels.

Every ``seglab`` command appends to one log file: its command line, what it printed on stdout,
the log records of seglab and the libraries it drives (MONAI, MLflow, Optuna), Python warnings,
and on failure the full traceback, which the terminal shows only with ``--debug``. The file is
opened once its folder exists, so a command that fails before writing anything creates no
folder for its log; records wait in memory until then.

The level is process-wide and travels to child processes through ``SEGLAB_VERBOSITY``:

* ``quiet``: no progress bars and nothing on stderr but errors;
* ``normal``: progress bars and warnings on stderr;
* ``verbose``: also seglab's informational and debug records on stderr.

The log file receives informational records at every level (debug ones too when verbose).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shlex
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "NORMAL",
    "QUIET",
    "VERBOSE",
    "VERBOSITY_ENV",
    "CommandLog",
    "command_log",
    "last_log",
    "progress_bars_enabled",
    "quieten_consoles",
    "reattach",
    "verbosity",
]

QUIET = "quiet"
NORMAL = "normal"
VERBOSE = "verbose"
#: Environment variable holding the level, so child processes (bundle runs, workers) follow it.
VERBOSITY_ENV = "SEGLAB_VERBOSITY"
#: Records kept while the log's folder does not exist yet; older ones are dropped beyond this.
PENDING_LIMIT = 20_000

_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_active: list[CommandLog] = []
_last: list[Path] = []
#: ``path:line: Category: message`` as :func:`warnings.formatwarning` writes it.
_WARNING = re.compile(r"^.*?:\d+: \w+: (.*)$", re.MULTILINE)


def verbosity() -> str:
    """Return the level in force: ``"quiet"``, ``"normal"`` or ``"verbose"``."""
    value = os.environ.get(VERBOSITY_ENV, NORMAL)
    return value if value in (QUIET, NORMAL, VERBOSE) else NORMAL


def last_log() -> Path | None:
    """Return the log file the most recent command of this process wrote, if any."""
    return _last[-1] if _last else None


def progress_bars_enabled() -> bool:
    """Whether long work should draw progress bars (not under ``--quiet``)."""
    return verbosity() != QUIET


class _Console(logging.Formatter):
    """``seglab: warning: message`` for warnings and errors; the message alone otherwise.

    A captured Python warning (``path:line: Category: message`` and its source line) is
    shortened to its message.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":
            found = _WARNING.match(message)
            message = found.group(1) if found else message.strip()
        if record.levelno >= logging.WARNING:
            return f"seglab: {record.levelname.lower()}: {message}"
        return message


class _BesideOutput(logging.Handler):
    """Append records to ``path`` once its folder exists; keep them in memory until then.

    A folder that cannot take the file (read-only, ``/proc``) leaves the records in memory:
    the log never turns into an error of its own.
    """

    def __init__(self, path: Path, create_folder: bool = False) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.create_folder = create_folder
        self._file: TextIO | None = None
        self._pending: list[str] = []
        self._refused = False
        self.setFormatter(logging.Formatter(_FILE_FORMAT))

    @property
    def written(self) -> bool:
        """Whether the file has been opened (exists on disk)."""
        return self._file is not None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
            return
        self.write_text(text + "\n")

    def write_text(self, text: str) -> None:
        """Append ``text`` as it is (stdout lines, separators); never raises."""
        if not isinstance(text, str):
            return
        if self._file is None and not self._open():
            self._pending.append(text)
            del self._pending[:-PENDING_LIMIT]
            return
        assert self._file is not None
        try:
            self._file.write(text)
            self._file.flush()
        except (OSError, ValueError):  # a full disk or a closed file must not fail the command
            pass

    def _open(self) -> bool:
        if self._refused:
            return False
        if self.create_folder and self.path.parent.parent.is_dir():
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(exist_ok=True)
        if not self.path.parent.is_dir():
            return False
        try:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        except OSError:
            self._refused = True
            return False
        self._file.write("".join(self._pending))
        self._pending.clear()
        return True

    def close(self) -> None:
        """Leave the file open: ``fileConfig`` closes every handler, this one must outlive it."""

    def finish(self) -> None:
        """Write what is still in memory if the folder now exists, and close the file."""
        if self._file is None:
            self._open()  # the command may have created the folder on its last step
        if self._file is not None:
            self._file.close()
        super().close()


class _Tee:
    """A text stream writing to ``stream`` and, line by line, to the log file."""

    def __init__(self, stream: TextIO, log: _BesideOutput) -> None:
        self.stream = stream
        self._log = log

    def write(self, text: str) -> int:
        if isinstance(text, str):  # click probes with write(b""): bytes go to the stream alone
            self._log.write_text(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class CommandLog:
    """The log of one command: where it goes, and its handlers while the command runs.

    Parameters
    ----------
    path : Path or None
        The log file; None keeps no file (the levels still apply).
    create_folder : bool
        Create the file's folder once the folder above it exists (a store's ``logs/``).
    """

    def __init__(self, path: Path | None, create_folder: bool = False) -> None:
        self.path = path
        self.file = _BesideOutput(path, create_folder) if path is not None else None
        self.console = logging.StreamHandler(sys.stderr)
        self.console.setFormatter(_Console())
        level = verbosity()
        self.console.setLevel(
            {QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.DEBUG}[level]
        )
        self.stdout: _Tee | None = None
        #: (handler, its stream, its level) of console handlers silenced by --quiet
        self.silenced: list[tuple[logging.StreamHandler, Any, int]] = []

    @property
    def written(self) -> bool:
        """Whether the log file exists on disk."""
        return self.file is not None and self.file.written

    def handlers(self) -> list[logging.Handler]:
        """Return the handlers this log puts on the root logger."""
        return [h for h in (self.file, self.console) if h is not None]


def reattach() -> None:
    """Put the running command's file handler back on the root logger.

    ``logging.config.fileConfig`` (a MONAI bundle's ``logging.conf``) removes every handler of
    the root logger. Call this after such a configuration: the command's records reach its log
    file again; console handlers that write to the tee'd stdout are pointed at the terminal, so
    their lines are not written to the file twice.
    """
    if not _active:
        return
    log = _active[-1]
    root = logging.getLogger()
    for handler in root.handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(stream, _Tee) and isinstance(handler, logging.StreamHandler):
            handler.setStream(stream.stream)
    if log.file is not None and log.file not in root.handlers:
        root.addHandler(log.file)


class _FileOnlyStream:
    """A stream that writes to the log file alone (a console handler silenced by --quiet)."""

    def __init__(self, log: _BesideOutput) -> None:
        self._log = log

    def write(self, text: str) -> int:
        self._log.write_text(text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the file is flushed on every write."""


def quieten_consoles() -> None:
    """Under ``--quiet``, keep the libraries' console handlers off the terminal.

    Handlers of the root logger go up to WARNING (the command log's own file handler keeps the
    records). Loggers that do not propagate (MONAI's ``StatsHandler`` prints epochs through its
    own stdout handler) are pointed at the log file alone, so the file still has their lines.
    Call it once the libraries have made their loggers, e.g. after building a trainer; the
    handlers are restored when the command ends.
    """
    log = _active[-1] if _active else None
    root = logging.getLogger()
    loggers = [root, *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is not logging.StreamHandler or (log and handler is log.console):
                continue
            if log is not None:
                log.silenced.append((handler, handler.stream, handler.level))
            if logger is not root and log is not None and log.file is not None:
                handler.setStream(_FileOnlyStream(log.file))  # type: ignore[arg-type]
            else:
                handler.setLevel(max(handler.level, logging.WARNING))


def _header(argv: Sequence[str]) -> str:
    from seglab import __version__

    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = shlex.join(["seglab", *argv])
    where = f"pid {os.getpid()} on {socket.gethostname()}, in {os.getcwd()}"
    return f"==== {stamp} seglab {__version__}: {command} ({where})\n"


@contextlib.contextmanager
def command_log(
    path: str | os.PathLike[str] | None,
    argv: Sequence[str],
    level: str = NORMAL,
    create_folder: bool = False,
) -> Iterator[CommandLog]:
    """Log the command run inside the block to ``path`` and to stderr at ``level``.

    Parameters
    ----------
    path : path-like or None
        Log file, appended to (a rerun or ``--resume`` adds below the earlier runs); None for
        none.
    argv : sequence of str
        The command line without the program name, written in the file's header.
    level : {"quiet", "normal", "verbose"}
        What reaches stderr; set in ``SEGLAB_VERBOSITY`` for the block.
    create_folder : bool
        Create the file's folder once the folder above it exists (a store's ``logs/``).

    Yields
    ------
    CommandLog
        The log; a failure inside the block is recorded in the file with its traceback
        and raised again.
    """
    if level not in (QUIET, NORMAL, VERBOSE):
        raise ValueError(f"unknown verbosity {level!r}")
    _last.clear()
    previous_level = os.environ.get(VERBOSITY_ENV)
    os.environ[VERBOSITY_ENV] = level
    log = CommandLog(Path(path) if path is not None else None, create_folder)
    root = logging.getLogger()
    saved = (root.level, logging.getLogger("seglab").level, list(root.handlers))
    root.setLevel(logging.INFO)
    logging.getLogger("seglab").setLevel(logging.DEBUG if level == VERBOSE else logging.INFO)
    for handler in log.handlers():
        root.addHandler(handler)
    logging.captureWarnings(True)
    stdout = sys.stdout
    if log.file is not None:
        log.file.write_text(_header(argv))
        log.stdout = _Tee(stdout, log.file)
        sys.stdout = log.stdout
    _active.append(log)
    started = time.monotonic()
    try:
        yield log
    except BaseException as err:
        _record_end(log, started, err)
        raise
    else:
        _record_end(log, started, None)
    finally:
        _active.remove(log)
        sys.stdout = stdout
        for handler, stream, handler_level in reversed(log.silenced):
            handler.setStream(stream)
            handler.setLevel(handler_level)
        logging.captureWarnings(False)
        for handler in root.handlers[:]:
            if handler not in saved[2]:
                root.removeHandler(handler)
        for handler in saved[2]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("seglab").setLevel(saved[1])
        if log.file is not None:
            log.file.finish()
            if log.written:
                _last[:] = [log.file.path]
        if previous_level is None:
            os.environ.pop(VERBOSITY_ENV, None)
        else:
            os.environ[VERBOSITY_ENV] = previous_level


def _record_end(log: CommandLog, started: float, error: BaseException | None) -> None:
    if log.file is None:
        return
    seconds = time.monotonic() - started
    code = getattr(error, "exit_code", None)
    if error is None or code == 0:
        log.file.write_text(f"==== finished in {seconds:.1f} s\n")
        return
    if code is not None:  # typer.Exit with a status
        log.file.write_text(f"==== exited with status {code} after {seconds:.1f} s\n")
        return
    lines = traceback.format_exception(error)
    log.file.write_text("".join(lines))
    problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.file.write_text(f"==== failed after {seconds:.1f} s: {problem}\n")
