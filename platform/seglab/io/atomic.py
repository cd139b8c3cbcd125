"""Write files and folders so that a failure never leaves half-written output.

Everything is written to a temporary sibling first and renamed into place only when complete;
``os.replace`` is atomic on one filesystem, so a reader sees either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from seglab.errors import OutputExistsError, SeglabError


def _check_parent_writable(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SeglabError(
                f"cannot create output folder {parent}: {err.strerror or err}",
                "choose a location you can write to",
            ) from err
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SeglabError(
            f"output folder {parent} is not writable", "choose a location you can write to"
        )


@contextlib.contextmanager
def _creating_in(folder: Path) -> Iterator[None]:
    """Turn an OS error while creating a temporary entry in ``folder`` into a one-line error.

    ``os.access`` says yes to root everywhere, so a read-only or virtual filesystem (``/sys``,
    ``/proc``) or a vanished folder shows only when the entry is made.
    """
    try:
        yield
    except OSError as err:
        raise SeglabError(
            f"cannot write in output folder {folder}: {err.strerror or err}",
            "choose a location you can write to",
        ) from err


def _umask() -> int:
    """Return the process umask without changing it where the platform allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no read-only query elsewhere; restore at once
    os.umask(mask)
    return mask


def _give_usual_mode(tmp: Path, final: Path, base: int) -> None:
    """Give ``tmp`` the mode ``final`` has, or that a plain ``open``/``mkdir`` would give it.

    ``mkstemp``/``mkdtemp`` create private (0600/0700) entries; without this the renamed output
    would be unreadable to the user's group and others.
    """
    try:
        mode = final.stat().st_mode & 0o7777 if final.exists() else base & ~_umask()
        os.chmod(tmp, mode)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        Final file name. Its folder is created when missing.
    overwrite : bool
        Whether an existing ``path`` may be replaced.

    Yields
    ------
    Path
        A temporary file in the same folder, with the same suffix (so writers that look at the
        suffix choose the right format). It is removed if the block raises.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputExistsError(
            f"{final} is a folder, not a file", "choose another output file name"
        )
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists", "pass --overwrite to replace it")
    _check_parent_writable(final)
    with _creating_in(final.parent):
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=f".tmp{''.join(final.suffixes)}", dir=final.parent
        )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _give_usual_mode(tmp, final, 0o666)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; move it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        Final folder. With ``overwrite=False`` it must not exist (an empty folder is accepted).
    overwrite : bool
        Whether an existing folder is replaced; the old one is removed only after the new one is
        complete.

    Yields
    ------
    Path
        A temporary sibling folder; removed if the block raises.
    """
    final = Path(path)
    if final.exists():
        if not final.is_dir():
            raise OutputExistsError(
                f"{final} exists and is not a folder", "choose another output path"
            )
        if any(final.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output folder {final} already exists and is not empty",
                "pass --overwrite to replace it, or choose another folder",
            )
    _check_parent_writable(final)
    with _creating_in(final.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _give_usual_mode(tmp, final, 0o777)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def empty_folder(folder: str | os.PathLike[str]) -> None:
    """Remove everything inside ``folder`` and keep the folder itself.

    For ``--overwrite`` of a folder that is written in place (a training's checkpoints, a
    study's report). Links inside are removed, not followed.
    """
    for entry in Path(folder).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
