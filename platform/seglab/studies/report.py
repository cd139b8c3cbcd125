"""What a study wrote: the parent run, the report folder and the lines printed."""

from __future__ import annotations

from dataclasses import dataclass, field

from seglab.workflows._outputs import Summary

__all__ = ["StudyResult"]


@dataclass
class StudyResult(Summary):
    """:class:`~seglab.workflows._outputs.Summary` plus the study's runs.

    Attributes
    ----------
    run_id : str
        The parent MLflow run.
    children : int
        Child runs of the study (trainings or trials), including earlier ones.
    skipped : int
        Children found finished in MLflow and not run again.
    failed : int
        Children that failed in this run (the parent run is then FAILED; run again to retry).
    """

    run_id: str = ""
    children: int = 0
    skipped: int = 0
    failed: int = 0
    best: dict[str, object] = field(default_factory=dict)
