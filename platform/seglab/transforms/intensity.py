"""Study B's two-peak intensity remap (eq. 2.4) as a MONAI transform pair.

Wraps :func:`seglab.intensity.remap_to_reference`: each slice's histogram peaks ``p1, p2`` are
found and moved onto the reference ``P1, P2``; slices whose detection fails are left unchanged
(``fallback="identity"``) or remapped with peaks interpolated from neighbouring slices
(``fallback="neighbours"``).

Channel-first layouts:

* ``(C, H, W)``: the C channels are C slices of one stack (C = 1: a single image; C = 3 or 5:
  the adjacent slices of a 2.5D input);
* ``(1, Z, H, W)``: a stack, remapped slice by slice along Z.

Nothing is silent: on a ``MetaTensor`` the report goes into the meta dictionary --
``"intensity_remap"`` holds the JSON of :meth:`seglab.intensity.RemapReport.as_dict` (a string,
so DataLoader batches still collate) and ``"intensity_remap_failed"`` the number of slices whose
own peaks could not be used -- and any failure is logged as a warning with the report's summary
(logger ``seglab.transforms.intensity``). The dictionary version writes the same entries into
``data["<key>_meta_dict"]`` for values that are not ``MetaTensor``.

Dtypes: the output keeps the input's dtype unless ``dtype`` is given. MONAI's ``LoadImage``
converts to float32 by default; float images outside [0, 1] need ``value_range=(0, 255)``
(or load with ``dtype=None`` to keep uint8).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import PostFix

from seglab.errors import SeglabError
from seglab.intensity import (
    PUBLISHED_REFERENCE_PEAKS,
    Fallback,
    ReferencePeaks,
    RemapReport,
    remap_to_reference,
)
from seglab.transforms._common import (
    ArrayLike,
    as_numpy,
    check_array,
    present_keys,
    same_kind,
    to_json,
)

__all__ = ["IntensityRemap", "IntensityRemapd"]

REPORT_KEY = "intensity_remap"
FAILED_KEY = "intensity_remap_failed"

_log = logging.getLogger(__name__)


def _resolve_reference(reference: Any) -> ReferencePeaks | tuple[float, float]:
    if isinstance(reference, ReferencePeaks):
        return reference
    if isinstance(reference, str):
        if reference == "published":
            return PUBLISHED_REFERENCE_PEAKS
        raise SeglabError(
            f"unknown reference {reference!r}",
            "pass 'published' (P1 = 162.99, P2 = 187.51 on 0..255), (P1, P2) or ReferencePeaks",
        )
    try:
        p1, p2 = (float(v) for v in reference)
    except (TypeError, ValueError):
        raise SeglabError(
            f"reference must be 'published', (P1, P2) or ReferencePeaks, got {reference!r}",
            "pass e.g. reference=[162.99, 187.51]",
        ) from None
    return p1, p2


class IntensityRemap(Transform):
    """Remap each slice's two histogram peaks onto reference peaks (eq. 2.4).

    Parameters
    ----------
    reference : ReferencePeaks, (float, float) or "published"
        ``P1, P2`` in the image's intensity units; ``"published"`` is
        :data:`seglab.intensity.PUBLISHED_REFERENCE_PEAKS` (162.99, 187.51 on 0..255).
    value_range : (float, float), optional
        ``(vmin, vmax)``; needed for float images outside [0, 1] (e.g. ``(0, 255)``).
    fallback : {"identity", "neighbours"}
        What happens to slices whose detection fails.
    max_stretch : float
        Largest scale factor of a segment of eq. 2.4 before the peaks count as implausible.
    dtype : numpy dtype, optional
        Output dtype (default: the input's).
    bins, interval, min_prominence, min_separation
        Peak detection options of :func:`seglab.intensity.detect_peaks`.

    Notes
    -----
    Call with ``(C, H, W)`` (channels = slices) or ``(1, Z, H, W)``; returns the same kind and
    shape. :meth:`remap` returns the array and the :class:`~seglab.intensity.RemapReport`.
    Options are checked at the first call, by the core.
    """

    def __init__(
        self,
        reference: ReferencePeaks | Sequence[float] | str = "published",
        value_range: Sequence[float] | None = None,
        fallback: Fallback = "identity",
        max_stretch: float = 3.0,
        dtype: Any = None,
        bins: int = 256,
        interval: int = 5,
        min_prominence: float = 0.05,
        min_separation: int = 8,
    ) -> None:
        self.reference = _resolve_reference(reference)
        self.options: dict[str, Any] = {
            "value_range": value_range,
            "fallback": fallback,
            "max_stretch": max_stretch,
            "dtype": dtype,
            "bins": bins,
            "interval": interval,
            "min_prominence": min_prominence,
            "min_separation": min_separation,
        }

    def remap(self, img: ArrayLike) -> tuple[ArrayLike, RemapReport]:
        """Remap ``img`` and return it with the per-slice report."""
        name = type(self).__name__
        check_array(img, name, "a channel-first (C, H, W) or (1, Z, H, W) array")
        if img.ndim not in (3, 4) or (img.ndim == 4 and img.shape[0] != 1):
            raise SeglabError(
                f"{name} takes (C, H, W) slices or a (1, Z, H, W) stack, got shape "
                f"{tuple(img.shape)}",
                "add a channel axis first (EnsureChannelFirst); remap multi-channel stacks "
                "one channel at a time",
            )
        array = as_numpy(img)
        stack = array[0] if array.ndim == 4 or array.shape[0] == 1 else array
        remapped, report = remap_to_reference(stack, self.reference, slice_axis=0, **self.options)
        out = same_kind(remapped.reshape(array.shape), img)
        if report.failed:
            _log.warning("%s: %s", name, report.summary())
        if isinstance(out, MetaTensor):
            out.meta.update(report_entries(report))
        return out, report

    def __call__(self, img: ArrayLike) -> ArrayLike:
        """Remap ``img`` (C, H, W) or (1, Z, H, W)."""
        return self.remap(img)[0]


def report_entries(report: RemapReport) -> dict[str, Any]:
    """Return the meta entries of a remap: the JSON report and the number of failed slices."""
    return {REPORT_KEY: to_json(report.as_dict()), FAILED_KEY: len(report.failed)}


class IntensityRemapd(MapTransform):
    """Dictionary version of :class:`IntensityRemap`.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of grey-level images or stacks (not labels).
    reference, value_range, fallback, max_stretch, dtype, bins, interval, min_prominence,
    min_separation
        See :class:`IntensityRemap`.
    allow_missing_keys : bool
        Skip keys that are not in the data instead of raising.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        reference: ReferencePeaks | Sequence[float] | str = "published",
        value_range: Sequence[float] | None = None,
        fallback: Fallback = "identity",
        max_stretch: float = 3.0,
        dtype: Any = None,
        bins: int = 256,
        interval: int = 5,
        min_prominence: float = 0.05,
        min_separation: int = 8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remapper = IntensityRemap(
            reference,
            value_range=value_range,
            fallback=fallback,
            max_stretch=max_stretch,
            dtype=dtype,
            bins=bins,
            interval=interval,
            min_prominence=min_prominence,
            min_separation=min_separation,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Remap each key's image; record the report in its meta."""
        d = dict(data)
        for key in present_keys(self, d):
            d[key], report = self.remapper.remap(d[key])
            if not isinstance(d[key], MetaTensor):
                meta_key = PostFix.meta(str(key))
                meta = dict(d.get(meta_key) or {})
                meta.update(report_entries(report))
                d[meta_key] = meta
        return d
