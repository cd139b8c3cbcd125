"""The model registry: evaluations recorded on versions, gated promotion, rollback, audit trail.

Routine analysis runs against ``models:/<name>@champion``, so moving that alias changes
everyone's results. Here:

- every evaluation of a version (``seglab evaluate``) is recorded on the version as a tag
  ``seglab.eval.<digest>`` holding the key metric, its value and the evaluation dataset's
  digest (the SHA-256 of its ``manifest.json``);
- :func:`promote` to ``champion`` is **gated**: it is refused unless the version has an
  evaluation on a dataset the current champion was also evaluated on, and its key metric there
  is at least the champion's (higher is better: Dice, F). ``force=True`` with a ``reason``
  overrides the gate, and says so in the record;
- a version whose files are missing can never get an alias;
- every alias move (promotion, forced promotion, rollback) appends an entry to the registered
  model's audit trail: tags ``seglab.audit.<time>-<pid>`` with the alias, the previous and new
  version, their metrics, the reason, the user and the time; the MLflow UI shows them on the
  registered model's page, and ``seglab models show`` prints them;
- :func:`rollback` moves an alias back to the version it pointed at before the promotion that
  put the current version there.

Promotions and rollbacks of one model may run at the same time (several people, scripts, a
search that registers its best model). Reading the champion, the gate, the alias move and the
audit entry are one critical section, guarded by a lock that works through any MLflow store
(embedded SQLite, or a server with PostgreSQL behind it, where a file lock would not reach):
a registered model named ``seglab.lock.<name>``. Creating a registered model whose name exists
fails in every store (the name is the database's primary key), so exactly one process creates
it; it carries its owner (host, pid, process start time, a random token) and is deleted when
the section ends. A lock whose owner process on this host is dead is broken at once; one seen
unchanged for :data:`LOCK_STALE_S` is broken as abandoned (a holder gives up before moving the
alias once it has held the lock for half that). Listings skip these models.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import random
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.errors import SeglabError
from seglab.models.publish import LOCK_PREFIX, quiet_artifact_progress
from seglab.tracking.store import TrackingStore, artifact_access, owner_is_alive, owner_tags

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from seglab.models.pyfunc import BundleModel

__all__ = [
    "ALIASES",
    "AuditEntry",
    "Evaluation",
    "PromotionRefused",
    "audit_trail",
    "evaluations_of",
    "fetch_model",
    "load_model",
    "model_id_of",
    "parse_model_uri",
    "promote",
    "record_evaluation",
    "resolve_version",
    "rollback",
]

ALIASES = ("champion", "candidate")
EVAL_TAG = "seglab.eval."
AUDIT_TAG = "seglab.audit."
# Registered models named ``<LOCK_PREFIX><model>`` are promotion locks, not models
# (check_model_name refuses such names for models).
TAG_LOCK_TOKEN = "seglab.lock_token"
TAG_LOCK_SINCE = "seglab.lock_since"
#: Most seconds a promotion or rollback waits for another one of the same model.
LOCK_TIMEOUT_S = 120.0
#: A lock seen unchanged this long (s) is taken as abandoned and broken.
LOCK_STALE_S = 60.0
_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9_.\-]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))?$"
)


class PromotionRefused(SeglabError):
    """The promotion gate refused to move an alias."""


@dataclass(frozen=True)
class Evaluation:
    """A recorded evaluation of a model version on one dataset."""

    metric: str
    value: float
    dataset: str
    digest: str
    time: str
    run_id: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """One alias move in a registered model's audit trail."""

    time: str
    user: str
    action: str  # "promote", "force-promote", "rollback"
    alias: str
    from_version: str | None
    to_version: str
    metric: str | None
    from_value: float | None
    to_value: float | None
    dataset_digest: str | None
    reason: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _mlflow_error(err: Exception) -> str:
    text = str(getattr(err, "message", "") or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME``.

    Returns
    -------
    (name, version, alias)
        ``version`` and ``alias`` are None when not given (then the latest version is meant).
    """
    match = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise SeglabError(
            f"model URI {uri!r} is not understood",
            "use models:/NAME@champion, models:/NAME@candidate or models:/NAME/VERSION",
        )
    return match["name"], match["version"], match["alias"]


def resolve_version(store: TrackingStore, uri: str) -> ModelVersion:
    """Return the registered model version a ``models:/`` URI points at (clear error if none)."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_model_uri(uri)
    client = store.client()
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        raise SeglabError(
            f"no registered model {name!r} in {store.tracking_uri}",
            "list them with `seglab models list`, or register one with seglab train --register",
        ) from err
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version is not None:
            return client.get_model_version(name, version)
    except MlflowException as err:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise SeglabError(
            f"model {name!r} has no {what}",
            f"see `seglab models show {name}` for its versions and aliases",
        ) from err
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise SeglabError(f"model {name!r} has no versions", "register one with seglab train")
    return max(versions, key=lambda v: int(v.version))


def model_id_of(version: ModelVersion) -> str | None:
    """Return the LoggedModel id behind a version (the registry may not store it itself)."""
    if getattr(version, "model_id", None):
        return str(version.model_id)
    match = re.search(r"/models/(m-[0-9a-f]+)(?:/|$)", str(version.source or ""))
    return match.group(1) if match else None


def missing_files(store: TrackingStore, version: ModelVersion) -> list[str]:
    """Files a loadable seglab model needs that are missing from ``version``'s source."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from seglab.models.pyfunc import SETTINGS_FILE

    try:
        with artifact_access(store):
            repo = get_artifact_repository(version.source)
            top = {Path(f.path).name for f in repo.list_artifacts("")}
            bundle = {Path(f.path).name for f in repo.list_artifacts("artifacts/bundle")}
            weights = {Path(f.path).name for f in repo.list_artifacts("artifacts/bundle/models")}
    except Exception:  # noqa: BLE001 - any failure to list means the files cannot be reached
        return ["MLmodel"]
    missing = [] if "MLmodel" in top else ["MLmodel"]
    if SETTINGS_FILE not in bundle:
        missing.append(f"artifacts/bundle/{SETTINGS_FILE}")
    if not weights:
        missing.append("artifacts/bundle/models/*.pt")
    return missing


def fetch_model(store: TrackingStore, uri: str, folder: str | os.PathLike[str]) -> ModelVersion:
    """Download the model ``uri`` points at into ``folder``; return its version."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    version = resolve_version(store, uri)
    missing = missing_files(store, version)
    if missing:
        _, _, alias = parse_model_uri(uri)
        pointer = f" (@{alias})" if alias else ""
        option = "" if alias in (None, "champion") else f" --alias {alias}"
        instead = (
            f"roll @{alias} back (`seglab models rollback {version.name}{option}`) or promote "
            "another version"
            if alias
            else "use another version"
        )
        raise SeglabError(
            f"model {version.name} version {version.version}{pointer} is missing files "
            f"({', '.join(missing)}) at {version.source}",
            f"restore the artifact store, or {instead}",
        )
    quiet_artifact_progress()
    with artifact_access(store):
        get_artifact_repository(version.source).download_artifacts("", str(folder))
    return version


def load_model(store: TrackingStore, uri: str) -> tuple[BundleModel, ModelVersion]:
    """Load a registered seglab model (its files as data: no code stored with it is run).

    Parameters
    ----------
    store : TrackingStore
    uri : str
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME``.

    Returns
    -------
    (BundleModel, ModelVersion)
    """
    from seglab.models.pyfunc import load_downloaded_model

    folder = tempfile.mkdtemp(prefix="seglab-model-")
    version = fetch_model(store, uri, folder)
    return load_downloaded_model(folder), version


# -- evaluations ------------------------------------------------------------------------------
def record_evaluation(
    store: TrackingStore,
    name: str,
    version: str,
    evaluation: Evaluation,
) -> None:
    """Record ``evaluation`` on model version ``name``/``version`` (replaces one on the digest)."""
    client = store.client()
    key = f"{EVAL_TAG}{evaluation.digest[:16]}"
    client.set_model_version_tag(name, version, key, json.dumps(asdict(evaluation)))
    client.set_model_version_tag(name, version, "seglab.metric", evaluation.metric)
    client.set_model_version_tag(name, version, evaluation.metric, f"{evaluation.value:.6g}")


def evaluations_of(version: ModelVersion) -> dict[str, Evaluation]:
    """Return the recorded evaluations of a version, by dataset digest."""
    found = {}
    for key, value in (version.tags or {}).items():
        if key.startswith(EVAL_TAG):
            try:
                evaluation = Evaluation(**json.loads(value))
            except (TypeError, ValueError):
                continue
            found[evaluation.digest] = evaluation
    return found


# -- audit trail ------------------------------------------------------------------------------
def audit_trail(store: TrackingStore, name: str) -> list[AuditEntry]:
    """Every recorded alias move of registered model ``name``, oldest first."""
    model = store.client().get_registered_model(name)
    entries = []
    for key in sorted(k for k in (model.tags or {}) if k.startswith(AUDIT_TAG)):
        try:
            entries.append(AuditEntry(**json.loads(model.tags[key])))
        except (TypeError, ValueError):
            continue
    return entries


def _append_audit(store: TrackingStore, name: str, entry: AuditEntry) -> None:
    """Add ``entry`` after the last one (called under the registry lock).

    The key's time is made later than the last entry's, so that the trail keeps the order of
    the moves even when the clocks of the machines that made them disagree.
    """
    client = store.client()
    stamps = [
        int(key[len(AUDIT_TAG) :].split("-")[0])
        for key in client.get_registered_model(name).tags or {}
        if key.startswith(AUDIT_TAG) and key[len(AUDIT_TAG) :].split("-")[0].isdigit()
    ]
    stamp = f"{max([time.time_ns(), *(t + 1 for t in stamps)]):020d}-{os.getpid()}"
    client.set_registered_model_tag(name, f"{AUDIT_TAG}{stamp}", json.dumps(asdict(entry)))
    moved = f"{entry.from_version or '-'} -> {entry.to_version}"
    client.set_registered_model_tag(
        name,
        "seglab.last_alias_move",
        f"{entry.time} {entry.action} @{entry.alias}: {moved} ({entry.reason})",
    )


def _set_alias(store: TrackingStore, name: str, alias: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.client().set_registered_model_alias(name, alias, version)
    except MlflowException as err:
        raise SeglabError(
            f"cannot set @{alias} on {name} version {version}: {_mlflow_error(err)}",
            "check the tracking store is reachable and writable",
        ) from err


def _alias_holder(store: TrackingStore, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return store.client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# -- the registry lock -----------------------------------------------------------------------
class _RegistryLock:
    """A held lock on registered model ``name`` (see the module notes)."""

    def __init__(self, client: MlflowClient, name: str, token: str) -> None:
        self.client = client
        self.name = name
        self.token = token
        self.acquired = time.monotonic()

    def confirm(self) -> None:
        """Raise unless the lock is still ours and young enough that no one may have broken it.

        Called right before the alias moves. A waiter breaks a lock it has seen unchanged for
        :data:`LOCK_STALE_S`; a holder stops after half that, so the two cannot overlap.
        """
        held = time.monotonic() - self.acquired
        if held > LOCK_STALE_S / 2 or _lock_token(self.client, self.name) != self.token:
            raise SeglabError(
                f"the registry lock on {self.name} was held {held:.0f} s and may have been "
                "taken over by another process; nothing was changed",
                "run the command again (check that the tracking store is responsive)",
            )


def _lock_name(name: str) -> str:
    return f"{LOCK_PREFIX}{name}"


def _lock_tags(client: MlflowClient, name: str) -> dict[str, str] | None:
    """Return the tags of ``name``'s lock, or None when nobody holds it."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(_lock_name(name)).tags or {})
    except MlflowException:
        return None


def _lock_token(client: MlflowClient, name: str) -> str | None:
    tags = _lock_tags(client, name)
    return None if tags is None else tags.get(TAG_LOCK_TOKEN, "")


def _release(client: MlflowClient, name: str, token: str) -> None:
    """Delete ``name``'s lock if it still carries ``token``."""
    from mlflow.exceptions import MlflowException

    if _lock_token(client, name) != token:
        return
    # a failure leaves the lock to be broken by the next one (this process, when dead, or age)
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(_lock_name(name))


#: MLflow error codes of a lock creation that lost to another process (or met a busy store).
_CONTENDED = frozenset(
    {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "TEMPORARILY_UNAVAILABLE"}
)


@contextlib.contextmanager
def _registry_lock(store: TrackingStore, name: str) -> Iterator[_RegistryLock]:
    """Hold the lock on registered model ``name`` within the block (waiting for it if needed).

    Raises
    ------
    SeglabError
        When another live process holds it for more than :data:`LOCK_TIMEOUT_S`.
    """
    from mlflow.exceptions import MlflowException

    client = store.client()
    token = secrets.token_hex(8)
    tags = {**owner_tags(), TAG_LOCK_TOKEN: token, TAG_LOCK_SINCE: _now()}
    description = (
        f"seglab holds this while it promotes or rolls back {name}, and deletes it after; "
        f"one left by a dead process is broken after {LOCK_STALE_S:.0f} s"
    )
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    seen: tuple[str, float] | None = None  # (token, when first seen) of the other holder
    pause = 0.05
    while True:
        try:
            client.create_registered_model(_lock_name(name), tags=tags, description=description)
            break
        except MlflowException as err:
            if err.error_code not in _CONTENDED:
                raise SeglabError(
                    f"cannot take the registry lock on {name}: {_mlflow_error(err)}",
                    "check the tracking store is reachable and writable",
                ) from err
        now = time.monotonic()
        holder = _lock_tags(client, name)
        if holder is None:  # released in between, or the store was busy: try again
            if now > deadline:
                raise SeglabError(
                    f"could not take the registry lock on {name} in {LOCK_TIMEOUT_S:.0f} s",
                    "check the tracking store is reachable and writable",
                )
            time.sleep(0.01 + 0.05 * random.random())
            continue
        other = holder.get(TAG_LOCK_TOKEN, "")
        if other == token:  # our create went through although its answer was an error
            break
        if seen is None or seen[0] != other:
            seen = (other, now)
        if owner_is_alive(holder) is False or now - seen[1] > LOCK_STALE_S:
            _release(client, name, other)
            continue
        if now > deadline:
            raise SeglabError(
                f"another promotion or rollback of {name} holds the registry lock (host "
                f"{holder.get('seglab.host', '?')}, pid {holder.get('seglab.pid', '?')}, since "
                f"{holder.get(TAG_LOCK_SINCE, '?')}) after {LOCK_TIMEOUT_S:.0f} s of waiting",
                f"try again later; a lock left by a dead process is broken after "
                f"{LOCK_STALE_S:.0f} s",
            )
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 1.0)
    lock = _RegistryLock(client, name, token)
    try:
        yield lock
    finally:
        _release(client, name, token)


def _compare(candidate: ModelVersion, champion: ModelVersion) -> tuple[Evaluation, Evaluation]:
    """Return the candidate's and champion's evaluations on their latest common dataset."""
    name = candidate.name
    mine = evaluations_of(candidate)
    theirs = evaluations_of(champion)
    if not mine:
        raise PromotionRefused(
            f"version {candidate.version} of {name} has no recorded evaluation",
            f"run `seglab evaluate --model models:/{name}/{candidate.version} --data DIR` on "
            "the champion's evaluation data first",
        )
    common = sorted(set(mine) & set(theirs), key=lambda d: mine[d].time)
    if not common:
        datasets = ", ".join(sorted({e.dataset for e in theirs.values()})) or "none"
        raise PromotionRefused(
            f"versions {candidate.version} and {champion.version} (champion) of {name} were "
            "never evaluated on the same dataset",
            f"evaluate version {candidate.version} on the champion's data ({datasets}) with "
            "seglab evaluate, or use --force --reason",
        )
    digest = common[-1]
    return mine[digest], theirs[digest]


def promote(
    store: TrackingStore,
    name: str,
    version: str | int,
    alias: str = "champion",
    *,
    force: bool = False,
    reason: str = "",
    user: str | None = None,
) -> AuditEntry:
    """Move ``alias`` to ``version`` of ``name``, through the promotion gate.

    Parameters
    ----------
    store : TrackingStore
    name : str
        Registered model.
    version : str or int
        Version to promote.
    alias : {"champion", "candidate"}
    force : bool
        Override the gate (needs ``reason``).
    reason : str
        Why; recorded in the audit trail.
    user : str, optional
        Recorded as who did it (default: the login name).

    Returns
    -------
    AuditEntry
        The recorded move.

    Raises
    ------
    PromotionRefused
        When the gate refuses (champion only): no evaluation, no common evaluation dataset, or
        a worse key metric than the current champion.
    SeglabError
        Unknown model/version/alias, missing files, ``force`` without a reason.
    """
    if alias not in ALIASES:
        raise SeglabError(f"unknown alias {alias!r}", f"use one of {', '.join(ALIASES)}")
    if force and not reason.strip():
        raise SeglabError("--force needs a --reason", 'say why, e.g. --reason "new stain protocol"')
    version = str(version)
    candidate = resolve_version(store, f"models:/{name}/{version}")
    missing = missing_files(store, candidate)
    if missing:
        raise SeglabError(
            f"version {version} of {name} is missing files ({', '.join(missing)})",
            "it cannot be promoted; log and register the model again",
        )
    with _registry_lock(store, name) as lock:
        # read again under the lock: evaluations may have been recorded while waiting
        candidate = resolve_version(store, f"models:/{name}/{version}")
        return _promote_locked(lock, store, candidate, alias, force, reason, user)


def _promote_locked(
    lock: _RegistryLock,
    store: TrackingStore,
    candidate: ModelVersion,
    alias: str,
    force: bool,
    reason: str,
    user: str | None,
) -> AuditEntry:
    """Run the gate, move the alias and record it (:func:`promote`, under its lock)."""
    name, version = candidate.name, str(candidate.version)
    current = _alias_holder(store, name, alias)
    if current is not None and str(current.version) == version:
        raise SeglabError(f"version {version} of {name} is already @{alias}", "nothing to do")
    recorded = evaluations_of(candidate)
    mine = max(recorded.values(), key=lambda e: e.time) if recorded else None
    theirs: Evaluation | None = None
    if alias == "champion" and current is not None:
        try:
            mine, theirs = _compare(candidate, current)
        except PromotionRefused:
            if not force:
                raise
        if theirs is not None and mine is not None and mine.value < theirs.value and not force:
            raise PromotionRefused(
                f"version {version} of {name} has {mine.metric} {mine.value:.4f} on "
                f"{mine.dataset}, worse than champion version {current.version}'s "
                f"{theirs.value:.4f}",
                "keep the champion, or promote anyway with --force --reason",
            )
    elif alias == "champion" and mine is None and not force:
        raise PromotionRefused(
            f"version {version} of {name} has no recorded evaluation",
            f"run `seglab evaluate --model models:/{name}/{version} --data DIR` first, "
            "or use --force --reason",
        )
    lock.confirm()
    _set_alias(store, name, alias, version)
    entry = AuditEntry(
        time=_now(),
        user=user or _user(),
        action="force-promote" if force else "promote",
        alias=alias,
        from_version=str(current.version) if current is not None else None,
        to_version=version,
        metric=mine.metric if mine else None,
        from_value=theirs.value if theirs else None,
        to_value=mine.value if mine else None,
        dataset_digest=mine.digest if mine else None,
        reason=reason.strip() or ("gate passed" if alias == "champion" else "candidate"),
    )
    _append_audit(store, name, entry)
    return entry


def rollback(
    store: TrackingStore,
    name: str,
    alias: str = "champion",
    *,
    reason: str = "",
    user: str | None = None,
) -> AuditEntry:
    """Move ``alias`` back to the version it held before the current one was promoted.

    Walking back repeatedly goes further into the past (each rollback undoes the promotion
    that installed the current version, not the previous rollback).

    Raises
    ------
    SeglabError
        No alias to roll back, no earlier version in the audit trail, or its files missing.
    """
    with _registry_lock(store, name) as lock:
        return _rollback_locked(lock, store, name, alias, reason, user)


def _rollback_locked(
    lock: _RegistryLock,
    store: TrackingStore,
    name: str,
    alias: str,
    reason: str,
    user: str | None,
) -> AuditEntry:
    """Move the alias back and record it (:func:`rollback`, under its lock)."""
    current = _alias_holder(store, name, alias)
    if current is None:
        raise SeglabError(f"{name} has no @{alias} to roll back", f"see seglab models show {name}")
    promotions = [
        e
        for e in audit_trail(store, name)
        if e.alias == alias and e.action != "rollback" and e.to_version == str(current.version)
    ]
    if not promotions or promotions[-1].from_version is None:
        raise SeglabError(
            f"the audit trail of {name} has no version before @{alias} = {current.version}",
            "promote a version instead (seglab models promote)",
        )
    target = promotions[-1].from_version
    previous = resolve_version(store, f"models:/{name}/{target}")
    missing = missing_files(store, previous)
    if missing:
        raise SeglabError(
            f"cannot roll back to version {target} of {name}: its files are missing "
            f"({', '.join(missing)})",
            "promote another version with seglab models promote --force --reason",
        )
    lock.confirm()
    _set_alias(store, name, alias, target)
    recorded = evaluations_of(previous)
    latest = max(recorded.values(), key=lambda e: e.time) if recorded else None
    entry = AuditEntry(
        time=_now(),
        user=user or _user(),
        action="rollback",
        alias=alias,
        from_version=str(current.version),
        to_version=target,
        metric=latest.metric if latest else None,
        from_value=None,
        to_value=latest.value if latest else None,
        dataset_digest=latest.digest if latest else None,
        reason=reason.strip() or "rollback",
    )
    _append_audit(store, name, entry)
    return entry


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def iter_models(store: TrackingStore) -> Iterator[Any]:
    """Yield the registered models of the store (not the promotion locks)."""
    client = store.client()
    token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        yield from (model for model in page if not model.name.startswith(LOCK_PREFIX))
        token = page.token
        if not token:
            return
