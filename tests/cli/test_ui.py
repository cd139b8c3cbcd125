import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from seglab.tracking.store import ensure_experiment, resolve_store
from seglab.workflows.ui import ui_command

SEGLAB = Path(sys.executable).with_name("seglab")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_command_binds_loopback_on_the_store():
    store = resolve_store(tracking_uri="sqlite:////tmp/x/mlflow.db")
    cmd = ui_command(store, "127.0.0.1", 5123)
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////tmp/x/mlflow.db"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--default-artifact-root") + 1].startswith("file://")


@pytest.mark.slow
@pytest.mark.skipif(not SEGLAB.exists(), reason="console script not installed")
def test_seglab_ui_serves_the_store_and_stops_cleanly(tmp_path):
    store = resolve_store(tmp_path / "mlruns")
    ensure_experiment(store, "visible-experiment")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [str(SEGLAB), "ui", "--store", str(tmp_path / "mlruns"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 90
        while "MLflow UI on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "seglab ui exited early"
        assert f"http://127.0.0.1:{port}" in line
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        with urllib.request.urlopen(url, timeout=10) as reply:
            names = [e["name"] for e in json.load(reply)["experiments"]]
        assert "visible-experiment" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200 and b"<html" in reply.read(2000).lower()
        server = subprocess.run(
            ["pgrep", "-f", f"mlflow server --backend-store-uri sqlite:///{tmp_path}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(server) == 1
        server_session = os.getsid(int(server[0]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # the server and its workers are gone with it: nothing accepts connections any more
    time.sleep(1)
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    # no process of seglab's session or of the server's own session is left
    for session in (proc.pid, server_session):
        left = subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True)
        assert left.stdout.strip() == ""


def test_bad_port_is_a_clear_error(capsys, tmp_path):
    from seglab.cli.app import main

    assert main(["ui", "--store", str(tmp_path), "--port", "70000"]) == 2
    assert "port must be 1..65535" in capsys.readouterr().err
