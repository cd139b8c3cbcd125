"""Synthetic serial-block-face SEM stacks of heart muscle with exact mitochondria ground truth.

A phantom is a ``(Z, Y, X)`` uint8 stack with anisotropic voxels (z coarser than y and x),
showing myofibrils that run along a configurable axis with dark Z-disc stripes every
``sarcomere_length`` um, and prolate-spheroid mitochondria placed between them. Mitochondria are
darker than myofibrils, so the histogram has two peaks (near the study's published
P1 = 162.99 and P2 = 187.51 for cell A); optional extracellular space adds a very dark and a
very bright peak. Each slice gets its own brightness offset (and, for cell B, gain), a small
in-plane blur and noise.

Ground truth is exact by construction: a voxel belongs to mitochondrion *k* if and only if
its centre lies inside spheroid *k*, in physical coordinates. Voxel ``(k, j, i)`` has its centre
at ``((k + 0.5) * vz, (j + 0.5) * vy, (i + 0.5) * vx)`` um, so the field of view spans
``[0, shape * voxel_size]`` um on each axis. Spheroids never share a voxel, and two
mitochondria never touch (not even diagonally: at least one background voxel separates them)
unless they were placed as a *touching pair*, in which case they share a face of at least one
pair of voxels (6-connected) while keeping separate labels -- the case instance splitting has to
handle.

Two appearance presets, cells ``"A"`` and ``"B"`` (:data:`SEM_CELL_APPEARANCE`), use the same
geometry statistics but differ in contrast, texture and slice-wise drift, so that a model (or a
threshold) tuned on A alone degrades on B. Geometry depends only on the geometry options and
``seed``, never on ``cell``: ``make_sem_phantom(cell="B", seed=s)`` shows the same mitochondria
as ``make_sem_phantom(cell="A", seed=s)`` with B's appearance. :func:`make_sem_cells` makes a
pair of *different* cells (seeds ``seed`` and ``seed + 1``).

Sizes. The default phantom is small and fast (``(32, 128, 128)`` voxels of
``(0.1, 0.04, 0.04)`` um, a field of 3.2 x 5.12 x 5.12 um; 0.2-0.6 s) and keeps the real
physical sizes instead of shrinking the objects: mean mitochondrion volume 0.9 um^3 (semi-axes
about 0.93 x 0.47 x 0.47 um, so a mitochondrion is about 9 slices thick and 23 pixels wide),
sarcomere length 2 um, volume fraction 0.25. In so small a field most objects are cut by the
border (about 100 objects, of which 5-15 lie inside). :func:`study_sem_config` gives the
study's stack sizes (cell B: ``(690, 1024, 1024)`` voxels of ``(0.0701, 0.01397, 0.01397)`` um)
with the published mean volumes and volume fractions. Measured on one CPU core:
``(128, 512, 512)`` takes about 12 s and 0.27 GB peak; cell B at study size about 140 s
(placement 33 s, rendering 104 s) and 3.6 GB peak, which is essentially the returned arrays
(uint8 image 0.72 GB, uint16 labels 1.45 GB, boolean contours and cell mask 0.72 GB each): the
image is rendered one slice at a time, so the temporary memory is a few slice-sized arrays.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from seglab.errors import SeglabError
from seglab.phantoms._options import resolve_config
from seglab.progress import ProgressCallback

__all__ = [
    "SEM_CELL_APPEARANCE",
    "SEM_TRUTH_COLUMNS",
    "MitochondrionTruth",
    "SemAppearance",
    "SemPhantom",
    "SemPhantomConfig",
    "ideal_probability_maps",
    "make_sem_cells",
    "make_sem_phantom",
    "noisy_probability_maps",
    "study_sem_config",
    "truth_table_rows",
]

CellName = Literal["A", "B"]

#: The volume fraction may overshoot its target by at most this much (absolute): an object is
#: only added if the label volume stays within ``volume_fraction + FRACTION_OVERSHOOT``.
FRACTION_OVERSHOOT = 0.01
#: Positions tried for one drawn object (or pair) before it is given up.
_POSITION_TRIES = 200
#: Placement stops after this many objects in a row could not be placed.
_MAX_CONSECUTIVE_FAILURES = 30
#: Off-axis mitochondria are at least this far from the myofibril axis (degrees).
_OFF_AXIS_MIN_ANGLE_DEG = 45.0


@dataclass(frozen=True)
class SemAppearance:
    """Grey levels and textures of one simulated cell (all intensities in grey levels 0..255).

    Parameters
    ----------
    mitochondrion_intensity, myofibril_intensity : float
        Base grey levels; the histogram peaks of a slice without drift lie up to about 4 grey
        levels below them (Z-discs, clefts and membranes are dark).
    extracellular_dark, extracellular_bright : float
        The two grey levels of extracellular space (only drawn when the config asks for it).
    bright_extracellular_share : float
        Share of the extracellular space that is bright, in [0, 1].
    cleft_depth : float
        How much darker the thin clefts between myofibrils are.
    myofibril_spacing : float
        Centre-to-centre distance of myofibrils across the fibre axis, in um.
    z_disc_depth, z_disc_half_width : float
        Darkness of the Z-disc stripes (grey levels) and their Gaussian half-width (um).
    band_amplitude : float
        Amplitude of the I-band/A-band modulation along a sarcomere.
    cristae_amplitude, cristae_period : float
        Amplitude (grey levels) and period (um) of the cristae stripes inside mitochondria; the
        period is raised to at least three pixels when pixels are coarse.
    membrane_depth : float
        How much darker the outline pixels of a mitochondrion are.
    grain_sd, grain_correlation : float
        Standard deviation (grey levels) and correlation length (um) of the fine texture.
    psf_sigma : float
        Standard deviation of the in-plane Gaussian blur, in um.
    noise_sd : float
        Standard deviation of the white Gaussian noise, in grey levels.
    drift_sd : float
        Standard deviation over slices of the per-slice brightness offset, in grey levels.
    gain_drift_sd : float
        Standard deviation over slices of the per-slice contrast gain around 1.
    """

    mitochondrion_intensity: float
    myofibril_intensity: float
    extracellular_dark: float
    extracellular_bright: float
    bright_extracellular_share: float
    cleft_depth: float
    myofibril_spacing: float
    z_disc_depth: float
    z_disc_half_width: float
    band_amplitude: float
    cristae_amplitude: float
    cristae_period: float
    membrane_depth: float
    grain_sd: float
    grain_correlation: float
    psf_sigma: float
    noise_sd: float
    drift_sd: float
    gain_drift_sd: float


#: Appearance presets of the two cells. A puts the histogram peaks at the study's published
#: P1 = 162.99 (mitochondria) and P2 = 187.51 (myofibrils) with little drift; B is darker
#: (peaks near 146 and 182), with coarser grain, denser myofibrils, thicker but fainter
#: Z-discs, stronger cristae and membranes, more blur, and strong slice-wise drift in
#: brightness (sd 7 grey levels) and contrast (sd 3 %).
SEM_CELL_APPEARANCE: dict[str, SemAppearance] = {
    "A": SemAppearance(
        mitochondrion_intensity=163.0,
        myofibril_intensity=190.0,
        extracellular_dark=20.0,
        extracellular_bright=240.0,
        bright_extracellular_share=0.35,
        cleft_depth=10.0,
        myofibril_spacing=1.0,
        z_disc_depth=28.0,
        z_disc_half_width=0.04,
        band_amplitude=3.0,
        cristae_amplitude=5.0,
        cristae_period=0.12,
        membrane_depth=12.0,
        grain_sd=3.0,
        grain_correlation=0.03,
        psf_sigma=0.02,
        noise_sd=5.0,
        drift_sd=2.0,
        gain_drift_sd=0.0,
    ),
    "B": SemAppearance(
        mitochondrion_intensity=146.0,
        myofibril_intensity=186.0,
        extracellular_dark=34.0,
        extracellular_bright=228.0,
        bright_extracellular_share=0.5,
        cleft_depth=14.0,
        myofibril_spacing=0.8,
        z_disc_depth=20.0,
        z_disc_half_width=0.06,
        band_amplitude=4.0,
        cristae_amplitude=6.0,
        cristae_period=0.16,
        membrane_depth=16.0,
        grain_sd=4.0,
        grain_correlation=0.06,
        psf_sigma=0.03,
        noise_sd=5.0,
        drift_sd=7.0,
        gain_drift_sd=0.03,
    ),
}


@dataclass(frozen=True)
class SemPhantomConfig:
    """Options of :func:`make_sem_phantom`; all physical sizes in um.

    Parameters
    ----------
    shape : tuple of int
        ``(Z, Y, X)`` number of voxels, each at least 1.
    voxel_size : tuple of float
        ``(z, y, x)`` voxel edge lengths in um, positive (z is usually the coarsest).
    cell : {"A", "B"}
        Appearance preset (:data:`SEM_CELL_APPEARANCE`); does not change the geometry.
    appearance : SemAppearance or None
        Replaces the preset named by ``cell`` when given.
    myofibril_axis : tuple of float
        ``(z, y, x)`` direction of the myofibrils (normalised internally; the Z-discs are
        perpendicular to it). The default runs along x, in the image plane.
    sarcomere_length : float
        Z-disc spacing along the myofibril axis, in um.
    volume_fraction : float
        Target share of the cell volume (voxels inside ``cell_mask``) covered by mitochondria,
        in (0, 1). Objects are added until the target is reached; the result lies in
        ``[volume_fraction, volume_fraction + 0.01]`` unless the space is too crowded (above
        about 0.3 at the default resolution), in which case it stays below and
        :attr:`SemPhantom.volume_fraction` reports what was reached.
    mean_volume : float
        Expected volume of one drawn spheroid, ``4/3 pi a b^2``, in um^3.
    aspect_ratio : float
        Mean ratio ``a / b`` of the long to the short semi-axis, at least 1 (prolate).
    size_spread : float
        Standard deviation of ``log b`` (short semi-axis), >= 0.
    aspect_spread : float
        Standard deviation of ``log(a / b - 1)``, >= 0.
    angular_spread_deg : float
        Scale of the (Rayleigh-distributed) angle between a mitochondrion's long axis and the
        myofibril axis, in degrees, in [0, 90]; the mean angle is ``1.25 *`` this value (15
        degrees by default).
    off_axis_fraction : float
        Share of mitochondria whose axis is drawn uniformly among directions at least 45 degrees
        from the myofibril axis, in [0, 1].
    touching_pair_fraction : float
        Target share of mitochondria placed as a member of a touching pair (end to end or side
        by side, same axis, sharing voxel faces), in [0, 1]; pairs are harder to place, so the
        reached share is often a little lower.
    extracellular : bool
        Whether a band of extracellular space (dark and bright regions, no mitochondria) runs
        along the top (low y) of every slice.
    extracellular_fraction : float
        Mean share of the image height taken by extracellular space, in (0, 1).
    seed : int
        Seed of the random generator (>= 0); equal configs give identical phantoms.
    """

    shape: tuple[int, int, int] = (32, 128, 128)
    voxel_size: tuple[float, float, float] = (0.1, 0.04, 0.04)
    cell: CellName = "A"
    appearance: SemAppearance | None = None
    myofibril_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    sarcomere_length: float = 2.0
    volume_fraction: float = 0.25
    mean_volume: float = 0.9
    aspect_ratio: float = 2.0
    size_spread: float = 0.12
    aspect_spread: float = 0.3
    angular_spread_deg: float = 12.0
    off_axis_fraction: float = 0.08
    touching_pair_fraction: float = 0.15
    extracellular: bool = False
    extracellular_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class MitochondrionTruth:
    """Ground truth of one mitochondrion.

    Attributes
    ----------
    label : int
        Its value in :attr:`SemPhantom.instances` (1..N).
    centre_um : tuple of float
        ``(z, y, x)`` centre in um (may lie outside the field of view for cut objects).
    semi_axes_um : tuple of float
        ``(a, b, b)`` semi-axes in um, ``a >= b``; ``a`` lies along ``axis``.
    axis : tuple of float
        ``(z, y, x)`` unit vector of the long axis (sign arbitrary).
    volume_um3 : float
        Analytic volume ``4/3 pi a b^2`` of the whole spheroid, in um^3.
    voxel_count : int
        Number of voxels with this label inside the stack.
    voxel_volume_um3 : float
        ``voxel_count`` times the voxel volume, in um^3.
    touches_border : bool
        Whether a voxel of it lies on a face of the stack (first or last index of any axis);
        such objects are cut off and belong out of shape statistics.
    touching_partner : int
        Label of the mitochondrion it shares voxel faces with (a touching pair), else 0.
    angle_to_myofibril_deg : float
        Angle between ``axis`` and the myofibril axis, in [0, 90] degrees.
    """

    label: int
    centre_um: tuple[float, float, float]
    semi_axes_um: tuple[float, float, float]
    axis: tuple[float, float, float]
    volume_um3: float
    voxel_count: int
    voxel_volume_um3: float
    touches_border: bool
    touching_partner: int
    angle_to_myofibril_deg: float


#: Column names of :func:`truth_table_rows`, in order.
SEM_TRUTH_COLUMNS: tuple[str, ...] = (
    "label",
    "centre_z_um",
    "centre_y_um",
    "centre_x_um",
    "semi_axis_a_um",
    "semi_axis_b_um",
    "axis_z",
    "axis_y",
    "axis_x",
    "volume_um3",
    "voxel_count",
    "voxel_volume_um3",
    "touches_border",
    "touching_partner",
    "angle_to_myofibril_deg",
)


@dataclass
class SemPhantom:
    """A synthetic SBF-SEM stack and its exact ground truth.

    Attributes
    ----------
    image : (Z, Y, X) ndarray of uint8
        The SEM-like stack.
    instances : (Z, Y, X) ndarray of uint16 (uint32 above 65535 objects)
        0 for background, ``1..N`` for mitochondria (labels follow :attr:`truth`).
    contours : (Z, Y, X) ndarray of bool
        Per-slice (2D) inner outline of every mitochondrion, as drawn for a contour model:
        object pixels with a 4-neighbour in the same slice that has another label (background
        or another mitochondrion). The stack edge does not count as a boundary. Between the two
        members of a touching pair both rims are marked, so ``mask & ~contours`` separates them.
    cell_mask : (Z, Y, X) ndarray of bool
        False in extracellular space, True elsewhere.
    truth : tuple of MitochondrionTruth
        One entry per label, in label order.
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in um.
    volume_fraction : float
        ``instances > 0`` voxels divided by ``cell_mask`` voxels (exact).
    config : SemPhantomConfig
        The (normalised) options that made it.
    metadata : dict
        ``cell``, ``myofibril_axis`` (unit ``(z, y, x)``), ``sarcomere_length_um``,
        ``mitochondrion_intensity`` and ``myofibril_intensity`` (base grey levels before drift;
        the histogram peaks lie at most about 4 grey levels below them, since most textures
        are dark), ``extracellular_intensities`` (``(dark, bright)`` or None),
        ``slice_offsets`` and ``slice_gains`` (``(Z,)`` float arrays: slice ``z`` shows
        ``gain * clean + offset + noise``), ``target_volume_fraction``.
    """

    image: np.ndarray
    instances: np.ndarray
    contours: np.ndarray
    cell_mask: np.ndarray
    truth: tuple[MitochondrionTruth, ...]
    voxel_size: tuple[float, float, float]
    volume_fraction: float
    config: SemPhantomConfig
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """(Z, Y, X) ndarray of bool: mitochondria (``instances > 0``), computed on access."""
        return self.instances > 0

    @property
    def mean_volume(self) -> float:
        """Mean analytic volume of the mitochondria in um^3 (NaN when there are none)."""
        if not self.truth:
            return float("nan")
        return float(np.mean([t.volume_um3 for t in self.truth]))


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def make_sem_phantom(
    config: SemPhantomConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> SemPhantom:
    """Generate a synthetic SBF-SEM stack with mitochondria ground truth.

    Parameters
    ----------
    config : SemPhantomConfig, optional
        The options; the defaults make a small ``(32, 128, 128)`` stack of cell A.
    **overrides
        Fields of :class:`SemPhantomConfig` to replace, e.g. ``shape=(16, 64, 64)``.
    progress : callable, optional
        Called as ``progress(phase, fraction)`` while placing objects and drawing slices
        (fraction 0..1), e.g. to drive a progress bar; study-size stacks take minutes.

    Returns
    -------
    SemPhantom
        Image, instance labels, contours, cell mask and the truth table.

    Raises
    ------
    SeglabError
        If an option is unknown or out of range.

    Notes
    -----
    Placement is random sequential addition. For each object it draws the semi-axes
    (``b`` log-normal, ``a / b - 1`` log-normal, scaled so that the expected volume is
    ``mean_volume``) and the axis (the myofibril axis turned by a Rayleigh-distributed angle,
    or an off-axis direction), then tries up to 200 random centres, uniform over all positions
    where the spheroid overlaps the stack (so cut objects are as common at the border as in a
    larger volume). A centre is accepted when the spheroid's voxels, grown by one voxel in all
    26 directions, meet no other mitochondrion and no extracellular space, and the volume
    fraction stays at most ``volume_fraction + 0.01``. A touching pair is a first spheroid plus a
    partner with the same axis, tangent to it end to end or side by side (or nudged up to 3 %
    closer, which may make the continuous spheroids overlap by a thin lens, but never a voxel
    centre). Addition stops when the target is reached or after 30 objects in a row found no
    place; at the default resolution the one-voxel gaps limit the reachable fraction to about
    0.31. Objects that fill gaps late are slightly smaller than drawn, so the mean volume comes
    out a few per cent below ``mean_volume`` (about 2 % on large stacks). Labels follow the
    order of placement.
    """
    config = _normalised_config(config, overrides)
    appearance = (
        config.appearance if config.appearance is not None else SEM_CELL_APPEARANCE[config.cell]
    )
    voxel_size = np.asarray(config.voxel_size, dtype=float)
    myofibril_axis = _unit(np.asarray(config.myofibril_axis, dtype=float))
    root = np.random.SeedSequence(config.seed)
    geometry_seed, appearance_seed = root.spawn(2)
    geometry_rng = np.random.default_rng(geometry_seed)
    # The appearance stream also depends on the cell so that A and B get independent noise.
    appearance_rng = np.random.default_rng(
        np.random.SeedSequence([*appearance_seed.generate_state(4), ord(config.cell)])
    )
    extracellular = _ExtracellularSpace.draw(config, geometry_rng) if config.extracellular else None
    cell_mask = _cell_mask(config.shape, voxel_size, extracellular)
    instances, objects = _place_mitochondria(
        config, voxel_size, myofibril_axis, cell_mask, geometry_rng, progress
    )
    contours = _slice_contours(instances)
    truth = _truth_table(objects, instances, voxel_size, myofibril_axis)
    offsets, gains = _slice_drift(config.shape[0], appearance, appearance_rng)
    image = _render(
        config,
        appearance,
        voxel_size,
        myofibril_axis,
        instances,
        contours,
        objects,
        cell_mask,
        config.extracellular,
        offsets,
        gains,
        appearance_rng,
        progress,
    )
    cell_voxels = int(np.count_nonzero(cell_mask))
    filled = int(np.count_nonzero(instances))
    metadata: dict[str, Any] = {
        "cell": config.cell,
        "myofibril_axis": tuple(float(v) for v in myofibril_axis),
        "sarcomere_length_um": config.sarcomere_length,
        "mitochondrion_intensity": appearance.mitochondrion_intensity,
        "myofibril_intensity": appearance.myofibril_intensity,
        "extracellular_intensities": (
            (appearance.extracellular_dark, appearance.extracellular_bright)
            if config.extracellular
            else None
        ),
        "slice_offsets": offsets,
        "slice_gains": gains,
        "target_volume_fraction": config.volume_fraction,
    }
    return SemPhantom(
        image=image,
        instances=instances,
        contours=contours,
        cell_mask=cell_mask,
        truth=truth,
        voxel_size=tuple(float(v) for v in voxel_size),
        volume_fraction=filled / cell_voxels if cell_voxels else 0.0,
        config=config,
        metadata=metadata,
    )


def make_sem_cells(
    config: SemPhantomConfig | None = None, **overrides: Any
) -> dict[str, SemPhantom]:
    """Make two different cells, A and B, with the same geometry statistics.

    Parameters
    ----------
    config : SemPhantomConfig, optional
        Shared options; ``cell`` is ignored.
    **overrides
        Fields of :class:`SemPhantomConfig` to replace.

    Returns
    -------
    dict of str to SemPhantom
        ``{"A": ..., "B": ...}``; A uses ``seed``, B uses ``seed + 1`` (a different cell, so
        different mitochondria) and B's appearance preset.
    """
    base = _normalised_config(config, overrides)
    return {
        "A": make_sem_phantom(dataclasses.replace(base, cell="A")),
        "B": make_sem_phantom(dataclasses.replace(base, cell="B", seed=base.seed + 1)),
    }


def study_sem_config(cell: CellName = "B", **overrides: Any) -> SemPhantomConfig:
    """Options for a stack of the study's size (SPEC, study B).

    Cell B: 690 slices of 1024 x 1024 pixels over 48.4 x 14.3 x 14.3 um, voxel
    ``(48.4 / 690, 14.3 / 1024, 14.3 / 1024)`` = ``(0.0701, 0.01397, 0.01397)`` um, published mean
    volume 0.9472 um^3 and volume fraction 26.68 %. Cell A: 400 slices over 28 x 14 x 14 um at
    the same voxel size (so ``(400, 1002, 1002)`` voxels; the SPEC gives no pixel count),
    published mean volume 0.9367 um^3 and volume fraction 20.04 %.

    Parameters
    ----------
    cell : {"A", "B"}
        Which cell.
    **overrides
        Further fields of :class:`SemPhantomConfig`.

    Returns
    -------
    SemPhantomConfig
        Not validated until :func:`make_sem_phantom` uses it. Generating cell B takes about
        2.5 minutes and 3.6 GB of memory.
    """
    voxel = (48.4 / 690, 14.3 / 1024, 14.3 / 1024)
    if cell == "B":
        base = SemPhantomConfig(
            shape=(690, 1024, 1024),
            voxel_size=voxel,
            cell="B",
            mean_volume=0.9472,
            volume_fraction=0.2668,
        )
    elif cell == "A":
        base = SemPhantomConfig(
            shape=(400, round(14.0 / voxel[1]), round(14.0 / voxel[2])),
            voxel_size=voxel,
            cell="A",
            mean_volume=0.9367,
            volume_fraction=0.2004,
        )
    else:
        raise SeglabError(f"cell must be 'A' or 'B', got {cell!r}", "pass cell='A' or cell='B'")
    return resolve_config(base, SemPhantomConfig, overrides, "SEM phantom")


def truth_table_rows(phantom: SemPhantom) -> list[dict[str, Any]]:
    """Flatten the truth table into rows for a CSV writer.

    Parameters
    ----------
    phantom : SemPhantom
        A generated phantom.

    Returns
    -------
    list of dict
        One dict per mitochondrion with the keys :data:`SEM_TRUTH_COLUMNS` (lengths in um,
        volumes in um^3, angles in degrees); empty when there are no mitochondria.
    """
    rows = []
    for t in phantom.truth:
        rows.append(
            {
                "label": t.label,
                "centre_z_um": t.centre_um[0],
                "centre_y_um": t.centre_um[1],
                "centre_x_um": t.centre_um[2],
                "semi_axis_a_um": t.semi_axes_um[0],
                "semi_axis_b_um": t.semi_axes_um[1],
                "axis_z": t.axis[0],
                "axis_y": t.axis[1],
                "axis_x": t.axis[2],
                "volume_um3": t.volume_um3,
                "voxel_count": t.voxel_count,
                "voxel_volume_um3": t.voxel_volume_um3,
                "touches_border": t.touches_border,
                "touching_partner": t.touching_partner,
                "angle_to_myofibril_deg": t.angle_to_myofibril_deg,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _normalised_config(
    config: SemPhantomConfig | None, overrides: dict[str, Any]
) -> SemPhantomConfig:
    config = resolve_config(config, SemPhantomConfig, overrides, "SEM phantom")
    shape = _int_triple(config.shape, "shape", "(Z, Y, X) voxel counts, e.g. (32, 128, 128)")
    voxel_size = _positive_triple(config.voxel_size)
    axis = _axis_triple(config.myofibril_axis)
    if config.cell not in SEM_CELL_APPEARANCE:
        raise SeglabError(f"cell must be 'A' or 'B', got {config.cell!r}", "pass cell='A' or 'B'")
    if config.appearance is not None:
        _check_appearance(config.appearance)
    _check_number(config.sarcomere_length, "sarcomere_length", low=0.0, low_open=True, unit="um")
    _check_number(
        config.volume_fraction, "volume_fraction", 0.0, 1.0, low_open=True, high_open=True
    )
    _check_number(config.mean_volume, "mean_volume", low=0.0, low_open=True, unit="um^3")
    _check_number(config.aspect_ratio, "aspect_ratio", low=1.0)
    _check_number(config.size_spread, "size_spread", low=0.0)
    _check_number(config.aspect_spread, "aspect_spread", low=0.0)
    _check_number(config.angular_spread_deg, "angular_spread_deg", 0.0, 90.0, unit="degrees")
    _check_number(config.off_axis_fraction, "off_axis_fraction", 0.0, 1.0)
    _check_number(config.touching_pair_fraction, "touching_pair_fraction", 0.0, 1.0)
    _check_number(
        config.extracellular_fraction,
        "extracellular_fraction",
        0.0,
        1.0,
        low_open=True,
        high_open=True,
    )
    if not isinstance(config.extracellular, bool | np.bool_):
        raise SeglabError(
            f"extracellular must be True or False, got {config.extracellular!r}",
            "pass extracellular=True to draw extracellular space",
        )
    if isinstance(config.seed, bool) or not isinstance(config.seed, int | np.integer):
        raise SeglabError(f"seed must be an integer, got {config.seed!r}", "pass e.g. seed=0")
    if config.seed < 0:
        raise SeglabError(f"seed must be >= 0, got {config.seed}", "pass e.g. seed=0")
    return dataclasses.replace(
        config,
        shape=shape,
        voxel_size=voxel_size,
        myofibril_axis=axis,
        extracellular=bool(config.extracellular),
        seed=int(config.seed),
    )


def _int_triple(value: Any, name: str, expected: str) -> tuple[int, int, int]:
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    ok = len(items) == 3 and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in items
    )
    if not ok:
        raise SeglabError(
            f"{name} must be three integers >= 1, got {value!r}", f"pass {name} as {expected}"
        )
    return (int(items[0]), int(items[1]), int(items[2]))


def _float_triple(value: Any) -> tuple[float, float, float] | None:
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(items) != 3 or not all(math.isfinite(v) for v in items):
        return None
    return (items[0], items[1], items[2])


def _positive_triple(value: Any) -> tuple[float, float, float]:
    items = _float_triple(value)
    if items is None or min(items) <= 0:
        raise SeglabError(
            f"voxel_size must be three positive finite numbers (z, y, x) in um, got {value!r}",
            "pass e.g. voxel_size=(0.1, 0.04, 0.04)",
        )
    return items


def _axis_triple(value: Any) -> tuple[float, float, float]:
    items = _float_triple(value)
    if items is None or math.hypot(*items) == 0:
        raise SeglabError(
            f"myofibril_axis must be a non-zero finite (z, y, x) vector, got {value!r}",
            "pass e.g. myofibril_axis=(0, 0, 1) for fibres along x",
        )
    return items


def _check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    unit: str = "",
) -> None:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        suffix = f" {unit}" if unit else ""
        raise SeglabError(
            f"{name} must be a number in {left}{lo}, {hi}{right}{suffix}, got {value!r}",
            f"pass a {name} in that range",
        )


def _check_appearance(appearance: Any) -> None:
    if not isinstance(appearance, SemAppearance):
        raise SeglabError(
            f"appearance must be a SemAppearance, got {type(appearance).__name__}",
            "start from SEM_CELL_APPEARANCE['A'] and change fields with dataclasses.replace",
        )
    for f in dataclasses.fields(SemAppearance):
        value = getattr(appearance, f.name)
        if f.name.endswith(("_intensity", "_dark", "_bright")):
            _check_number(value, f"appearance.{f.name}", 0.0, 255.0)
        elif f.name == "bright_extracellular_share":
            _check_number(value, f"appearance.{f.name}", 0.0, 1.0)
        elif f.name in {"myofibril_spacing", "cristae_period"}:
            _check_number(value, f"appearance.{f.name}", low=0.0, low_open=True, unit="um")
        else:
            _check_number(value, f"appearance.{f.name}", low=0.0)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _perpendicular_basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to ``axis`` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = _unit(helper - np.dot(helper, axis) * axis)
    return first, _cross(axis, first)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array(
        [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
    )


@dataclass(frozen=True)
class _Spheroid:
    centre: np.ndarray  # (3,) um
    a: float
    b: float
    axis: np.ndarray  # (3,) unit
    partner_index: int = -1  # index in the placement list of a touching partner

    @property
    def half_extent(self) -> np.ndarray:
        """Half-widths (z, y, x) in um of the axis-aligned box around the spheroid."""
        return np.sqrt(self.a**2 * self.axis**2 + self.b**2 * (1.0 - self.axis**2))


@dataclass(frozen=True)
class _ExtracellularSpace:
    """A band at low y whose lower edge wobbles: extracellular where ``y < edge(z, x)``."""

    mean_height: float  # um
    wobble: tuple[tuple[float, float, float, float], ...]  # (amplitude, kz, kx, phase)

    @classmethod
    def draw(cls, config: SemPhantomConfig, rng: np.random.Generator) -> _ExtracellularSpace:
        height = config.extracellular_fraction * config.shape[1] * config.voxel_size[1]
        waves = []
        for _ in range(3):
            wavelength = rng.uniform(2.0, 6.0)
            direction = rng.uniform(0.0, 2.0 * np.pi)
            k = 2.0 * np.pi / wavelength
            waves.append(
                (
                    0.08 * height * rng.uniform(0.5, 1.0),
                    k * np.cos(direction),
                    k * np.sin(direction),
                    rng.uniform(0.0, 2.0 * np.pi),
                )
            )
        return cls(mean_height=height, wobble=tuple(waves))

    def edge(self, z_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Lower edge (y, um) of the extracellular band at broadcastable ``z_um``, ``x_um``."""
        edge = np.full(np.broadcast_shapes(np.shape(z_um), np.shape(x_um)), self.mean_height)
        for amplitude, kz, kx, phase in self.wobble:
            edge = edge + amplitude * np.cos(kz * z_um + kx * x_um + phase)
        return edge


def _voxel_centres(shape: tuple[int, ...], voxel_size: np.ndarray) -> list[np.ndarray]:
    return [(np.arange(n) + 0.5) * v for n, v in zip(shape, voxel_size, strict=True)]


def _cell_mask(
    shape: tuple[int, int, int], voxel_size: np.ndarray, space: _ExtracellularSpace | None
) -> np.ndarray:
    if space is None:
        return np.ones(shape, dtype=bool)
    z, y, x = _voxel_centres(shape, voxel_size)
    mask = np.empty(shape, dtype=bool)
    for k in range(shape[0]):
        edge = space.edge(z[k], x[None, :])  # (1, X)
        mask[k] = y[:, None] >= edge
    return mask


def _spheroid_box(
    spheroid: _Spheroid, shape: tuple[int, int, int], voxel_size: np.ndarray, margin: int
) -> tuple[slice, slice, slice] | None:
    """Return the index box of all voxels whose centre may lie inside the spheroid.

    The box is grown by ``margin`` voxels and clipped to the stack; None when it misses it.
    """
    half = spheroid.half_extent
    low = np.ceil((spheroid.centre - half) / voxel_size - 0.5).astype(int) - margin
    high = np.floor((spheroid.centre + half) / voxel_size - 0.5).astype(int) + margin + 1
    low = np.maximum(low, 0)
    high = np.minimum(high, shape)
    if np.any(high <= low):
        return None
    return (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))


def _spheroid_voxels(
    spheroid: _Spheroid, box: tuple[slice, slice, slice], voxel_size: np.ndarray
) -> np.ndarray:
    """Boolean mask over ``box``: voxel centres inside the spheroid (boundary included)."""
    dz, dy, dx = (
        (np.arange(s.start, s.stop) + 0.5) * v - c
        for s, v, c in zip(box, voxel_size, spheroid.centre, strict=True)
    )
    dz, dy, dx = dz[:, None, None], dy[None, :, None], dx[None, None, :]
    uz, uy, ux = spheroid.axis
    along = uz * dz + uy * dy + ux * dx
    squared = dz * dz + dy * dy + dx * dx
    # (t / a)^2 + (r / b)^2 <= 1 with r^2 = |d|^2 - t^2, multiplied by b^2.
    ratio = (spheroid.b / spheroid.a) ** 2
    return along * along * (ratio - 1.0) + squared <= spheroid.b**2


def _grow(mask: np.ndarray, faces_only: bool) -> np.ndarray:
    """Binary dilation by one voxel: the 3x3x3 cube (26 neighbours) or the 6 face neighbours."""
    if faces_only:
        grown = mask.copy()
        for axis in range(3):
            _or_shifted(grown, mask, axis)
        return grown
    grown = mask
    for axis in range(3):  # the cube is separable
        source = grown
        grown = source.copy()
        _or_shifted(grown, source, axis)
    return grown


def _or_shifted(target: np.ndarray, source: np.ndarray, axis: int) -> None:
    n = source.shape[axis]
    if n < 2:
        return
    forward = [slice(None)] * 3
    backward = [slice(None)] * 3
    forward[axis], backward[axis] = slice(1, None), slice(None, n - 1)
    target[tuple(forward)] |= source[tuple(backward)]
    target[tuple(backward)] |= source[tuple(forward)]


def _draw_size(config: SemPhantomConfig, rng: np.random.Generator) -> tuple[float, float]:
    """Semi-axes ``(a, b)`` in um with ``E[4/3 pi a b^2] = mean_volume`` exactly."""
    mean_ratio_excess = config.aspect_ratio - 1.0
    ratio = 1.0 + mean_ratio_excess * math.exp(
        config.aspect_spread * rng.standard_normal() - config.aspect_spread**2 / 2.0
    )
    # E[b^3] = b0^3 exp(9 s^2 / 2) for b = b0 exp(s N); b and the ratio are independent.
    b0 = (
        config.mean_volume
        / (4.0 / 3.0 * math.pi * config.aspect_ratio * math.exp(4.5 * config.size_spread**2))
    ) ** (1.0 / 3.0)
    b = b0 * math.exp(config.size_spread * rng.standard_normal())
    return ratio * b, b


def _draw_axis(
    config: SemPhantomConfig, myofibril_axis: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    first, second = _perpendicular_basis(myofibril_axis)
    if rng.random() < config.off_axis_fraction:
        cos_limit = math.cos(math.radians(_OFF_AXIS_MIN_ANGLE_DEG))
        angle = math.acos(rng.uniform(0.0, cos_limit))
    else:
        angle = math.radians(config.angular_spread_deg) * math.sqrt(
            -2.0 * math.log1p(-rng.random())
        )
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    axis = math.cos(angle) * myofibril_axis + math.sin(angle) * (
        math.cos(azimuth) * first + math.sin(azimuth) * second
    )
    return _unit(axis)


def _probe_points() -> np.ndarray:
    """Points in the unit ball (local frame: along, across, across) spread over a spheroid."""
    points = [[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [-0.97, 0.0, 0.0]]
    for t in (0.0, 0.45, -0.45, 0.8, -0.8):
        radius = math.sqrt(1.0 - t * t)
        points.append([t, 0.0, 0.0])
        for fraction in (0.6, 0.95):
            for angle in np.arange(6) * (math.pi / 3.0) + fraction:
                r = fraction * radius
                points.append([t, r * math.cos(angle), r * math.sin(angle)])
    return np.array(points)


_PROBE_POINTS = _probe_points()


def _probe_offsets(a: float, b: float, axis: np.ndarray) -> np.ndarray:
    """(P, 3) offsets in um from the centre of a spheroid to points inside it."""
    first, second = _perpendicular_basis(axis)
    return _PROBE_POINTS @ np.stack([axis * a, first * b, second * b])


class _Placer:
    """Add spheroids to a label volume without overlap and with a one-voxel gap.

    No two objects share a voxel; except within a touching pair no two are 26-adjacent; no
    object lies in or next to extracellular space. ``blocked`` holds every voxel a new object
    may not use: the 26-neighbourhood of placed objects and of extracellular space (``V`` meets
    the grown set iff the grown ``V`` meets the set, so candidates never need growing).
    """

    def __init__(self, config: SemPhantomConfig, voxel_size: np.ndarray, cell_mask: np.ndarray):
        self.shape = config.shape
        self.voxel_size = voxel_size
        self.labels = np.zeros(config.shape, dtype=np.uint16)
        outside = ~cell_mask
        self.blocked = _grow(outside, faces_only=False) if outside.any() else outside
        self.spheroids: list[_Spheroid] = []
        cell_voxels = int(np.count_nonzero(cell_mask))
        self.target = math.floor(config.volume_fraction * cell_voxels)
        self.limit = self.target + math.floor(FRACTION_OVERSHOOT * cell_voxels)
        self.filled = 0

    def probe_free(self, centres: np.ndarray, probe: np.ndarray, spheroid: _Spheroid) -> np.ndarray:
        """Return (n,) bool, False where a probe voxel of the spheroid at ``centres`` is blocked.

        A cheap, exact early rejection for candidate centres (n, 3): probe voxels whose centre
        lies inside the spheroid belong to it, so a blocked one means the full test fails too.
        """
        points = centres[:, None, :] + probe[None, :, :]
        index = np.floor(points / self.voxel_size).astype(np.intp)
        offset = (index + 0.5) * self.voxel_size - centres[:, None, :]
        along = offset @ spheroid.axis
        across2 = np.einsum("npk,npk->np", offset, offset) - along * along
        usable = (along / spheroid.a) ** 2 + across2 / spheroid.b**2 <= 1.0
        usable &= np.all((index >= 0) & (index < self.shape), axis=2)
        z, y, x = (np.where(usable, index[..., i], 0) for i in range(3))
        return ~np.any(usable & self.blocked[z, y, x], axis=1)

    def voxels_if_free(
        self, spheroid: _Spheroid, mate: int = 0
    ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Return the spheroid's box and voxels if it may be added, else None.

        With ``mate`` (a label not yet blocked) it must also share a voxel face with that
        object and no voxel.
        """
        box = _spheroid_box(spheroid, self.shape, self.voxel_size, margin=1)
        if box is None:
            return None
        voxels = _spheroid_voxels(spheroid, box, self.voxel_size)
        count = int(np.count_nonzero(voxels))
        if count == 0 or self.filled + count > self.limit or np.any(voxels & self.blocked[box]):
            return None
        if mate:
            region = self.labels[box] == mate
            if np.any(voxels & region) or not np.any(_grow(voxels, faces_only=True) & region):
                return None
        return box, voxels

    def write(self, spheroid: _Spheroid, box: tuple[slice, slice, slice], voxels: np.ndarray):
        label = len(self.spheroids) + 1
        if label > np.iinfo(self.labels.dtype).max:
            self.labels = self.labels.astype(np.uint32)
        self.labels[box][voxels] = label
        self.spheroids.append(spheroid)
        self.filled += int(np.count_nonzero(voxels))

    def block(self, box: tuple[slice, slice, slice], voxels: np.ndarray) -> None:
        # The box has a one-voxel margin (or ends at the stack edge), so growing stays inside.
        self.blocked[box] |= _grow(voxels, faces_only=False)

    def erase_last(self, box: tuple[slice, slice, slice], voxels: np.ndarray) -> None:
        self.labels[box][voxels] = 0
        self.filled -= int(np.count_nonzero(voxels))
        self.spheroids.pop()

    def link_last_pair(self) -> None:
        n = len(self.spheroids)
        self.spheroids[n - 2] = dataclasses.replace(self.spheroids[n - 2], partner_index=n - 1)
        self.spheroids[n - 1] = dataclasses.replace(self.spheroids[n - 1], partner_index=n - 2)


def _partner_candidates(
    first: _Spheroid, size: tuple[float, float], rng: np.random.Generator
) -> list[_Spheroid]:
    """Return partners for ``first`` with its axis, tangent to it, in random order.

    Tangent end to end (``d = a1 + a2`` along the axis) or side by side (``d = b1 + b2``
    across it); each also nudged 1 % and 3 % closer, since a tangent pair does not always
    share a voxel face.
    """
    a, b = size
    axis = first.axis
    across_first, across_second = _perpendicular_basis(axis)
    offsets = [axis * (first.a + a), -axis * (first.a + a)]
    for angle in rng.uniform(0.0, 2.0 * math.pi) + np.arange(4) * (math.pi / 2.0):
        direction = math.cos(angle) * across_first + math.sin(angle) * across_second
        offsets.append(direction * (first.b + b))
    order = rng.permutation(len(offsets))
    return [
        _Spheroid(first.centre + offsets[i] * (1.0 - shrink), a, b, axis)
        for i in order
        for shrink in (0.0, 0.01, 0.03)
    ]


def _place_mitochondria(
    config: SemPhantomConfig,
    voxel_size: np.ndarray,
    myofibril_axis: np.ndarray,
    cell_mask: np.ndarray,
    rng: np.random.Generator,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, list[_Spheroid]]:
    placer = _Placer(config, voxel_size, cell_mask)
    extent = np.asarray(config.shape) * voxel_size
    paired = 0
    failures = 0
    while placer.filled < placer.target and failures < _MAX_CONSECUTIVE_FAILURES:
        a, b = _draw_size(config, rng)
        axis = _draw_axis(config, myofibril_axis, rng)
        # Draw a pair whenever pairs hold less than their share (pairs are harder to place,
        # so drawing them at a fixed rate would leave too few); after a failure, a single.
        wants_pair = failures == 0 and paired < config.touching_pair_fraction * (
            len(placer.spheroids) + 2
        )
        pair_size = _draw_size(config, rng) if wants_pair else None
        shape = _Spheroid(np.zeros(3), a, b, axis)
        # Centres uniform over all positions whose box meets the stack, so cut objects are as
        # common at the border as in a larger volume.
        half = shape.half_extent
        centres = rng.uniform(-half, extent + half, size=(_POSITION_TRIES, 3))
        free = placer.probe_free(centres, _probe_offsets(a, b, axis), shape)
        placed = False
        for centre in centres[free]:
            spheroid = dataclasses.replace(shape, centre=centre)
            if pair_size is None:
                placed = _try_add_single(placer, spheroid)
            else:
                placed = _try_add_pair(placer, spheroid, pair_size, rng)
            if placed:
                paired += 0 if pair_size is None else 2
                break
        failures = 0 if placed else failures + 1
        if progress is not None and placer.target:
            progress("placing mitochondria", min(1.0, placer.filled / placer.target))
    return placer.labels, placer.spheroids


def _try_add_single(placer: _Placer, spheroid: _Spheroid) -> bool:
    found = placer.voxels_if_free(spheroid)
    if found is None:
        return False
    placer.write(spheroid, *found)
    placer.block(*found)
    return True


def _try_add_pair(
    placer: _Placer, first: _Spheroid, size: tuple[float, float], rng: np.random.Generator
) -> bool:
    found = placer.voxels_if_free(first)
    if found is None:
        return False
    placer.write(first, *found)  # written but not yet blocked, so the partner may touch it
    mate = len(placer.spheroids)
    for candidate in _partner_candidates(first, size, rng):
        partner = placer.voxels_if_free(candidate, mate=mate)
        if partner is not None:
            placer.write(candidate, *partner)
            placer.block(*found)
            placer.block(*partner)
            placer.link_last_pair()
            return True
    placer.erase_last(*found)
    return False


def _slice_contours(instances: np.ndarray) -> np.ndarray:
    """Per-slice inner outline (4-connectivity in y and x) of every labelled region."""
    contours = np.zeros(instances.shape, dtype=bool)
    step = max(1, 2**24 // max(1, instances.shape[1] * instances.shape[2]))
    for start in range(0, instances.shape[0], step):
        labels = instances[start : start + step]
        out = contours[start : start + step]
        for axis in (1, 2):
            n = labels.shape[axis]
            if n < 2:
                continue
            high = [slice(None)] * 3
            low = [slice(None)] * 3
            high[axis], low[axis] = slice(1, None), slice(None, n - 1)
            differs = labels[tuple(high)] != labels[tuple(low)]
            out[tuple(high)] |= differs
            out[tuple(low)] |= differs
        out &= labels != 0
    return contours


def _truth_table(
    spheroids: list[_Spheroid],
    instances: np.ndarray,
    voxel_size: np.ndarray,
    myofibril_axis: np.ndarray,
) -> tuple[MitochondrionTruth, ...]:
    if not spheroids:
        return ()
    counts = np.zeros(len(spheroids) + 1, dtype=np.int64)
    on_border = np.zeros(len(spheroids) + 1, dtype=bool)
    for index, spheroid in enumerate(spheroids):
        label = index + 1
        box = _spheroid_box(spheroid, instances.shape, voxel_size, margin=1)
        assert box is not None
        hit = instances[box] == label
        counts[label] = int(np.count_nonzero(hit))
        for axis in range(3):
            s = box[axis]
            first = s.start == 0 and np.take(hit, 0, axis=axis).any()
            last = s.stop == instances.shape[axis] and np.take(hit, -1, axis=axis).any()
            on_border[label] |= bool(first or last)
    voxel_volume = float(np.prod(voxel_size))
    rows = []
    for index, spheroid in enumerate(spheroids):
        label = index + 1
        cosine = min(1.0, abs(float(np.dot(spheroid.axis, myofibril_axis))))
        rows.append(
            MitochondrionTruth(
                label=label,
                centre_um=tuple(float(v) for v in spheroid.centre),
                semi_axes_um=(float(spheroid.a), float(spheroid.b), float(spheroid.b)),
                axis=tuple(float(v) for v in spheroid.axis),
                volume_um3=4.0 / 3.0 * math.pi * spheroid.a * spheroid.b**2,
                voxel_count=int(counts[label]),
                voxel_volume_um3=int(counts[label]) * voxel_volume,
                touches_border=bool(on_border[label]),
                touching_partner=spheroid.partner_index + 1,
                angle_to_myofibril_deg=math.degrees(math.acos(cosine)),
            )
        )
    return tuple(rows)


# --------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WaveField:
    """A smooth random scalar field: a sum of plane waves, normalised to unit variance."""

    wavevectors: np.ndarray  # (n, 3) rad/um, (z, y, x)
    phases: np.ndarray  # (n,)

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> _WaveField:
        directions = rng.standard_normal((n, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = rng.uniform(wavelength[0], wavelength[1], n)
        return cls(
            wavevectors=directions * (2.0 * np.pi / lengths)[:, None],
            phases=rng.uniform(0.0, 2.0 * np.pi, n),
        )

    def slice_values(self, z_um: float, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        """Values on one slice; ``y_um`` (Y, 1) and ``x_um`` (1, X) -> (Y, X) float32."""
        total = np.zeros(np.broadcast_shapes(y_um.shape, x_um.shape), dtype=np.float32)
        for (kz, ky, kx), phase in zip(self.wavevectors, self.phases, strict=True):
            # cos(u + v) = cos u cos v - sin u sin v: trigonometry on a row and a column only.
            u = np.float32(kz * z_um + phase) + np.float32(ky) * y_um
            v = np.float32(kx) * x_um
            total += np.cos(u) * np.cos(v)
            total -= np.sin(u) * np.sin(v)
        return total * np.float32(math.sqrt(2.0 / len(self.phases)))


def _slice_drift(
    depth: int, appearance: SemAppearance, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-slice offsets and gains.

    Each is a centred random walk with a few jumps, scaled to the requested standard deviation
    over slices.
    """

    def walk() -> np.ndarray:
        steps = rng.standard_normal(depth)
        jumps = rng.random(depth) < 0.03
        steps[jumps] *= 6.0
        values = np.cumsum(steps)
        values -= values.mean()
        spread = values.std()
        return values / spread if spread > 0 else np.zeros(depth)

    offsets = appearance.drift_sd * walk()
    gains = 1.0 + appearance.gain_drift_sd * walk()
    return offsets, gains


def _render(
    config: SemPhantomConfig,
    appearance: SemAppearance,
    voxel_size: np.ndarray,
    myofibril_axis: np.ndarray,
    instances: np.ndarray,
    contours: np.ndarray,
    spheroids: list[_Spheroid],
    cell_mask: np.ndarray,
    extracellular: bool,
    offsets: np.ndarray,
    gains: np.ndarray,
    rng: np.random.Generator,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Draw the image one slice at a time (memory: a few (Y, X) float32 arrays)."""
    depth, height, width = config.shape
    z, y, x = _voxel_centres(config.shape, voxel_size)
    y_col = y.astype(np.float32)[:, None]
    x_row = x.astype(np.float32)[None, :]
    pixel = float(min(voxel_size[1], voxel_size[2]))

    # Myofibril lattice across the fibre axis: two families of cleft planes, turned 45 degrees
    # from the z direction so that no family lies in a slice plane.
    along = myofibril_axis
    z_hat = np.array([1.0, 0.0, 0.0])
    tilted = z_hat - np.dot(z_hat, along) * along
    first = _unit(tilted) if np.linalg.norm(tilted) > 1e-6 else _perpendicular_basis(along)[0]
    second = _cross(along, first)
    across = (_unit(first + second), _unit(first - second))
    spacing = appearance.myofibril_spacing
    warp = [_WaveField.draw(rng, 4, (2.0, 6.0)) for _ in range(2)]
    z_disc_phase = _WaveField.draw(rng, 4, (1.5, 5.0))
    fibril_offset_seed = int(rng.integers(0, 2**31 - 1))
    extracellular_texture = _WaveField.draw(rng, 6, (0.5, 2.0))
    bright_level = _gaussian_quantile(1.0 - appearance.bright_extracellular_share)

    label_count = len(spheroids)
    centres = np.zeros((label_count + 1, 3))
    axes = np.zeros((label_count + 1, 3))
    for index, spheroid in enumerate(spheroids):
        centres[index + 1] = spheroid.centre
        axes[index + 1] = spheroid.axis
    cristae_phase = rng.uniform(0.0, 2.0 * np.pi, label_count + 1)
    cristae_period = max(appearance.cristae_period, 3.0 * pixel)

    grain_sigma_px = appearance.grain_correlation / voxel_size[1:]
    psf_sigma_px = appearance.psf_sigma / voxel_size[1:]
    sarcomere = config.sarcomere_length
    image = np.empty(config.shape, dtype=np.uint8)
    for k in range(depth):
        if progress is not None:
            progress("drawing slices", k / depth)
        zk = float(z[k])
        position = [np.float32(zk * along[0]) + along[1] * y_col + along[2] * x_row]
        position += [np.float32(zk * e[0]) + e[1] * y_col + e[2] * x_row for e in across]
        # Myofibrils: clefts between fibrils, then Z-discs and banding along the axis.
        cleft = np.zeros((height, width), dtype=np.float32)
        fibril_index = []
        for family in range(2):
            warped = position[family + 1] + 0.15 * spacing * warp[family].slice_values(
                zk, y_col, x_row
            )
            nearest = np.round(warped / spacing)
            fibril_index.append(nearest)
            distance = np.abs(warped - nearest * spacing)
            np.maximum(cleft, np.exp(-((distance / 0.05) ** 2)), out=cleft)
        misregistration = _hash_unit(fibril_index[0], fibril_index[1], fibril_offset_seed)
        s = position[0] + 0.08 * z_disc_phase.slice_values(zk, y_col, x_row)
        s = s + 0.15 * sarcomere * (misregistration - 0.5)
        phase = np.mod(s, sarcomere)
        to_disc = np.minimum(phase, sarcomere - phase)
        clean = (
            appearance.myofibril_intensity
            - appearance.cleft_depth * cleft
            - appearance.z_disc_depth * np.exp(-((to_disc / appearance.z_disc_half_width) ** 2))
            + appearance.band_amplitude * np.cos(2.0 * np.pi * phase / sarcomere)
        ).astype(np.float32)
        # Mitochondria: base level, cristae stripes across the long axis, darker outline.
        labels = instances[k]
        rows, cols = np.nonzero(labels)
        if rows.size:
            which = labels[rows, cols].astype(np.intp)
            offset = np.stack([np.full(rows.size, zk), y[rows], x[cols]], axis=1) - centres[which]
            t = np.einsum("ij,ij->i", offset, axes[which])
            stripes = np.cos(2.0 * np.pi * t / cristae_period + cristae_phase[which])
            clean[rows, cols] = (
                appearance.mitochondrion_intensity + appearance.cristae_amplitude * stripes
            )
            clean[contours[k]] -= appearance.membrane_depth
        if extracellular:
            outside = ~cell_mask[k]
            bright = extracellular_texture.slice_values(zk, y_col, x_row) > bright_level
            clean = np.where(
                outside,
                np.where(
                    bright,
                    np.float32(appearance.extracellular_bright),
                    np.float32(appearance.extracellular_dark),
                ),
                clean,
            )
        if appearance.grain_sd > 0:
            grain = ndimage.gaussian_filter(
                rng.standard_normal((height, width), dtype=np.float32), grain_sigma_px
            )
            grain_sd = float(grain.std())
            if grain_sd > 0:
                clean += grain * np.float32(appearance.grain_sd / grain_sd)
        blurred = ndimage.gaussian_filter(clean, psf_sigma_px, mode="nearest")
        noisy = gains[k] * blurred + offsets[k]
        noisy += rng.standard_normal((height, width), dtype=np.float32) * np.float32(
            appearance.noise_sd
        )
        image[k] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return image


def _hash_unit(first: np.ndarray, second: np.ndarray, seed: int) -> np.ndarray:
    """Return a deterministic pseudo-random value in [0, 1) for each integer pair."""
    a = first.astype(np.int64) * 73856093
    b = second.astype(np.int64) * 19349663
    mixed = (a ^ b ^ seed) & 0xFFFFFFFF
    mixed = (mixed * 2654435761) & 0xFFFFFFFF
    mixed ^= mixed >> 16
    return (mixed & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def _gaussian_quantile(probability: float) -> float:
    """Quantile of the unit-variance wave field, approximated by the normal distribution."""
    return float(ndtri(min(max(probability, 1e-6), 1.0 - 1e-6)))


def ideal_probability_maps(phantom: SemPhantom) -> tuple[np.ndarray, np.ndarray]:
    """Object and contour maps a perfect network would give for ``phantom``.

    Returns
    -------
    (object_map, contour_map) : (Z, Y, X) ndarray of uint8
        255 on mitochondria (resp. their outlines), 0 elsewhere, on the 0..255 scale of CDeep3M's
        probability maps that :mod:`seglab.instances` splits.
    """
    object_map = np.where(phantom.instances > 0, 255, 0).astype(np.uint8)
    contour_map = np.multiply(phantom.contours, 255, dtype=np.uint8)
    return object_map, contour_map


def noisy_probability_maps(
    phantom: SemPhantom,
    *,
    seed: int = 0,
    blur_px: float = 1.0,
    noise_sd: float = 40.0,
    missing_contour: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Imperfect object and contour maps, for testing instance splitting against the truth.

    The ideal maps are blurred in-plane by ``blur_px`` pixels, Gaussian noise of ``noise_sd``
    grey levels is added, and the contour map loses ``missing_contour`` of its area in smooth
    blobs (a network that misses pieces of outlines).

    Returns
    -------
    (object_map, contour_map) : (Z, Y, X) ndarray of uint8
    """
    if not 0.0 <= missing_contour < 1.0:
        raise SeglabError(
            f"missing_contour must be in [0, 1), got {missing_contour!r}", "pass e.g. 0.2"
        )
    rng = np.random.default_rng(seed)
    maps = []
    for ideal in ideal_probability_maps(phantom):
        blurred = ndimage.gaussian_filter(ideal.astype(np.float32), (0, blur_px, blur_px))
        blurred += rng.normal(0.0, noise_sd, blurred.shape).astype(np.float32)
        maps.append(np.clip(np.rint(blurred), 0, 255).astype(np.uint8))
    field = ndimage.gaussian_filter(
        rng.standard_normal(maps[1].shape).astype(np.float32), (0, 1.5, 1.5)
    )
    maps[1][field < np.quantile(field, missing_contour)] = 0
    return maps[0], maps[1]
