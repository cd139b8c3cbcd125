"""User-facing errors.

Every problem a user can cause (a missing file, a wrong shape, a bad option) is raised as a
:class:`SeglabError`, whose message is one line: what was wrong, what was expected, and how to
fix it. Only the CLI turns these errors into an exit code; library callers catch them as usual.
``SeglabError`` subclasses :class:`ValueError`, so code written against plain ``ValueError`` keeps
working.
"""

from __future__ import annotations


class SeglabError(ValueError):
    """A problem with the user's input, reported as one line.

    Parameters
    ----------
    problem : str
        What was wrong, naming the offending value (``"tile size must be positive, got -3"``).
    fix : str, optional
        What to do about it (``"pass a tile size of at least 1"``).
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = " ".join(str(problem).split())
        self.fix = " ".join(fix.split()) if fix else None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The whole one-line message: problem, then fix."""
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class DataFileError(SeglabError):
    """A file that is missing, unreadable, corrupt or in an unsupported format."""


class OutputExistsError(SeglabError):
    """An output path exists and overwriting it was not allowed."""
