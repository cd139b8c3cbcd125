"""The ``seglab`` command: a Typer app whose commands each call one workflow function.

Nothing heavy is imported here: ``seglab --help`` must not import torch, MONAI or MLflow
(``import monai`` alone takes seconds). Commands import their workflow inside their body.
Only this module turns :class:`seglab.errors.SeglabError` into an exit code: one line on stderr,
exit status 2, and a traceback only with ``--debug``. Any other exception is a bug: one line on
stderr naming the log file that holds its traceback, exit status 1. Every command runs inside
its command log (:mod:`seglab.cli.logfiles`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seglab import __version__
from seglab.cli import analysis, demo, logfiles, models, morphometry, phantom, studies, train, ui
from seglab.errors import SeglabError
from seglab.logs import NORMAL, QUIET, VERBOSE, last_log

app = typer.Typer(
    name="seglab",
    help="Experiment platform for microscopy image segmentation (lung structures, "
    "mitochondria in SBF-SEM stacks).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(phantom.app, name="phantom")
app.add_typer(models.app, name="models")
app.add_typer(morphometry.app, name="morphometry")
app.command("train")(train.train)
app.command("evaluate")(analysis.evaluate)
app.command("segment")(analysis.segment)
app.command("run")(studies.run)
app.command("search")(studies.search)
app.command("demo")(demo.demo)
app.command("ui")(ui.ui)
logfiles.log_every_command(app)

#: Exit status for errors in the user's input (click uses 2 for usage errors too).
EXIT_USER_ERROR = 2
#: Exit status for an unexpected exception (a bug in seglab or a library).
EXIT_INTERNAL_ERROR = 1


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seglab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bars; nothing on stderr but errors."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also seglab's informational messages on stderr."),
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            help="Append the command's log here (default: OUT.log beside the command's "
            "output OUT; store/logs/ for models and ui).",
        ),
    ] = None,
) -> None:
    """Experiment platform for microscopy image segmentation.

    Every command appends a log (its command line, output, warnings and, on failure, the
    traceback) to OUT.log beside its output OUT.
    """
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other", param_hint="--quiet")
    logfiles.settings.level = QUIET if quiet else VERBOSE if verbose else NORMAL
    logfiles.settings.log_file = log_file


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and, as a console script, exit with) its exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    logfiles.settings = logfiles.LogSettings(argv=args)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="seglab", standalone_mode=False)
    except SeglabError as err:
        if debug:
            raise
        typer.echo(f"seglab: error: {err.message}", err=True)
        return _exit(EXIT_USER_ERROR, argv)
    except typer.exceptions.TyperException as err:
        # usage errors (bad option values, unknown commands): typer's own one-line message
        show = getattr(err, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"seglab: error: {err.format_message()}", err=True)
        return _exit(err.exit_code, argv)
    except typer.Abort:
        typer.echo("seglab: aborted", err=True)
        return _exit(130, argv)
    except KeyboardInterrupt:
        typer.echo("seglab: interrupted", err=True)
        return _exit(130, argv)
    except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback in the log
        if debug:
            raise
        log = last_log()
        where = f"the traceback is in {log}" if log is not None else "--debug shows the traceback"
        problem = str(err).splitlines()[0] if str(err) else ""
        typer.echo(
            f"seglab: internal error: {type(err).__name__}: {problem} (please report it; {where})",
            err=True,
        )
        return _exit(EXIT_INTERNAL_ERROR, argv)
    code = result if isinstance(result, int) else 0
    return _exit(code, argv)


def _exit(code: int, argv: list[str] | None) -> int:
    # As a console script (argv None) exit the process; called from Python, return the code.
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
