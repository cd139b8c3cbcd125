import os
import socket
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from seglab.errors import SeglabError
from seglab.tracking.store import (
    TAG_FAILURE,
    TAG_HOST,
    TAG_PID,
    ensure_experiment,
    fail_dead_runs,
    owner_tags,
    resolve_store,
    unique_run_name,
)


@pytest.fixture(autouse=True)
def no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_default_store_is_sqlite_under_mlruns_with_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = resolve_store()
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert store.artifact_root == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert store.is_embedded and (tmp_path / "mlruns" / "artifacts").is_dir()


def test_environment_uri_wins_and_explicit_uri_wins_over_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    store = resolve_store(tmp_path, check_server=False)
    assert store.tracking_uri == "http://127.0.0.1:5999" and not store.is_embedded
    assert store.experiment_artifact_location("x") is None
    explicit = resolve_store(tracking_uri=f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}")
    assert explicit.local_dir == tmp_path / "team"


def test_a_tracking_server_that_does_not_answer_is_refused_at_once(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(SeglabError, match=f"127.0.0.1:{port} does not answer.*MLFLOW_TRACKING_URI"):
        resolve_store()


def test_a_tracking_server_that_answers_is_accepted(monkeypatch):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        assert resolve_store(tracking_uri=uri).tracking_uri == uri
    finally:
        server.shutdown()
        server.server_close()


def test_a_plain_folder_is_refused_with_a_hint(tmp_path):
    with pytest.raises(SeglabError, match="old file store"):
        resolve_store(tracking_uri=str(tmp_path))


def test_experiments_get_artifacts_next_to_the_database_wherever_we_run(tmp_path, monkeypatch):
    store = resolve_store(tmp_path / "store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = ensure_experiment(store, "lung study/A")
    assert ensure_experiment(store, "lung study/A") == exp
    client = store.client()
    run = client.create_run(exp, run_name=unique_run_name("t"))
    (elsewhere / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(elsewhere / "note.txt"))
    client.set_terminated(run.info.run_id)
    stored = list((tmp_path / "store" / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and "lung_study_A" in str(stored[0])
    assert not list(elsewhere.glob("mlflow.db")) and not (elsewhere / "mlruns").exists()


def _create(args):
    uri, name = args
    return ensure_experiment(resolve_store(tracking_uri=uri), name)


def test_concurrent_experiment_creation_yields_one_experiment(tmp_path):
    store = resolve_store(tmp_path)
    ensure_experiment(store, "warm-up")  # create the schema once
    with ProcessPoolExecutor(3) as pool:
        ids = list(pool.map(_create, [(store.tracking_uri, "shared")] * 6))
    assert len(set(ids)) == 1


def test_run_names_are_unique_and_never_numeric():
    names = {unique_run_name("lung-unet") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith("lung-unet-")
        with pytest.raises(ValueError):
            int(name)
    assert unique_run_name("42").startswith("42-")
    assert unique_run_name("").startswith("run-")


DIE_SCRIPT = """
import os, signal, sys
from seglab.tracking.store import resolve_store, ensure_experiment, owner_tags
store = resolve_store(tracking_uri=sys.argv[1])
client = store.client()
run = client.create_run(ensure_experiment(store, "crash"), tags=owner_tags(), run_name="doomed-run")
print(run.info.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_runs_of_killed_processes_are_marked_failed_and_live_ones_kept(tmp_path):
    store = resolve_store(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", DIE_SCRIPT, store.tracking_uri], capture_output=True, text=True
    )
    assert proc.returncode == -9
    dead_id = proc.stdout.split()[0]
    client = store.client()
    exp = ensure_experiment(store, "crash")
    live = client.create_run(exp, tags=owner_tags(), run_name="live-run")
    foreign = client.create_run(
        exp, tags={TAG_HOST: socket.gethostname() + "-other", TAG_PID: "1"}, run_name="other-host"
    )
    assert client.get_run(dead_id).info.status == "RUNNING"
    assert fail_dead_runs(store, [exp]) == [dead_id]
    assert client.get_run(dead_id).info.status == "FAILED"
    assert TAG_FAILURE in client.get_run(dead_id).data.tags
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    assert client.get_run(foreign.info.run_id).info.status == "RUNNING"
    assert fail_dead_runs(store, [exp]) == []


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path):
    store = resolve_store(tmp_path)
    client = store.client()
    exp = ensure_experiment(store, "reuse")
    tags = owner_tags() | {"seglab.pid_start": "1"}  # our pid, but another process's start
    run = client.create_run(exp, tags=tags, run_name="reused-pid")
    assert fail_dead_runs(store, [exp]) == [run.info.run_id]


def test_store_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SeglabError, match="cannot create the MLflow store folder"):
        resolve_store(blocker / "mlruns")


def test_owner_tags_describe_this_process():
    tags = owner_tags()
    assert tags[TAG_PID] == str(os.getpid()) and tags[TAG_HOST] == socket.gethostname()
    assert Path("/proc").exists() == ("seglab.pid_start" in tags)


def test_artifact_access_sets_the_server_uri_only_inside_the_block(monkeypatch, tmp_path):
    import os

    from seglab.tracking.store import TrackingStore, artifact_access

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with artifact_access(TrackingStore("http://127.0.0.1:5999")):
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    with artifact_access(resolve_store(tmp_path / "mlruns")):  # file:// artifacts: untouched
        assert "MLFLOW_TRACKING_URI" not in os.environ
