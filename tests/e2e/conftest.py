"""Shared by the end-to-end tests: system programs they need, skipped locally and required in CI.

`.ci/run` installs Debian's ``chromium`` and ``postgresql`` when missing and sets ``CI``; there a
missing program fails the test instead of skipping it, so a green CI run means these tests ran.
"""

import glob
import os
import shutil

import pytest


def require_program(name: str, *patterns: str) -> str:
    """Return the path of program ``name`` (PATH, then the glob ``patterns``), else skip or fail.

    Skips when it is missing outside CI; fails under CI (the ``CI`` environment variable set).
    """
    found = shutil.which(name)
    if found is None:
        for pattern in patterns:
            matches = sorted(glob.glob(pattern))
            if matches:
                found = matches[-1]
                break
    if found is None:
        message = f"{name} is not installed (`.ci/run` installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
