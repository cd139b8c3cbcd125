"""Promotions and rollbacks of one model at the same time: the registry lock keeps them whole."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from seglab.errors import SeglabError
from seglab.models import registry
from seglab.models.registry import (
    LOCK_PREFIX,
    Evaluation,
    PromotionRefused,
    audit_trail,
    iter_models,
    promote,
    record_evaluation,
    resolve_version,
)
from seglab.tracking.store import TAG_HOST, TAG_PID, owner_tags, resolve_store

NAME = "lung-tiny"
DIGEST = "a" * 64

#: One registry command in its own process; it waits for the file ``go`` after its imports so
#: that all of them start together. Prints the audit entry, or the refusal.
WORKER = """
import json, sys, time
from dataclasses import asdict
from pathlib import Path
from seglab.errors import SeglabError
from seglab.models.registry import promote, rollback
from seglab.tracking.store import resolve_store

store_dir, folder, action, version = sys.argv[1:5]
store = resolve_store(store_dir)
store.client()
(Path(folder) / f"ready-{action}-{version}").touch()
while not (Path(folder) / "go").exists():
    time.sleep(0.005)
try:
    if action == "promote":
        entry = promote(store, "lung-tiny", version)
    else:
        entry = rollback(store, "lung-tiny")
    print(json.dumps({"ok": True, **asdict(entry)}))
except SeglabError as err:
    print(json.dumps({"ok": False, "error": str(err)}))
"""


def evaluate(store, version, value):
    record_evaluation(
        store,
        NAME,
        str(version),
        Evaluation("total_dice", value, "lung-test", DIGEST, f"2026-11-21T00:00:{version:02d}"),
    )


def run_together(store, folder, commands):
    """Start one process per ``(action, version)``, release them at once, return their outputs."""
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store.local_dir), str(folder), action, str(v)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action, v in commands
    ]
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < len(workers) and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), [w.stderr.read()[-2000:] for w in workers]
        time.sleep(0.05)
    (folder / "go").touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def champion_chain(store):
    """The champion's audit entries; asserts each starts where the one before ended."""
    trail = [e for e in audit_trail(store, NAME) if e.alias == "champion"]
    for before, after in zip(trail, trail[1:], strict=False):
        assert after.from_version == before.to_version, trail
    assert str(resolve_version(store, f"models:/{NAME}@champion").version) == trail[-1].to_version
    return trail


def no_locks_left(store):
    return [m.name for m in store.client().search_registered_models()] == [NAME]


@pytest.fixture
def five_versions(store, register):
    for seed in range(5):
        register(seed=seed)
    return store


@pytest.mark.slow
def test_concurrent_promotions_pass_the_gate_against_the_champion_they_replace(
    five_versions, tmp_path
):
    store = five_versions
    values = {1: 0.80, 2: 0.81, 3: 0.83, 4: 0.85, 5: 0.87}
    for version, value in values.items():
        evaluate(store, version, value)
    promote(store, NAME, 1)
    results = run_together(store, tmp_path / "sync", [("promote", v) for v in (2, 3, 4, 5)])

    passed = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert passed and all("worse than champion" in r["error"] for r in refused)
    trail = champion_chain(store)
    # no lost entries: one per successful promotion, and nothing else
    assert sorted(e.to_version for e in trail[1:]) == sorted(r["to_version"] for r in passed)
    for entry in trail[1:]:
        # the gate ran against the version it really replaced, and that one was not better
        assert entry.from_value == pytest.approx(values[int(entry.from_version)])
        assert entry.to_value == pytest.approx(values[int(entry.to_version)])
        assert entry.to_value >= entry.from_value
    for refusal in refused:  # refused against a champion of the chain, better than it
        candidate, champion = map(int, re.findall(r"version (\d+)", refusal["error"]))
        assert values[candidate] < values[champion]
        assert str(champion) in {e.to_version for e in trail}
    assert no_locks_left(store)


@pytest.mark.slow
def test_concurrent_promotions_and_rollbacks_keep_one_chain(five_versions, tmp_path):
    store = five_versions
    for version, value in {1: 0.80, 2: 0.82, 3: 0.84, 4: 0.90, 5: 0.91}.items():
        evaluate(store, version, value)
    for version in (1, 2, 3):
        promote(store, NAME, version)
    commands = [("promote", 4), ("rollback", 0), ("promote", 5), ("rollback", 1)]
    results = run_together(store, tmp_path / "sync", commands)

    trail = champion_chain(store)
    done = [r for r in results if r["ok"]]
    assert len(trail) == 3 + len(done)  # every move that reported success is in the trail
    assert sorted((e.action, e.from_version, e.to_version) for e in trail[3:]) == sorted(
        (r["action"], r["from_version"], r["to_version"]) for r in done
    )
    for failure in (r for r in results if not r["ok"]):
        assert "worse than champion" in failure["error"] or "no version before" in failure["error"]
    assert no_locks_left(store)


# -- the lock itself, in one process -----------------------------------------------------------
@pytest.fixture(scope="module")
def bare_store(tmp_path_factory):
    """A store shared by the lock tests (each locks a model name of its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = resolve_store(tmp_path_factory.mktemp("locks") / "mlruns")
        store.client()
        yield store


def plant_lock(store, name=NAME, **owner):
    """Make the lock on ``name`` look held by another process."""
    tags = {**owner_tags(), "seglab.lock_token": "someone-else", **owner}
    store.client().create_registered_model(f"{LOCK_PREFIX}{name}", tags=tags)


def lock_names(store):
    return [m.name for m in store.client().search_registered_models() if LOCK_PREFIX in m.name]


def test_a_lock_left_by_a_dead_process_is_broken_at_once(bare_store):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid is now free (reuse within the test is improbable)
    plant_lock(bare_store, "dead-owner", **{TAG_PID: str(finished.pid)})
    started = time.monotonic()
    with registry._registry_lock(bare_store, "dead-owner") as lock:
        lock.confirm()
        assert lock_names(bare_store) == [f"{LOCK_PREFIX}dead-owner"]
    assert time.monotonic() - started < 5 and lock_names(bare_store) == []


def test_a_live_holder_makes_others_wait_then_fail_with_a_clear_error(bare_store, monkeypatch):
    monkeypatch.setattr(registry, "LOCK_TIMEOUT_S", 1.0)
    plant_lock(bare_store, "busy", **{TAG_HOST: "other-host", TAG_PID: "7"})  # not checkable
    started = time.monotonic()
    with pytest.raises(SeglabError, match=r"holds the registry lock \(host other-host, pid 7"):
        with registry._registry_lock(bare_store, "busy"):
            pytest.fail("entered a held lock")
    assert 1.0 <= time.monotonic() - started < 5
    assert lock_names(bare_store) == [f"{LOCK_PREFIX}busy"]  # the holder's lock is untouched
    bare_store.client().delete_registered_model(f"{LOCK_PREFIX}busy")


def test_a_lock_seen_unchanged_for_too_long_is_broken(bare_store, monkeypatch):
    monkeypatch.setattr(registry, "LOCK_STALE_S", 0.5)
    plant_lock(bare_store, "abandoned", **{TAG_HOST: "other-host", TAG_PID: "7"})
    started = time.monotonic()
    with registry._registry_lock(bare_store, "abandoned"):
        assert time.monotonic() - started >= 0.5
    assert lock_names(bare_store) == []


def test_locks_are_not_listed_as_models(bare_store):
    bare_store.client().create_registered_model("listed")
    plant_lock(bare_store, "listed")
    assert [m.name for m in iter_models(bare_store)] == ["listed"]
    bare_store.client().delete_registered_model(f"{LOCK_PREFIX}listed")


def test_the_lock_is_released_on_refusal_and_a_lost_lock_changes_nothing(
    store, register, monkeypatch
):
    register(seed=0)
    register(seed=1)
    evaluate(store, 1, 0.80)
    promote(store, NAME, 1)
    evaluate(store, 2, 0.70)
    with pytest.raises(PromotionRefused):
        promote(store, NAME, 2)
    assert lock_names(store) == []

    evaluate(store, 2, 0.90)
    read_champion = registry._alias_holder

    def read_then_lose_the_lock(*args):
        found = read_champion(*args)
        # meanwhile another process broke the lock (taking it as abandoned) and took it
        store.client().delete_registered_model(f"{LOCK_PREFIX}{NAME}")
        plant_lock(store, **{TAG_HOST: "other-host"})
        return found

    monkeypatch.setattr(registry, "_alias_holder", read_then_lose_the_lock)
    with pytest.raises(SeglabError, match="may have been taken over"):
        promote(store, NAME, 2)
    assert str(resolve_version(store, f"models:/{NAME}@champion").version) == "1"
    assert len(audit_trail(store, NAME)) == 1
    assert lock_names(store) == [f"{LOCK_PREFIX}{NAME}"]  # the other process's, left alone
