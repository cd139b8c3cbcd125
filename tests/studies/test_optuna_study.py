"""Optuna storages as workers open them: at the same moment, and with bad URLs."""

import subprocess
import sys
import time

import pytest

from seglab.errors import SeglabError
from seglab.studies.optuna_study import _redacted, resolve_storage

OPEN = """
import sys, time
from seglab.studies.optuna_study import resolve_storage
from seglab.tracking.store import resolve_store
start = float(sys.argv[1])
while time.time() < start:
    pass
resolve_storage(sys.argv[2], resolve_store(sys.argv[3]))
"""


def test_four_workers_opening_a_new_sqlite_storage_at_once_all_succeed(tmp_path):
    # Without the retry, 1 to 3 of 4 processes failed here on the schema-version insert.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    start = str(time.time() + 5)  # after every interpreter has imported seglab
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, start, url, str(tmp_path / "mlruns")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(w.wait(timeout=120), w.stderr.read()) for w in workers]
    assert [code for code, _ in results] == [0, 0, 0, 0], [err[-500:] for _, err in results]


def test_storage_specs(tmp_path, monkeypatch):
    from seglab.tracking.store import resolve_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = resolve_store(tmp_path / "mlruns")
    default = resolve_storage(None, store)
    assert default.url == f"sqlite:///{(tmp_path / 'mlruns' / 'optuna.db').resolve()}"
    journal = resolve_storage(f"journal:{tmp_path / 'j.log'}", store)
    assert type(journal).__name__ == "JournalStorage"
    with pytest.raises(SeglabError, match="the folder of journal storage .* does not exist"):
        resolve_storage(f"journal:{tmp_path / 'no' / 'j.log'}", store)
    with pytest.raises(SeglabError, match="cannot open Optuna storage nosuch://x"):
        resolve_storage("nosuch://x", store)


def test_passwords_are_not_printed():
    assert _redacted("postgresql://lab:s3cret@db.example:5432/optuna") == (
        "postgresql://lab:***@db.example:5432/optuna"
    )
    assert _redacted("sqlite:///x.db") == "sqlite:///x.db"
    assert _redacted("postgresql://lab@db:5432/optuna") == "postgresql://lab@db:5432/optuna"
