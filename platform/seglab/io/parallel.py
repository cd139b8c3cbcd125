"""Chunk tasks run with dask, with file-backed arrays passed to them by reference.

The chunked engines (:func:`seglab.instances.split_instances_chunked`,
:func:`seglab.morphometry.measure_objects_chunked`) cut their work into independent tasks
(a slab of slices, a batch of object boxes). With ``backend="dask"`` those tasks are run by
:func:`run_in_waves` on a dask scheduler, a few at a time, so that memory stays bounded.

A ``np.memmap`` pickles as a full in-memory copy, which would defeat the bounded memory when
tasks go to other processes or machines. :func:`mapped_reference` therefore describes a
contiguous file-backed array by a small :class:`MappedArray` (file name, dtype, shape, byte
offset, order) that a task re-opens read-only with :meth:`MappedArray.open`. Arrays that are
not file-backed are handed to tasks as they are: a view under the threaded scheduler (no copy),
a pickled copy of just the task's part under a process scheduler or a cluster.

dask is imported only when a dask run starts (nothing at import time); it is an optional
dependency (``pip install 'seglab[dask]'``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seglab.errors import SeglabError

__all__ = [
    "BACKENDS",
    "SCHEDULERS",
    "Backend",
    "MappedArray",
    "check_backend",
    "mapped_reference",
    "run_in_waves",
]

Backend = Literal["serial", "dask"]
#: Accepted values of ``backend``.
BACKENDS: tuple[str, ...] = ("serial", "dask")
#: Accepted dask scheduler names (``None`` means dask's default: threads, or the active
#: ``dask.distributed`` client).
SCHEDULERS: tuple[str, ...] = (
    "threads",
    "threading",
    "processes",
    "multiprocessing",
    "sync",
    "synchronous",
    "single-threaded",
)
_PROCESS_SCHEDULERS = ("processes", "multiprocessing")


@dataclass(frozen=True)
class MappedArray:
    """A picklable reference to an array stored contiguously in a file.

    Attributes
    ----------
    filename : str
        The file holding the array.
    dtype : str
        Its dtype as ``numpy.dtype.str`` (byte order included, e.g. ``"<u4"``).
    shape : tuple of int
        Its shape.
    offset : int
        Byte offset of its first element in the file.
    order : {"C", "F"}
        Memory layout.
    """

    filename: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    order: Literal["C", "F"]

    def open(self) -> np.memmap:
        """Memory-map the array read-only."""
        return np.memmap(
            self.filename,
            dtype=np.dtype(self.dtype),
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order=self.order,
        )


def mapped_reference(array: np.ndarray) -> MappedArray | None:
    """Describe a file-backed array by reference, or return None when that is not possible.

    Parameters
    ----------
    array : ndarray
        Any array; a ``np.memmap`` (or a view of one, as ``tifffile.memmap`` and
        ``np.lib.format.open_memmap`` return them) that is C- or F-contiguous can be described.

    Returns
    -------
    MappedArray or None
        None for in-memory arrays, strided (non-contiguous) views and empty arrays.
    """
    if not isinstance(array, np.memmap) or array.size == 0:
        return None
    filename = getattr(array, "filename", None)
    buffer = _mmap_of(array)
    if filename is None or buffer is None:
        return None
    if array.flags.c_contiguous:
        order: Literal["C", "F"] = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        return None
    # np.memmap maps the file from the allocation-granularity boundary below its offset; the
    # view's first element lies (data pointer - mapping start) bytes after that boundary.
    mapped_from = int(array.offset) - int(array.offset) % mmap.ALLOCATIONGRANULARITY
    mapping_start = np.frombuffer(buffer, dtype=np.uint8).ctypes.data
    offset = mapped_from + (array.ctypes.data - mapping_start)
    return MappedArray(str(filename), array.dtype.str, tuple(array.shape), int(offset), order)


def _mmap_of(array: np.ndarray) -> mmap.mmap | None:
    """Return the ``mmap`` object under a memmap view (None if it cannot be found)."""
    base: Any = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    found = getattr(array, "_mmap", None)
    return found if isinstance(found, mmap.mmap) else None


def check_backend(backend: Any, workers: Any, scheduler: Any) -> None:
    """Validate ``backend``, ``workers`` and ``scheduler`` (one-line SeglabError)."""
    if backend not in BACKENDS:
        raise SeglabError(f"unknown backend {backend!r}", "use backend='serial' or 'dask'")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1
    ):
        raise SeglabError(
            f"workers must be an integer >= 1 or None, got {workers!r}", "pass e.g. workers=2"
        )
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise SeglabError(
            f"unknown dask scheduler {scheduler!r}",
            "use 'threads', 'processes', 'synchronous' or None (dask's default or the active "
            "dask.distributed client)",
        )


def _import_dask() -> Any:
    try:
        import dask
    except ImportError:
        raise SeglabError(
            "backend='dask' needs dask, which is not installed",
            "install dask: pip install 'seglab[dask]'",
        ) from None
    return dask


def task_count(workers: int | None) -> int:
    """Tasks in flight at once: ``workers``, or the number of CPUs."""
    return int(workers) if workers is not None else max(1, os.cpu_count() or 1)


@contextmanager
def _compute_options(dask: Any, scheduler: str | None, workers: int) -> Iterator[dict[str, Any]]:
    """Keyword arguments of ``dask.compute``; a process pool is made once and reused."""
    if scheduler is None:
        yield {}
        return
    options: dict[str, Any] = {"scheduler": scheduler}
    if scheduler in _PROCESS_SCHEDULERS:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            # chunksize=1: dask would otherwise batch up to 6 ready tasks into one worker.
            yield {**options, "num_workers": workers, "pool": pool, "chunksize": 1}
        return
    if scheduler in ("threads", "threading"):
        options["num_workers"] = workers
    yield options


def run_in_waves(
    calls: Iterable[tuple[Callable[..., Any], Sequence[Any]]],
    *,
    scheduler: str | None,
    workers: int | None,
) -> Iterator[Any]:
    """Run ``function(*args)`` for each call with dask; yield the results in call order.

    Parameters
    ----------
    calls : iterable of (callable, args)
        Module-level functions (they are pickled for process schedulers) and their arguments;
        consumed lazily, ``workers`` at a time.
    scheduler : str or None
        A name in :data:`SCHEDULERS`, or None for dask's default (the threaded scheduler, or
        the active ``dask.distributed`` client, whose workers must see the same files).
    workers : int or None
        Calls computed at once (one wave); also the number of threads or processes. Default:
        the number of CPUs.

    Yields
    ------
    object
        Each call's result, in order. At most one wave's results are held at a time.
    """
    dask = _import_dask()
    size = task_count(workers)
    with _compute_options(dask, scheduler, size) as options:
        wave: list[Any] = []
        for function, args in calls:
            wave.append(dask.delayed(function, pure=False)(*args))
            if len(wave) == size:
                yield from dask.compute(*wave, **options)
                wave = []
        if wave:
            yield from dask.compute(*wave, **options)
