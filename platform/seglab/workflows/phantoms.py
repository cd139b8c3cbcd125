"""Write phantom datasets in seglab's dataset folder convention.

A lung dataset::

    OUT/images/lung_000.png     RGB immunofluorescence phantom, uint8
    OUT/labels/lung_000.png     colour-coded labels (classes.json gives the colours)
    OUT/classes.json            the six classes of study A
    OUT/class_fractions.csv     share of pixels per class and image
    OUT/manifest.json           files, shapes and SHA-256 digests

An SEM dataset::

    OUT/images/cellA.tif        (Z, Y, X) uint8 stack, ImageJ TIFF with the voxel size in um
    OUT/labels/cellA.tif        (Z, Y, X) uint16 instance labels, 0 = background
    OUT/contours/cellA.tif      (Z, Y, X) uint8 contour map, 255 on object outlines
    OUT/truth.csv               one row per mitochondrion (centre, semi-axes, axis, volume, ...)
    OUT/phantom.json            voxel size, myofibril axis, sarcomere length, intensities, options
    OUT/manifest.json
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from seglab.errors import SeglabError
from seglab.io.atomic import atomic_directory
from seglab.io.dataset import write_manifest
from seglab.io.images import write_image
from seglab.phantoms.lung import LungPhantomConfig, make_lung_phantom
from seglab.phantoms.sem import SEM_TRUTH_COLUMNS, make_sem_phantom, truth_table_rows
from seglab.workflows._outputs import Summary, phase_progress, progress, write_csv, write_json


def write_lung_phantoms(
    out: str | os.PathLike[str],
    *,
    count: int = 4,
    size: int = 1024,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write ``count`` lung phantoms of ``size`` x ``size`` pixels as a dataset folder.

    Image ``i`` uses seed ``seed + i``. Returns a :class:`Summary` of class fractions and paths.
    """
    out = Path(out)
    configs = [LungPhantomConfig(size=size, seed=seed + i) for i in range(count)]
    rows = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        table = None
        for i, config in enumerate(progress(configs, "lung phantoms")):
            phantom = make_lung_phantom(config)
            table = phantom.colour_table
            name = f"lung_{i:03d}"
            write_image(tmp / "images" / f"{name}.png", phantom.image)
            write_image(tmp / "labels" / f"{name}.png", phantom.label_rgb)
            rows.append(
                {"name": name, "seed": config.seed}
                | {n: f for n, f in zip(table.names, phantom.class_fractions, strict=True)}
            )
        assert table is not None
        table.save(tmp / "classes.json")
        write_csv(tmp / "class_fractions.csv", rows, ["name", "seed", *table.names])
        write_manifest(tmp)
    mean = np.mean([[r[n] for n in table.names] for r in rows], axis=0)
    summary = Summary(f"wrote {count} lung phantoms of {size} x {size} px", out)
    summary.lines.append(
        "mean class fractions: "
        + ", ".join(f"{n} {100 * f:.1f} %" for n, f in zip(table.names, mean, strict=True))
    )
    summary.outputs = {
        "images": out / "images",
        "labels": out / "labels",
        "classes": out / "classes.json",
        "fractions": out / "class_fractions.csv",
        "manifest": out / "manifest.json",
    }
    return summary


def write_sem_phantom(
    out: str | os.PathLike[str],
    *,
    shape: tuple[int, int, int] = (32, 128, 128),
    voxel_size: tuple[float, float, float] | None = None,
    cell: str = "A",
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0),
    extracellular: bool = False,
    seed: int = 0,
    count: int = 1,
    overwrite: bool = False,
) -> Summary:
    """Write SEM stack phantoms (image, instances, contours, truth) as one dataset folder.

    With ``count == 1`` the stack is called ``cell<cell>``; with more, ``cell<cell>_<i>`` with
    seeds ``seed + i`` (e.g. training and validation stacks of one cell), ``truth.csv`` gets a
    leading ``stack`` column and ``phantom.json`` one entry per stack.
    """
    out = Path(out)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SeglabError(f"count must be a positive integer, got {count!r}", "pass e.g. 2")
    names = [f"cell{cell}"] if count == 1 else [f"cell{cell}_{i:02d}" for i in range(count)]
    rows: list[dict] = []
    metas: dict[str, dict] = {}
    phantoms = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for i, name in enumerate(names):
            options = {
                "shape": shape,
                "cell": cell,
                "myofibril_axis": axis,
                "extracellular": extracellular,
                "seed": seed + i,
            }
            if voxel_size is not None:
                options["voxel_size"] = voxel_size
            with phase_progress() as report_progress:
                phantom = make_sem_phantom(progress=report_progress, **options)
            spacing = phantom.voxel_size
            write_image(tmp / "images" / f"{name}.tif", phantom.image, spacing, axes="ZYX")
            write_image(tmp / "labels" / f"{name}.tif", phantom.instances, spacing, axes="ZYX")
            # 0/255 in uint8 without an int64 temporary (the study-size stack has 724 M voxels)
            contours = np.multiply(phantom.contours, 255, dtype=np.uint8)
            write_image(tmp / "contours" / f"{name}.tif", contours, spacing, axes="ZYX")
            del contours
            stack_rows = truth_table_rows(phantom)
            rows += [{"stack": name} | r for r in stack_rows] if count > 1 else stack_rows
            metas[name] = {
                "voxel_size_um": spacing,
                "volume_fraction": phantom.volume_fraction,
                "config": dataclasses.asdict(phantom.config),
                "metadata": phantom.metadata,
            }
            phantoms.append((phantom.voxel_size, phantom.volume_fraction, list(phantom.truth)))
            del phantom
        columns = ["stack", *SEM_TRUTH_COLUMNS] if count > 1 else SEM_TRUTH_COLUMNS
        write_csv(tmp / "truth.csv", rows, columns)
        write_json(tmp / "phantom.json", metas[names[0]] if count == 1 else {"stacks": metas})
        write_manifest(tmp)
    voxel, fraction, truth = phantoms[0]
    name = names[0]
    interior = [t for t in truth if not t.touches_border]
    summary = Summary(
        f"wrote {count} SEM phantom stack(s) of cell {cell}: {shape[0]} x {shape[1]} x "
        f"{shape[2]} voxels of {' x '.join(f'{v:g}' for v in voxel)} um",
        out,
    )
    vols = [t.volume_um3 for t in interior]
    summary.lines += [
        f"{names[0]}: {len(truth)} mitochondria ({len(interior)} not touching the border), "
        f"volume fraction {100 * fraction:.1f} %",
        f"mean volume of interior objects {np.mean(vols):.3f} um^3"
        if vols
        else "no interior objects",
    ]
    summary.outputs = {
        "image": out / "images" / f"{name}.tif",
        "instances": out / "labels" / f"{name}.tif",
        "contours": out / "contours" / f"{name}.tif",
        "truth": out / "truth.csv",
        "metadata": out / "phantom.json",
        "manifest": out / "manifest.json",
    }
    return summary
