"""glibc malloc settings for processes that allocate and free large arrays over and over.

A network's forward pass allocates activations of tens to hundreds of MB and frees them at
once. glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and returns it with ``munmap`` when freed, so each pass page-faults its whole
working set in again: on these machines that was 15-27 % of a U-Net's forward time and most of
the system time of a 690-slice segmentation (``benchmarks/RESULTS.md``). Raising the mmap and
trim thresholds keeps the memory in the heap for reuse (0 page faults per pass, measured).

The settings are environment variables glibc reads once, when a process starts (``mallopt``
from a running Python process did not remove the faults), so the ``seglab`` command starts
itself again with them (:func:`restart_with_tuned_allocator`). Settings the user has made are
kept; ``SEGLAB_ALLOCATOR=default`` turns this off. ``python -m monai.bundle run`` can be given
the same variables by hand (:data:`ALLOCATOR_SETTINGS`).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

__all__ = [
    "ALLOCATOR_SETTINGS",
    "MARKER",
    "restart_with_tuned_allocator",
    "tuned_environment",
]

#: glibc tunables set for seglab processes: allocations up to 256 MiB come from the heap (the
#: largest activation of the study's U-Net on 16 tiles is 134 MB), and free memory at the top
#: of the heap goes back to the system only beyond 512 MiB.
ALLOCATOR_SETTINGS: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(256 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(512 * 2**20),
}

#: Environment variable that marks a process as started with the settings (value ``tuned``), or
#: turns them off (value ``default``).
MARKER = "SEGLAB_ALLOCATOR"


def _uses_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def tuned_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Return the environment to restart with, or None when there is nothing to do.

    Parameters
    ----------
    environ : mapping of str to str
        The current environment (``os.environ``).

    Returns
    -------
    dict or None
        ``environ`` plus :data:`ALLOCATOR_SETTINGS` and ``SEGLAB_ALLOCATOR=tuned``; None on
        systems without glibc, when the process already has the settings (or is a restarted
        one), when the user set any ``MALLOC_*`` variable or ``GLIBC_TUNABLES`` themselves, or
        with ``SEGLAB_ALLOCATOR=default``.
    """
    if environ.get(MARKER) in ("tuned", "default") or not _uses_glibc():
        return None
    if "GLIBC_TUNABLES" in environ or any(key.startswith("MALLOC_") for key in environ):
        return None
    return {**environ, **ALLOCATOR_SETTINGS, MARKER: "tuned"}


def restart_with_tuned_allocator() -> None:
    """Replace this process with the same command run with :data:`ALLOCATOR_SETTINGS`.

    Does nothing (returns) when :func:`tuned_environment` says there is nothing to do, or when
    the command line that started the interpreter is not known. Call it first thing in a
    console script, before any output or file is opened.
    """
    environment = tuned_environment(os.environ)
    argv = getattr(sys, "orig_argv", None)
    if environment is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], environment)
