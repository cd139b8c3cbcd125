"""``seglab ui``: the MLflow UI on this platform's store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def ui(
    store: Annotated[
        Path | None,
        typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless you mean to share it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
) -> None:
    """Start the MLflow UI on the store and print its URL; Ctrl+C stops it."""
    from seglab.workflows.ui import serve_ui

    raise typer.Exit(serve_ui(store, host=host, port=port, announce=typer.echo))
