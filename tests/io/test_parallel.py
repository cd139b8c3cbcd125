"""Tests of seglab.io.parallel: file references to memory maps, and dask waves."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from seglab.errors import SeglabError
from seglab.io.parallel import check_backend, mapped_reference, run_in_waves


@pytest.fixture()
def stored(tmp_path) -> np.memmap:
    array = np.lib.format.open_memmap(tmp_path / "a.npy", "w+", np.uint32, (7, 50, 60))
    array[...] = np.arange(array.size, dtype=np.uint32).reshape(array.shape)
    array.flush()
    return np.load(tmp_path / "a.npy", mmap_mode="r")


def test_references_reopen_the_same_views(stored, tmp_path) -> None:
    for view in (stored, stored[2:5], stored[6:], stored.T, stored.T[:, :, 1:3]):
        reference = mapped_reference(view)
        assert reference is not None and len(pickle.dumps(reference)) < 500
        reopened = reference.open()
        assert reopened.shape == view.shape and not reopened.flags.writeable
        np.testing.assert_array_equal(reopened, view)
    assert mapped_reference(stored[2:5]).offset == 128 + 2 * 50 * 60 * 4  # .npy header: 128


def test_references_to_offset_maps_and_big_endian_tiffs(tmp_path) -> None:
    np.arange(100_000, dtype=np.uint8).tofile(tmp_path / "raw.bin")
    raw = np.memmap(tmp_path / "raw.bin", np.uint8, "r", offset=70_001, shape=(10, 100, 20))
    tifffile.imwrite(
        tmp_path / "b.tif",
        np.arange(60_000, dtype=">u2").reshape(3, 100, 200),
        photometric="minisblack",
    )
    tiff = tifffile.memmap(tmp_path / "b.tif", mode="r")
    for view in (raw, raw[3:7], tiff, tiff[1:]):
        np.testing.assert_array_equal(mapped_reference(view).open(), view)


def test_no_reference_for_memory_strided_or_empty_arrays(stored) -> None:
    assert mapped_reference(np.zeros((2, 3))) is None
    assert mapped_reference(np.asarray(stored) + 1) is None
    assert mapped_reference(stored[:, 1:3]) is None  # not contiguous
    assert mapped_reference(stored[3:3]) is None


def test_waves_keep_the_call_order() -> None:
    calls = ((divmod, (n, 3)) for n in range(7))
    assert list(run_in_waves(calls, scheduler="threads", workers=3)) == [
        divmod(n, 3) for n in range(7)
    ]
    assert list(run_in_waves([], scheduler=None, workers=None)) == []


@pytest.mark.parametrize(
    ("backend", "workers", "scheduler", "match"),
    [
        ("gpu", None, None, "unknown backend"),
        ("dask", 0, None, "workers must be"),
        ("dask", 1.5, None, "workers must be"),
        ("dask", None, "mpi", "unknown dask scheduler"),
    ],
)
def test_check_backend(backend, workers, scheduler, match) -> None:
    with pytest.raises(SeglabError, match=match):
        check_backend(backend, workers, scheduler)
    check_backend("serial", None, None)
    check_backend("dask", 2, "processes")
