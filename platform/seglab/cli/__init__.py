"""The ``seglab`` command line: thin Typer commands over :mod:`seglab.workflows`.

:func:`main` is the console script: it first starts the process again with the tuned malloc
settings of :mod:`seglab.allocator` (before Typer or anything else is imported, so the restart
costs one bare interpreter start), then runs :func:`seglab.cli.app.main`.
"""


def main() -> int:
    """Run the ``seglab`` command (the console script's entry point)."""
    from seglab.allocator import restart_with_tuned_allocator

    restart_with_tuned_allocator()
    from seglab.cli.app import main as run_app

    return run_app()
