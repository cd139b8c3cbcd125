"""Serve the MLflow UI on this platform's store."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from seglab.errors import SeglabError
from seglab.tracking.store import TrackingStore, fail_dead_runs, resolve_store


def ui_command(store: TrackingStore, host: str, port: int, workers: int = 1) -> list[str]:
    """Return the ``mlflow server`` command line that serves ``store`` on ``host:port``."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if store.artifact_root is not None:
        command += ["--default-artifact-root", store.artifact_root]
    return command


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``url/health`` until the server answers; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SeglabError(
                f"the MLflow UI exited with status {process.returncode} before answering",
                "check that the port is free (pass --port) and read the messages above",
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise SeglabError(f"the MLflow UI did not answer at {url} within {timeout:.0f} s", "retry")


def serve_ui(
    store_dir: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    announce=print,
) -> int:
    """Run the MLflow UI on the store until interrupted; return its exit status.

    Parameters
    ----------
    store_dir : path-like, optional
        Embedded store folder (default ``./mlruns``); ``MLFLOW_TRACKING_URI`` replaces it.
    host : str
        Interface to bind. Loopback by default: the UI has no authentication, so anything else
        exposes every run and model to the network (allowed, with a warning).
    port : int
    announce : callable
        Receives the lines to show the user (the URL first).
    """
    if not 1 <= port <= 65535:
        raise SeglabError(f"port must be 1..65535, got {port}", "pass e.g. --port 5000")
    store = resolve_store(store_dir)
    fresh = store.is_embedded and not (store.local_dir / "mlflow.db").exists()
    # a new embedded store's tables are made here, under the store's lock, not by the server
    # racing the workers that may be opening the same store now
    client = store.client()
    if fresh:
        announce(f"no runs yet in {store.local_dir}: the UI will be empty")
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
        for run_id in fail_dead_runs(store, ids):
            announce(f"marked run {run_id} FAILED: its process had died")
    if not _is_loopback(host):
        announce(
            f"warning: binding {host}: the MLflow UI has no login; anyone who can reach "
            "this machine can read every run and model"
        )

    def stop(signum, frame):  # SIGTERM stops the UI like Ctrl+C, never orphaning the server
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    # MLflow's background job runner (7 huey processes, for GenAI jobs) is not needed to browse
    # runs and models; a user who sets the variable keeps their choice.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ)
    # own process group: stopping the UI stops every process the server started
    process = subprocess.Popen(ui_command(store, host, port), env=env, start_new_session=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        wait_until_healthy(url, process)
        announce(f"MLflow UI on {url} (store {store.tracking_uri}); Ctrl+C stops it")
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process started with ``start_new_session=True`` and all it started.

    SIGTERM to the whole process group, then SIGKILL to whatever is left after ``timeout`` s.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:  # children may outlive the leader briefly
                os.killpg(process.pid, 0)
                time.sleep(0.2)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
