"""Per-epoch checkpoints and exact resume for MONAI/ignite trainings.

Ignite handlers that bundle configs attach to a trainer (``train#handlers``):

- :class:`InitialWeights` (before the resume handler) loads pre-trained network weights when
  training starts (transfer learning; ``initial_weights`` of the bundles);
- :class:`ResumeFromCheckpoint` (first in the list) restores model, optimizer and trainer state
  when training starts, so ignite continues with the epoch after the checkpoint's;
- :class:`EpochSeeder` reseeds every random generator from ``(seed, epoch)`` when an epoch starts,
  so epoch ``k`` draws the same patches, flips and shuffle order whatever ran before it;
- :class:`EpochCheckpoint` (after the ``ValidationHandler``) writes the finished epoch's state
  atomically: a process killed at any moment leaves the previous or the new file, never a torn one.

A checkpoint also names the tracking run that wrote it (``engine.state.tracking_run_id``, set by
:class:`seglab.tracking.handlers.RunLogger`); a resumed trainer gets it as
``engine.state.resumed_from_run``, so the new run can say which run it continues.

Together they make a resumed training reproduce an uninterrupted one exactly (on the same
machine and software). torch and ignite are imported inside the methods.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError
from seglab.flags import as_bool
from seglab.io.atomic import atomic_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "BestModelState",
    "EpochCheckpoint",
    "EpochSeeder",
    "InitialWeights",
    "ResumeFromCheckpoint",
    "load_weights",
]

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout written by :class:`EpochCheckpoint`."""

TRAINER_KEY = "trainer"
"""Name under which the trainer's own state (iteration, epoch_length, max_epochs) is saved."""

RUN_KEY = "run_id"
"""Name under which the id of the tracking run that wrote the checkpoint is saved (or None)."""

logger = logging.getLogger(__name__)


class EpochSeeder:
    """Reseed all random generators from ``seed + epoch`` when each epoch starts.

    Sets the torch, numpy and ``random`` seeds (:func:`monai.utils.set_determinism`) and the
    random state of every randomizable transform of ``dataset`` (:func:`monai.data.utils.set_rnd`),
    so the random transforms of epoch ``k`` and the DataLoader's shuffle (drawn when the epoch's
    iterator is made, after ``EPOCH_STARTED``) depend only on ``(seed, k)``.

    Parameters
    ----------
    seed : int
        Base seed; epoch ``k`` (1-based, as ignite counts) uses ``seed + k``.
    dataset : torch Dataset, optional
        The training dataset whose transforms are reseeded (e.g. a ``CacheDataset``).
    """

    def __init__(self, seed: int, dataset: Any = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SeglabError(
                f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0"
            )
        self.seed = seed
        self.dataset = dataset

    def attach(self, engine: Any) -> None:
        """Register :meth:`epoch_started` on the trainer's ``EPOCH_STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)

    def epoch_started(self, engine: Any) -> None:
        """Seed everything with ``seed + engine.state.epoch``."""
        from monai.data.utils import set_rnd
        from monai.utils import set_determinism

        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed)
        if self.dataset is not None:
            set_rnd(self.dataset, seed)


class EpochCheckpoint:
    """Write the training state atomically after every epoch.

    The file holds ``{name: obj.state_dict() for name, obj in save_dict.items()}``, the state of
    the trainer the handler is attached to under ``"trainer"``, ``"epoch"`` (the finished
    epoch, 1-based), ``"format"`` (:data:`CHECKPOINT_FORMAT`) and ``"run_id"`` (the trainer's
    ``state.tracking_run_id``, or None without tracking). It is written with :func:`torch.save`
    into a temporary sibling, flushed to disk and renamed over ``filename``, and the folder is
    flushed after the rename. Temporary files that a killed process left behind are removed when
    the trainer starts.

    Parameters
    ----------
    save_dir : path-like
        Folder of the checkpoint; created when missing.
    save_dict : mapping of str to object with ``state_dict()``
        What to save besides the trainer, e.g. ``{"model": net, "optimizer": opt,
        "lr_scheduler": sched}``. The name ``"trainer"`` is reserved.
    filename : str
        File name inside ``save_dir``.

    Notes
    -----
    Attach it after the ``ValidationHandler`` so the file is written once the epoch, validation
    and best-model saving included, is finished. The trainer is not passed in ``save_dict``: a
    bundle config cannot name the trainer inside the trainer's own handler list (a cycle).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint.pt",
    ) -> None:
        _check_objects(save_dict, "save_dict", "state_dict")
        if not filename or Path(filename).name != filename:
            raise SeglabError(
                f"checkpoint filename must be a plain file name, got {filename!r}",
                "pass e.g. filename='checkpoint.pt' and the folder as save_dir",
            )
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)

    def attach(self, engine: Any) -> None:
        """Register :meth:`started` and :meth:`epoch_completed` on the trainer."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def started(self, engine: Any = None) -> None:
        """Remove the temporary files of writes that a killed process never finished."""
        # atomic_file names its temporary ".<stem>.<random>.tmp<suffixes>" beside the file
        pattern = f".{self.path.stem}.*.tmp{''.join(self.path.suffixes)}"
        for stale in self.path.parent.glob(pattern):
            try:
                stale.unlink()
            except OSError:
                continue
            logger.info("removed %s, left by an unfinished checkpoint write", stale)

    def epoch_completed(self, engine: Any) -> None:
        """Save the state of the epoch that just finished."""
        import torch

        checkpoint = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        checkpoint[TRAINER_KEY] = engine.state_dict()
        checkpoint["epoch"] = int(engine.state.epoch)
        checkpoint["format"] = CHECKPOINT_FORMAT
        checkpoint[RUN_KEY] = getattr(engine.state, "tracking_run_id", None)
        with atomic_file(self.path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_folder(self.path.parent)  # the rename itself survives a power cut


class BestModelState:
    """The best-model bookkeeping of a MONAI ``CheckpointSaver``, saved with each epoch.

    A ``CheckpointSaver`` with ``save_key_metric`` keeps ``model.pt`` for the best validation
    score, and remembers that score only in memory. A resumed training would start that memory
    empty: its first validation would replace ``model.pt`` even when the earlier best was
    better, so the published model would depend on where the training was interrupted. Put this
    object in both :class:`EpochCheckpoint`'s ``save_dict`` and :class:`ResumeFromCheckpoint`'s
    ``load_dict``: the saver's ``(score, file)`` list travels with the epoch checkpoint and is
    restored through MONAI's own ``CheckpointSaver.load_state_dict``.

    Parameters
    ----------
    saver : monai.handlers.CheckpointSaver
        The evaluator's saver, created with ``save_key_metric=True``.
    """

    def __init__(self, saver: Any) -> None:
        if not callable(getattr(saver, "load_state_dict", None)):
            raise SeglabError(
                f"BestModelState needs a MONAI CheckpointSaver, got {type(saver).__name__}",
                "point it at the evaluator's CheckpointSaver (save_key_metric: true)",
            )
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        """Return the saver's list of ``(score, file)`` pairs (empty before a first save)."""
        # MONAI keeps the key-metric Checkpoint private; ignite's Checkpoint has state_dict()
        checkpoint = getattr(self.saver, "_key_metric_checkpoint", None)
        return dict(checkpoint.state_dict()) if checkpoint is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Give the saver back its list, so it replaces ``model.pt`` only for a better score."""
        if state:
            self.saver.load_state_dict(dict(state))


class ResumeFromCheckpoint:
    """Restore a training from an :class:`EpochCheckpoint` file when the trainer starts.

    Loads the file with ``torch.load(..., weights_only=True)``, restores every object of
    ``load_dict`` and the trainer's iteration and epoch, so ignite continues with the epoch after
    the saved one. The trainer keeps its own ``max_epochs`` (a run may be resumed with more
    epochs). Sets ``engine.state.resumed_from_epoch`` to the checkpoint's epoch and
    ``engine.state.resumed_from_run`` to the id of the tracking run that wrote it (None when it
    names none), or both to ``None`` when training starts from scratch.

    A damaged or cut-short file is refused with a one-line error, not skipped: the file is only
    ever replaced by a complete one (see :class:`EpochCheckpoint`), so a killed training cannot
    leave it torn, and there is no older checkpoint to fall back to.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    load_dict : mapping of str to object with ``load_state_dict()``
        Objects to restore, named as in the checkpoint (``"model"``, ``"optimizer"``, ...).
        Every name must be in the file, except a :class:`BestModelState` (checkpoints written
        before it existed lack it: a warning); ``"trainer"`` is reserved for the trainer.
    enabled : bool or {"true", "false"}
        False makes the handler do nothing. Strings are accepted because ``python -m
        monai.bundle run --resume true`` passes the word, not a bool.

    Raises
    ------
    SeglabError
        When training starts and the file exists but cannot be read, is not a checkpoint of
        this format, lacks an object, or does not fit the model, optimizer or data loader.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        load_dict: Mapping[str, Any],
        enabled: bool | str = True,
    ) -> None:
        _check_objects(load_dict, "load_dict", "load_state_dict")
        self.path = Path(path)
        self.load_dict = dict(load_dict)
        self.enabled = as_bool(enabled, "enabled")

    def attach(self, engine: Any) -> None:
        """Register :meth:`started` on the trainer's ``STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)

    def started(self, engine: Any) -> None:
        """Load the checkpoint into the objects and the trainer, if enabled and present."""
        engine.state.resumed_from_epoch = None
        engine.state.resumed_from_run = None
        if not self.enabled:
            return
        if not self.path.is_file():
            logger.info("no checkpoint at %s: training starts from scratch", self.path)
            return
        checkpoint = self._read()
        for name, obj in self.load_dict.items():
            if name not in checkpoint:  # a BestModelState: older checkpoints did not save it
                logger.warning(
                    "%s holds no best-model state (%s): the first validation after resuming "
                    "replaces model.pt",
                    self.path,
                    name,
                )
                continue
            self._restore(name, obj, checkpoint[name])
        self._restore_trainer(engine, checkpoint)
        engine.state.resumed_from_epoch = checkpoint["epoch"]
        run_id = checkpoint.get(RUN_KEY)
        engine.state.resumed_from_run = run_id if isinstance(run_id, str) and run_id else None
        logger.info("resumed from %s after epoch %d", self.path, checkpoint["epoch"])

    def _fail(self, problem: str) -> SeglabError:
        return SeglabError(
            f"cannot resume from checkpoint {self.path}: {problem}",
            "delete the file to start from scratch, or train without --resume (resume=false)",
        )

    def _read(self) -> dict[str, Any]:
        import warnings

        import torch

        try:
            with warnings.catch_warnings():
                # the weights-only unpickler warns about pickle protocols it was not written for
                warnings.simplefilter("ignore", UserWarning)
                checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - torch and pickle fail in many ways on bad files
            raise self._fail(f"unreadable or corrupt ({_load_failure(err)})") from err
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise self._fail(f"not a seglab checkpoint of format {CHECKPOINT_FORMAT}")
        required = [n for n, obj in self.load_dict.items() if not isinstance(obj, BestModelState)]
        missing = [n for n in [*required, TRAINER_KEY, "epoch"] if n not in checkpoint]
        if missing:
            raise self._fail(f"it lacks {', '.join(missing)}")
        return checkpoint

    def _restore(self, name: str, obj: Any, state: Any) -> None:
        try:
            obj.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = " ".join(str(err).split())[:200]
            raise self._fail(f"its {name} does not fit ({reason})") from err

    def _restore_trainer(self, engine: Any, checkpoint: Mapping[str, Any]) -> None:
        state = checkpoint[TRAINER_KEY]
        saved_length = state.get("epoch_length") if isinstance(state, Mapping) else None
        current_length = engine.state.epoch_length
        if current_length is not None and saved_length != current_length:
            raise self._fail(
                f"it was written with {saved_length} iterations per epoch, this training "
                f"has {current_length} (batch size, samples or data changed)"
            )
        max_epochs = engine.state.max_epochs
        self._restore(TRAINER_KEY, engine, state)
        if max_epochs is not None:
            engine.state.max_epochs = max_epochs
        if engine.state.epoch != checkpoint["epoch"]:
            raise self._fail(
                f"its trainer state is at epoch {engine.state.epoch}, "
                f"its epoch field says {checkpoint['epoch']}"
            )


class InitialWeights:
    """Load pre-trained weights into the network when training starts (transfer learning).

    The file is a network ``state_dict`` (or a checkpoint dict with a ``"model"`` entry, as
    :class:`EpochCheckpoint` and a registered model's ``models/member<i>.pt`` hold), read with
    ``torch.load(..., weights_only=True)`` and loaded strictly: every tensor must fit. Attach it
    before :class:`ResumeFromCheckpoint`, so a resumed training continues from its checkpoint
    instead of restarting from the initial weights.

    Parameters
    ----------
    path : path-like or None
        The weights; None or ``""`` makes the handler do nothing (training from scratch).
    network : torch.nn.Module
        The network to load them into.

    Raises
    ------
    SeglabError
        When training starts and the file is missing, unreadable, or does not fit the network.
    """

    def __init__(self, path: str | os.PathLike[str] | None, network: Any) -> None:
        if not callable(getattr(network, "load_state_dict", None)):
            raise SeglabError(
                f"network must have load_state_dict(), got {type(network).__name__}",
                "pass the bundle's @network",
            )
        self.path = Path(path) if path not in (None, "") else None
        self.network = network

    def attach(self, engine: Any) -> None:
        """Register :meth:`started` on the trainer's ``STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)

    def started(self, engine: Any = None) -> None:
        """Load the weights (no-op without a path)."""
        if self.path is None:
            return
        fix = "pass the state_dict of a network with the same name, options and input slices"
        state = load_weights(self.path, "initial weights", fix)
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]
        try:
            self.network.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = " ".join(str(err).split())[:200]
            raise SeglabError(
                f"initial weights {self.path} do not fit the network ({reason})", fix
            ) from err
        logger.info("loaded initial weights from %s", self.path)


def _load_failure(error: BaseException) -> str:
    """Say briefly why ``torch.load`` failed (its own messages run over many lines)."""
    import pickle

    if isinstance(error, EOFError):
        return "the file ends early"
    if isinstance(error, pickle.UnpicklingError):
        # torch's text advises weights_only=False, which would run code from the file
        return "damaged, or holds objects other than tensors and plain values"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:120]}" if lines else type(error).__name__


def load_weights(path: str | os.PathLike[str], what: str = "weights file", fix: str = "") -> Any:
    """Read weights or a checkpoint with ``torch.load(..., weights_only=True)`` (runs no code).

    Parameters
    ----------
    path : path-like
        A file written by ``torch.save`` (a ``state_dict``, or a checkpoint dict).
    what : str
        What the file is, for the message (``"initial weights"``).
    fix : str
        What to do when it cannot be read.

    Returns
    -------
    object
        What the file holds (tensors, plain values and containers of them), on the CPU.

    Raises
    ------
    SeglabError
        When the file is missing, damaged, cut short, not a torch file, or holds other objects.
    """
    import warnings

    import torch

    path = Path(path)
    fix = fix or "check the path, or save the weights again with torch.save(state_dict)"
    if not path.is_file():
        raise SeglabError(f"{what} {path} not found", fix)
    try:
        with warnings.catch_warnings():
            # the weights-only unpickler warns about pickle protocols it was not written for
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - torch and pickle fail in many ways on bad files
        raise SeglabError(
            f"{what} {path} is corrupt or not a PyTorch weights file ({_load_failure(err)})", fix
        ) from err


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_objects(objects: Any, name: str, method: str) -> None:
    """Validate a ``save_dict``/``load_dict``: names to objects that have ``method``."""
    if not isinstance(objects, Mapping) or not objects:
        raise SeglabError(
            f"{name} must be a non-empty mapping of names to objects, got {objects!r}",
            f"pass e.g. {name}={{'model': network, 'optimizer': optimizer}}",
        )
    for key, obj in objects.items():
        if key in (TRAINER_KEY, "epoch", "format", RUN_KEY):
            raise SeglabError(
                f"{name} may not use the reserved name {key!r}",
                "the trainer is saved and restored by the handler itself; leave it out",
            )
        if not callable(getattr(obj, method, None)):
            raise SeglabError(
                f"{name}[{key!r}] has no {method}() method, got {type(obj).__name__}",
                "pass models, optimizers, lr schedulers or other objects with state dicts",
            )
