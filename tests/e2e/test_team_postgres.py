"""The team set-up on a real database: PostgreSQL, an ``mlflow server`` on it, two Optuna workers.

A PostgreSQL server (Debian's ``postgresql``) is started on loopback for this module, with two
databases: ``mlflow`` (the tracking and registry store behind ``mlflow server``, which serves
the artifacts from its ``--artifacts-destination``) and ``optuna`` (the shared search study).
Everything else is the real ``seglab`` command in fresh processes, with only
``MLFLOW_TRACKING_URI`` pointing at the server: what a lab member types (docs/team.md).

PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` system user
in a folder under /tmp that user owns.
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from tests.e2e.conftest import require_program

pytestmark = pytest.mark.slow

#: PostgreSQL superuser made by initdb (trust authentication on loopback: a test only).
ROLE = "lab"
#: SQLAlchemy URL scheme: with SQLAlchemy 2.1 a bare ``postgresql://`` means psycopg 3, the
#: driver of seglab's ``team`` extra (and of the dev extras), so the URL a lab types works as is.
SCHEME = "postgresql"
#: Settings of a throw-away test cluster: no durability needed.
FAST_SERVER = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

TINY = {
    "network_options#unet#channels": [4, 8],
    "network_options#unet#strides": [2],
    "network_options#unet#num_res_units": 0,
    "tiling_preset": "no-overlap",
    "num_samples": 2,
    "batch_size": 2,
    "show_progress": False,
}


def unavailable(message: str) -> None:
    """Skip (locally) or fail (under CI, where .ci/run installs what is missing)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"


class Postgres:
    """A PostgreSQL cluster in a temporary folder, run as the postgres user when we are root."""

    def __init__(self, initdb: str) -> None:
        self.bin = Path(os.path.realpath(initdb)).parent
        self.folder = Path(tempfile.mkdtemp(prefix="seglab-team-pg-", dir="/tmp"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.folder)
                unavailable("running as root and there is no postgres user to run PostgreSQL")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def run(self, program: str, *args: str) -> None:
        command = [*self.prefix, str(self.bin / program), *args]
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{program} failed: {done.stderr}\n{tail(self.log)}"

    def start(self) -> None:
        self.run(
            "initdb", "-D", str(self.data), "--auth=trust", f"--username={ROLE}",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        # the postmaster is our child (not daemonised by pg_ctl start): it is reaped on exit
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [*self.prefix, str(self.bin / "postgres"), "-D", str(self.data),
                 "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                 "-k", str(self.folder), *FAST_SERVER],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, f"postgres exited:\n{tail(self.log)}"
            try:
                psycopg.connect(**self.connection("postgres")).close()
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, f"postgres not ready:\n{tail(self.log)}"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop = [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast"]
            subprocess.run([*stop, "-w", "stop"], cwd=self.folder, capture_output=True)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def connection(self, database: str) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": ROLE, "dbname": database}

    def url(self, database: str) -> str:
        return f"{SCHEME}://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        connection = psycopg.connect(**self.connection("postgres"))
        try:
            connection.autocommit = True  # CREATE DATABASE refuses a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg

        connection = psycopg.connect(**self.connection(database))
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL with databases ``mlflow`` and ``optuna``; stopped and removed after."""
    initdb = require_program("initdb", "/usr/lib/postgresql/*/bin/initdb")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is missing (psycopg[binary] is in the dev and team extras)")
    server = Postgres(initdb)
    try:
        server.start()
        # two databases: MLflow and Optuna both keep an `alembic_version` table of their own
        server.create_database("mlflow")
        server.create_database("optuna")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on the ``mlflow`` database, serving artifacts; yields (url, artifacts)."""
    from seglab.tracking.store import TrackingStore
    from seglab.workflows.ui import stop_process_group, ui_command, wait_until_healthy

    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts = folder / "artifacts"
    port = free_port()
    command = ui_command(TrackingStore(postgres.url("mlflow")), "127.0.0.1", port)
    command += ["--artifacts-destination", str(artifacts)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = folder / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(url, process, timeout=120)
        except Exception as err:
            pytest.fail(f"mlflow server did not start: {err}\n{tail(log)}")
        yield url, artifacts
    finally:
        stop_process_group(process)


class Lab:
    """A lab member's folder: runs the real ``seglab`` command with MLFLOW_TRACKING_URI set."""

    def __init__(self, folder: Path, tracking_uri: str) -> None:
        self.folder = folder
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "OMP_NUM_THREADS": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        script = Path(sys.executable).with_name("seglab")
        self.program = (
            [str(script)] if script.exists() else [sys.executable, "-m", "seglab.cli.app"]
        )
        self.started: list[subprocess.Popen] = []

    def popen(self, *args: object) -> subprocess.Popen:
        process = subprocess.Popen(
            [*self.program, *map(str, args)], cwd=self.folder, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    def seglab(self, *args: object) -> str:
        process = self.popen(*args)
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"seglab {' '.join(map(str, args))}: {err[-3000:]}"
        return out

    def stop_all(self) -> None:
        """Stop commands still running (a test that failed or timed out while waiting)."""
        from seglab.workflows.ui import stop_process_group

        for process in self.started:
            if process.poll() is None:
                stop_process_group(process, timeout=5)


@pytest.fixture(scope="module")
def lab(mlflow_server, tmp_path_factory):
    """A lab member's folder with a phantom training set ``train`` and test set ``test``."""
    member = Lab(tmp_path_factory.mktemp("lab"), mlflow_server[0])
    try:
        member.seglab("phantom", "lung", "train", "--count", "3", "--size", "128", "--seed", "0")
        member.seglab("phantom", "lung", "test", "--count", "1", "--size", "128", "--seed", "100")
        yield member
    finally:
        member.stop_all()


def local_path(artifacts: Path, uri: str) -> Path:
    """Where the server keeps ``mlflow-artifacts:/...`` under its --artifacts-destination."""
    parsed = urlparse(uri)
    assert parsed.scheme == "mlflow-artifacts", uri  # proxied by the server, not a client path
    return artifacts / parsed.path.lstrip("/")


def test_train_register_promote_and_use_a_model_through_the_server(postgres, mlflow_server, lab):
    from mlflow.tracking import MlflowClient

    from seglab.models.registry import audit_trail, evaluations_of, resolve_version
    from seglab.tracking.store import resolve_store

    url, artifacts = mlflow_server
    overrides = TINY | {"epochs": 1}
    settings = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    out = lab.seglab(
        "train", "lung", "--data", "train", "--eval-data", "test", *settings,
        "--register", "team-lung", "--output", "checkpoints",
    )  # fmt: skip
    assert "registered team-lung version 1" in out
    out = lab.seglab("models", "promote", "team-lung", "1")
    assert "team-lung @champion: version none -> 1 (promote)" in out
    out = lab.seglab("models", "list")
    assert "team-lung" in out and "@champion=1" in out

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    version = client.get_model_version("team-lung", "1")
    assert client.get_model_version_by_alias("team-lung", "champion").version == "1"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["network_options.channels"] == "[4, 8]"
    store = resolve_store(tracking_uri=url)
    (entry,) = audit_trail(store, "team-lung")
    assert (entry.action, entry.alias, entry.from_version, entry.to_version) == (
        "promote", "champion", None, "1",
    )  # fmt: skip
    (evaluation,) = evaluations_of(resolve_version(store, "models:/team-lung@champion")).values()

    # the records are in PostgreSQL, the files under the server's --artifacts-destination
    assert postgres.query("mlflow", "SELECT name FROM registered_models") == [("team-lung",)]
    assert postgres.query(
        "mlflow", f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'"
    ) == [("FINISHED",)]
    served = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/report.md" in served
    assert (local_path(artifacts, run.info.artifact_uri) / "evaluation" / "report.md").is_file()
    model_folder = local_path(artifacts, version.source)
    assert (model_folder / "MLmodel").is_file()
    assert list(model_folder.rglob("*.pt")), "no weights under the server's artifacts"

    # another process loads models:/team-lung@champion through the server and reproduces it
    lab.seglab(
        "evaluate", "--model", "models:/team-lung@champion", "--data", "test", "--out", "eval"
    )
    metrics = json.loads((lab.folder / "eval" / "metrics.json").read_text())
    assert metrics["total_dice"] == pytest.approx(evaluation.value, abs=1e-9)

    # nothing was recorded client-side: no embedded store in the user's folder
    assert not (lab.folder / "mlruns").exists()
    assert not list(lab.folder.rglob("mlflow.db"))


def test_two_search_workers_share_one_study_in_postgres(postgres, mlflow_server, lab):
    import optuna
    from mlflow.tracking import MlflowClient

    from seglab.studies.optuna_study import TAG_TRIAL, study_name
    from seglab.studies.recipes import load_recipe
    from seglab.studies.runner import TAG_PARENT

    url, _ = mlflow_server
    per_worker = 2
    recipe = lab.folder / "team-search.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "kind": "search",
                "name": "team-search",
                "experiment": "team-studies",
                "bundle": "lung",
                "data": str(lab.folder / "train"),
                "eval_data": str(lab.folder / "test"),
                "overrides": TINY | {"epochs": 2},
                "search": {
                    "trials": 2 * per_worker,
                    "startup_trials": 1,
                    "warmup_epochs": 0,
                    "space": {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True}},
                },
            }
        )
    )
    storage = postgres.url("optuna")
    workers = [
        lab.popen("search", recipe, "--storage", storage, "--trials", per_worker) for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    # one created the study, the other joined it, and each ran its share of the trials
    assert sorted(next(w for w in ("created", "joined") if w in out) for out, _ in outputs) == [
        "created",
        "joined",
    ]
    for out, _ in outputs:
        assert len(re.findall(r"^trial \d+: \{", out, flags=re.MULTILINE)) == per_worker, out

    study = optuna.load_study(study_name=study_name(load_recipe(recipe)), storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * per_worker))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    report = "\n".join(out + err[-3000:] for out, err in outputs)
    assert all(t.state in finished for t in trials), report
    # the workers drew their own parameters: none repeats another's trial
    assert len({t.params["learning_rate"] for t in trials}) == 2 * per_worker

    client = MlflowClient(tracking_uri=url)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    experiment = client.get_experiment_by_name("team-studies").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parent_id]
    assert sorted(r.data.tags[TAG_TRIAL] for r in children) == [
        str(n) for n in range(2 * per_worker)
    ]
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(
        r.info.run_id for r in children
    )
    parents = [r for r in runs if TAG_PARENT not in r.data.tags]
    assert [p.info.run_id for p in parents] == [parent_id]
    assert {r.info.status for r in runs} == {"FINISHED"}
