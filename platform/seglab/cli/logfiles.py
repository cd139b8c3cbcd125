"""Where each command's log file goes, and the wrapper that keeps it around every command.

The rule: ``OUT.log`` beside the command's output ``OUT`` (a folder or a file), so a refused or
failed command leaves its record next to where the output would have been and never inside it
(an output folder that must not exist yet stays absent). Commands without an output of their
own (``models ...``, ``ui``) log into the embedded store's ``logs/`` folder; with a tracking
server they keep no file unless ``--log-file`` names one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from seglab.errors import SeglabError
from seglab.logs import NORMAL, command_log


@dataclass
class LogSettings:
    """The root options of the running ``seglab`` invocation."""

    level: str = NORMAL
    log_file: Path | None = None
    argv: list[str] = field(default_factory=list)


#: Set by the root callback (and :func:`seglab.cli.app.main`) before a command runs.
settings = LogSettings()


def beside(path: str | os.PathLike[str]) -> Path:
    """Return ``PATH.log`` next to ``path`` (``report/`` -> ``report.log``)."""
    path = Path(path)
    return path.with_name(path.name + ".log")


def _store_logs(store: Path | None, command: str) -> Path | None:
    from seglab.tracking.store import embedded_folder

    folder = embedded_folder(store)
    return None if folder is None else folder / "logs" / f"{command.replace(' ', '-')}.log"


def _train_output(params: Mapping[str, Any]) -> Path:
    from seglab.workflows.training import DEFAULT_OUTPUT

    output = params.get("output")
    return Path(output) if output is not None else DEFAULT_OUTPUT / Path(params["bundle"]).name


def _study_output(params: Mapping[str, Any]) -> Path:
    if params.get("out") is not None:
        return Path(params["out"])
    from seglab.studies.optuna_study import default_out
    from seglab.studies.recipes import load_recipe

    return default_out(load_recipe(params["recipe"]), None)


@dataclass(frozen=True)
class LogPlace:
    """Where a command's log goes.

    Attributes
    ----------
    path : Path or None
        The log file; None for none.
    in_store : bool
        The file is in a store's ``logs/`` folder, created once the store exists.
    """

    path: Path | None
    in_store: bool = False


def log_location(command: str, params: Mapping[str, Any]) -> LogPlace:
    """Return where ``command`` (e.g. ``"morphometry run"``) called with ``params`` logs.

    No file when there is no place for one (a tracking server and no output of its own).
    ``--log-file`` replaces the rule.
    """
    if settings.log_file is not None:
        return LogPlace(settings.log_file)
    try:
        if command == "train":
            return LogPlace(beside(_train_output(params)))
        if command in ("run", "search"):
            return LogPlace(beside(_study_output(params)))
    except SeglabError:
        return LogPlace(None)  # the command itself reports the bad recipe or bundle
    if params.get("out") is not None:
        return LogPlace(beside(params["out"]))
    if "store" in params:
        return LogPlace(_store_logs(params["store"], command), in_store=True)
    return LogPlace(None)


def logged(command: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Typer command's ``callback`` so that it runs inside its command log."""

    @functools.wraps(callback)
    def run(**params: Any) -> Any:
        place = log_location(command, params)
        with command_log(place.path, settings.argv, settings.level, create_folder=place.in_store):
            return callback(**params)

    return run


def log_every_command(app: typer.Typer, prefix: str = "") -> None:
    """Wrap the callback of every command of ``app`` and of its sub-apps with :func:`logged`."""
    for info in app.registered_commands:
        if info.callback is None:
            continue
        name = info.name or info.callback.__name__.replace("_", "-")
        info.callback = logged(f"{prefix}{name}", info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            log_every_command(group.typer_instance, f"{prefix}{group.name} ")
