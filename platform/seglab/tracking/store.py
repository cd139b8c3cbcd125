"""Where runs and models are recorded: the MLflow tracking store and its experiments.

The embedded default is a SQLite database ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts/``, always passed to MLflow explicitly: MLflow 3 refuses the old file store,
and a fluent call with no URI silently creates ``mlflow.db`` in whatever the current folder is.
``MLFLOW_TRACKING_URI`` (e.g. a team's ``http://mlflow.lab:5000``) replaces the embedded store
everywhere. Experiments are created with an explicit artifact location next to the database, so
artifacts never follow the current folder.

Runs carry the tags ``seglab.host``, ``seglab.pid`` and ``seglab.pid_start`` (the process's start
time), so that a run whose process died (killed, out of memory, power cut) can be recognised on
the next start and marked FAILED instead of staying RUNNING forever.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.errors import SeglabError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Folder of the embedded store, relative to the current folder unless given.
DEFAULT_STORE_DIR = Path("mlruns")
DATABASE_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

TAG_HOST = "seglab.host"
TAG_PID = "seglab.pid"
TAG_PID_START = "seglab.pid_start"
TAG_FAILURE = "seglab.failure"


@dataclass(frozen=True)
class TrackingStore:
    """A resolved MLflow store.

    Attributes
    ----------
    tracking_uri : str
        Passed to every MLflow client and to ``mlflow ui``.
    artifact_root : str or None
        Artifact location root for new experiments (a ``file://`` URI next to the database for
        the embedded store; None for a server, which decides itself).
    local_dir : Path or None
        Folder of the embedded store; None for a remote store.
    """

    tracking_uri: str
    artifact_root: str | None = None
    local_dir: Path | None = None

    @property
    def is_embedded(self) -> bool:
        """Whether this is the local SQLite store (as opposed to a server or database URL)."""
        return self.local_dir is not None

    def client(self) -> MlflowClient:
        """Return an ``MlflowClient`` bound to this store (tracking and registry).

        The first call in a process creates the embedded database's tables if needed, under a
        file lock (:func:`_create_tables`).
        """
        from mlflow.tracking import MlflowClient

        if self.local_dir is not None and self.tracking_uri not in _TABLES_READY:
            return _create_tables(self)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_artifact_location(self, name: str) -> str | None:
        """Artifact location for a new experiment called ``name`` (None: the server decides)."""
        if self.artifact_root is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"
        return f"{self.artifact_root}/{safe}"


#: Embedded stores whose tables this process has seen created (tracking URIs).
_TABLES_READY: set[str] = set()


def _create_tables(store: TrackingStore) -> MlflowClient:
    """Open ``store``'s database one process at a time, so that only one creates its tables.

    MLflow creates and migrates the tables of a new SQLite database when a client first opens
    it, without a lock: 4 processes opening a new store at the same moment failed and left it
    half-migrated (``table _alembic_tmp_tags already exists`` on every later open) in 3 of 5
    tries. Here the first client of each process is made, and both its stores (tracking and
    registry) opened, under an exclusive lock on ``.<database>.lock`` beside the database;
    later processes find the tables complete. Without ``fcntl`` (Windows) nothing is locked.
    """
    from mlflow.tracking import MlflowClient

    assert store.local_dir is not None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        fcntl = None
    database = Path(store.tracking_uri.removeprefix("sqlite:///")).name
    with open(store.local_dir / f".{database}.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
        client.search_registered_models(max_results=1)  # opens the registry store too
    _TABLES_READY.add(store.tracking_uri)
    return client


def resolve_store(
    store_dir: str | os.PathLike[str] | None = None,
    *,
    tracking_uri: str | None = None,
    check_server: bool = True,
) -> TrackingStore:
    """Decide which store to use.

    Precedence: ``tracking_uri`` given here, then the ``MLFLOW_TRACKING_URI`` environment
    variable, then the embedded SQLite store in ``store_dir`` (default ``./mlruns``).

    Parameters
    ----------
    store_dir : path-like, optional
        Folder of the embedded store; created when missing.
    tracking_uri : str, optional
        An explicit MLflow tracking URI (``http://...``, ``postgresql://...``,
        ``sqlite:///...``).
    check_server : bool
        Whether an ``http(s)://`` tracking server must answer (``GET <uri>/health`` within
        :data:`SERVER_TIMEOUT_S`; once per process and URI). MLflow itself retries an
        unreachable server for minutes before failing with a traceback.

    Returns
    -------
    TrackingStore

    Raises
    ------
    SeglabError
        A tracking URI that is not a URI, a server that does not answer, or an embedded store
        folder that cannot be created or written.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    folder = embedded_folder(store_dir, tracking_uri=uri)
    if folder is not None:
        folder = folder.resolve()
        database = Path(uri.removeprefix("sqlite:///")).name if uri else DATABASE_NAME
        return _embedded(folder, f"sqlite:///{folder / database}")
    assert uri is not None  # no embedded folder: a server or database URI
    if "://" not in uri:
        raise SeglabError(
            f"tracking URI {uri!r} is not a URI",
            "use e.g. http://host:5000, postgresql://user@host/db or sqlite:///path/mlflow.db; "
            "a plain folder is the old file store, which MLflow 3 refuses",
        )
    if check_server and uri.lower().startswith(("http://", "https://")):
        _check_server(uri)
    return TrackingStore(uri)


def embedded_folder(
    store_dir: str | os.PathLike[str] | None = None, *, tracking_uri: str | None = None
) -> Path | None:
    """Return the folder of the embedded store :func:`resolve_store` would use, or None.

    The same precedence (``tracking_uri``, ``MLFLOW_TRACKING_URI``, ``store_dir``, ``./mlruns``),
    with no side effect: nothing is created or checked. None when the URI names a server or a
    database other than a SQLite file.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    return Path(store_dir if store_dir is not None else DEFAULT_STORE_DIR)


#: Seconds a tracking server has to answer :func:`resolve_store`'s health check.
SERVER_TIMEOUT_S = 5.0
#: Tracking servers that answered in this process.
_SERVERS_UP: set[str] = set()


def _check_server(uri: str) -> None:
    """Refuse a tracking server that does not answer ``GET <uri>/health``.

    Any HTTP answer counts (a proxy may want a login for ``/health``): only a server that
    cannot be reached, refuses the connection or stays silent is refused.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    if uri in _SERVERS_UP:
        return
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    server = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}"  # no user:password
    try:
        if parts.port is not None:
            server += f":{parts.port}"
        health = f"{server}{parts.path.rstrip('/')}/health"
        with urllib.request.urlopen(health, timeout=SERVER_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, bad URLs
        reason = getattr(err, "reason", None) or err
        raise SeglabError(
            f"the MLflow tracking server {server}{parts.path} does not answer ({reason})",
            "start it (e.g. seglab ui, or mlflow server), or fix or unset MLFLOW_TRACKING_URI",
        ) from err
    _SERVERS_UP.add(uri)


def _embedded(folder: Path, uri: str) -> TrackingStore:
    try:
        (folder / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SeglabError(
            f"cannot create the MLflow store folder {folder}: {err.strerror or err}",
            "choose a writable --store folder or set MLFLOW_TRACKING_URI",
        ) from err
    if not os.access(folder, os.W_OK):
        raise SeglabError(
            f"the MLflow store folder {folder} is not writable",
            "choose a writable --store folder or set MLFLOW_TRACKING_URI",
        )
    return TrackingStore(uri, (folder / ARTIFACTS_DIR).as_uri(), folder)


def ensure_experiment(store: TrackingStore, name: str) -> str:
    """Return the id of experiment ``name``, creating it with an explicit artifact location.

    Safe when several processes create the same experiment at once: the loser of the race
    finds the winner's experiment.
    """
    from mlflow.exceptions import MlflowException

    client = store.client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise SeglabError(
                f"experiment {name!r} was deleted and is in the store's trash",
                "restore it in the MLflow UI or choose another experiment name",
            )
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=store.experiment_artifact_location(name)
        )
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def unique_run_name(prefix: str) -> str:
    """Return a run name no other run will have, never parseable as a number.

    ``"lung-unet-20261121-064512-3fa9"``: prefix, UTC time, 4 random hex digits. (MONAI's
    handler turns a numeric name into an int, and attaches to any unfinished run when no name is
    given; see ECOSYSTEM.md.)
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in prefix).strip("-") or "run"
    return f"{clean}-{stamp}-{secrets.token_hex(2)}"


def process_start_time(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields follow the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """Tags that identify the process owning a run (host, pid, process start time)."""
    pid = os.getpid() if pid is None else pid
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(pid)}
    start = process_start_time(pid)
    if start is not None:
        tags[TAG_PID_START] = start
    return tags


def owner_is_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by ``tags`` (:func:`owner_tags`) still runs.

    True or False when it can be checked from here (the same host; its start time guards
    against pid reuse); None when it cannot (another host, or no owner recorded).
    """
    if tags.get(TAG_HOST) != socket.gethostname() or TAG_PID not in tags:
        return None
    try:
        pid = int(tags[TAG_PID])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    recorded = tags.get(TAG_PID_START)
    return recorded is None or process_start_time(pid) == recorded  # pid reused: dead


def fail_dead_runs(store: TrackingStore, experiment_ids: list[str]) -> list[str]:
    """Mark RUNNING runs whose process died as FAILED; return their run ids.

    Only runs owned by a process on this host can be judged (their pid is checked, with its
    start time against pid reuse); runs from other hosts are left alone.
    """
    if not experiment_ids:
        return []
    client = store.client()
    runs = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'")
    failed = []
    for run in runs:
        if owner_is_alive(run.data.tags) is False:
            client.set_tag(run.info.run_id, TAG_FAILURE, "the process running it died")
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed


@contextlib.contextmanager
def artifact_access(store: TrackingStore) -> Iterator[None]:
    """Let MLflow's artifact repositories reach ``store``'s artifacts within the block.

    A server's ``mlflow-artifacts:`` locations are resolved through ``MLFLOW_TRACKING_URI``;
    it is set for the block and restored after (``mlflow.set_tracking_uri`` would leave it set
    for the rest of the process, and for its child processes). The embedded store's artifacts
    are plain ``file://`` locations and need nothing.
    """
    if store.is_embedded:
        yield
        return
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store.tracking_uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
