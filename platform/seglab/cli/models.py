"""``seglab models list | show | promote | rollback``: the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Registered models: list, show, promote (gated), roll back.")

StoreOption = Annotated[
    Path | None,
    typer.Option(help="Embedded store folder (default ./mlruns; MLFLOW_TRACKING_URI wins)."),
]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@app.command("list")
def list_models(store: StoreOption = None) -> None:
    """List registered models with their aliases and the champion's recorded metric."""
    from seglab.tracking.store import resolve_store
    from seglab.workflows.routine import describe_models

    typer.echo(_table(describe_models(resolve_store(store))))


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    store: StoreOption = None,
) -> None:
    """Show a model's versions, aliases, recorded evaluations and audit trail."""
    from seglab.tracking.store import resolve_store
    from seglab.workflows.routine import describe_model

    rows, trail = describe_model(resolve_store(store), name)
    typer.echo(f"{name}: {len(rows)} version(s)")
    typer.echo(_table(rows))
    typer.echo("audit trail:")
    if not trail:
        typer.echo("  (no alias moves yet)")
    for e in trail:
        values = ""
        if e.metric:
            before = f"{e.from_value:.4f}" if e.from_value is not None else "-"
            after = f"{e.to_value:.4f}" if e.to_value is not None else "-"
            values = f" {e.metric} {before} -> {after}"
        typer.echo(
            f"  {e.time} {e.user} {e.action} @{e.alias}: "
            f"{e.from_version or '-'} -> {e.to_version}{values} ({e.reason})"
        )


@app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="champion or candidate.")] = "champion",
    force: Annotated[
        bool, typer.Option("--force", help="Override the gate (needs --reason).")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")] = "",
    store: StoreOption = None,
) -> None:
    """Move an alias to a version; @champion only if its metric is at least the champion's."""
    from seglab.models.registry import promote as promote_version
    from seglab.tracking.store import resolve_store

    entry = promote_version(resolve_store(store), name, version, alias, force=force, reason=reason)
    previous = entry.from_version or "none"
    typer.echo(f"{name} @{alias}: version {previous} -> {entry.to_version} ({entry.action})")
    if entry.metric and entry.to_value is not None:
        before = f"{entry.from_value:.4f}" if entry.from_value is not None else "-"
        typer.echo(f"  {entry.metric}: {before} -> {entry.to_value:.4f}")


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")] = "",
    store: StoreOption = None,
) -> None:
    """Move an alias back to the version it held before the last promotion."""
    from seglab.models.registry import rollback as rollback_alias
    from seglab.tracking.store import resolve_store

    entry = rollback_alias(resolve_store(store), name, alias, reason=reason)
    typer.echo(f"{name} @{alias}: version {entry.from_version} -> {entry.to_version} (rollback)")
