"""Colour-coded label images and their class-colour tables.

Annotation tools (study A used a web tool) save ground truth as an RGB image with one colour per
class. A :class:`ColourTable` maps class indices to names and colours, and converts between the
colour image (H, W, 3) and the index map (H, W).

A table is stored as JSON::

    {"classes": [{"index": 0, "name": "Background", "colour": [0, 0, 0]}, ...]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglab.errors import DataFileError, SeglabError


class UnknownColoursError(DataFileError):
    """Label pixels whose colours are not in the colour table (a file's problem to fix there)."""


@dataclass(frozen=True)
class ClassColour:
    """One class of a colour table.

    Attributes
    ----------
    index : int
        Class index in the label map, 0..255.
    name : str
        Human-readable class name.
    colour : tuple of int, shape (3,)
        RGB colour, each 0..255.
    """

    index: int
    name: str
    colour: tuple[int, int, int]


class ColourTable:
    """Class indices, names and RGB colours; encodes and decodes colour-coded label images.

    Parameters
    ----------
    classes : sequence of ClassColour
        One entry per class; indices and colours must be unique.
    """

    def __init__(self, classes: list[ClassColour] | tuple[ClassColour, ...]) -> None:
        classes = tuple(classes)
        if not classes:
            raise SeglabError("a colour table needs at least one class", "list the classes")
        for c in classes:
            if not isinstance(c, ClassColour):
                raise SeglabError(
                    f"a colour table takes ClassColour entries, got {c!r}",
                    "build each class as ClassColour(index, name, (r, g, b))",
                )
            if not isinstance(c.index, int | np.integer) or not 0 <= c.index <= 255:
                raise SeglabError(
                    f"class index {c.index!r} of {c.name!r} is not an integer in 0..255",
                    "use indices between 0 and 255",
                )
            try:
                colour = tuple(int(v) for v in c.colour)
            except (TypeError, ValueError):
                colour = ()
            if len(colour) != 3 or any(not 0 <= v <= 255 for v in colour):
                raise SeglabError(
                    f"colour {c.colour!r} of class {c.name!r} is not an RGB triple of 0..255",
                    "give three integers between 0 and 255",
                )
        indices = [int(c.index) for c in classes]
        colours = [tuple(int(v) for v in c.colour) for c in classes]
        if len(set(indices)) != len(indices):
            raise SeglabError(f"class indices repeat in {indices}", "give each class its own index")
        if len(set(colours)) != len(colours):
            raise SeglabError(
                f"class colours repeat in {colours}", "give each class its own colour"
            )
        self.classes = tuple(
            ClassColour(int(c.index), str(c.name), tuple(int(v) for v in c.colour))  # type: ignore[arg-type]
            for c in sorted(classes, key=lambda c: c.index)
        )

    def __len__(self) -> int:
        return len(self.classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColourTable) and self.classes == other.classes

    def __repr__(self) -> str:
        return f"ColourTable({list(self.classes)!r})"

    @property
    def names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    @property
    def indices(self) -> list[int]:
        """Class indices in ascending order."""
        return [c.index for c in self.classes]

    @property
    def colours(self) -> np.ndarray:
        """RGB colours, shape (n_classes, 3), uint8, in index order."""
        return np.array([c.colour for c in self.classes], dtype=np.uint8)

    # ------------------------------------------------------------------ conversion
    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Colour a label map.

        Parameters
        ----------
        labels : (..., H, W) ndarray of int
            Class indices, each present in the table.

        Returns
        -------
        (..., H, W, 3) ndarray of uint8
            The colour-coded label image.
        """
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise SeglabError(
                f"a label map must hold integers, got dtype {labels.dtype}",
                "round or cast the label map to an integer type",
            )
        lut = np.zeros((256, 3), dtype=np.uint8)
        known = np.zeros(256, dtype=bool)
        for c in self.classes:
            lut[c.index] = c.colour
            known[c.index] = True
        bad = np.unique(labels[(labels < 0) | (labels > 255)])
        if bad.size == 0:
            present = np.unique(labels)
            bad = present[~known[present]]
        if bad.size:
            raise SeglabError(
                f"label values {bad[:10].tolist()} are not in the colour table "
                f"(known: {self.indices})",
                "fix the label map or add the classes to the table",
            )
        return lut[labels]

    def decode(self, rgb: np.ndarray, *, tolerance: float = 0.0) -> np.ndarray:
        """Turn a colour-coded label image into class indices.

        Parameters
        ----------
        rgb : (..., H, W, 3) or (..., H, W, 4) ndarray of uint8
            Colour-coded labels; an alpha channel is ignored.
        tolerance : float
            Largest Euclidean RGB distance at which a pixel is given the nearest table colour
            (0 = exact match only; use a few units for lossy-compressed annotations).

        Returns
        -------
        (..., H, W) ndarray of uint8
            Class indices.

        Raises
        ------
        UnknownColoursError
            When pixels have colours not in the table; the message lists them with their counts.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim < 3 or rgb.shape[-1] not in (3, 4):
            raise SeglabError(
                f"a colour-coded label image must have shape (H, W, 3), got {rgb.shape}",
                "pass an RGB image, not a grey-level or index map",
            )
        if rgb.dtype.kind not in "biuf":
            raise SeglabError(
                f"a colour-coded label image must hold numbers, got dtype {rgb.dtype}",
                "pass an RGB image of uint8",
            )
        rgb = rgb[..., :3]
        in_range = rgb.dtype == np.uint8 or rgb.size == 0
        if not in_range:
            in_range = rgb.min() >= 0 and rgb.max() <= 255 and np.array_equal(rgb, np.round(rgb))
        if not in_range:
            raise SeglabError(
                f"colour values must be integers 0..255, got {rgb.dtype} values from "
                f"{rgb.min()} to {rgb.max()}",
                "pass the RGB image as uint8 (scale 0..1 floats by 255 first)",
            )
        rgb = rgb.astype(np.int32)
        table = self.colours.astype(np.int32)
        out = np.zeros(rgb.shape[:-1], dtype=np.uint8)
        matched = np.zeros(rgb.shape[:-1], dtype=bool)
        if tolerance <= 0:
            key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            for c, col in zip(self.classes, table, strict=True):
                hit = key == ((col[0] << 16) | (col[1] << 8) | col[2])
                out[hit] = c.index
                matched |= hit
        else:
            d2 = ((rgb[..., None, :] - table) ** 2).sum(-1)
            nearest = d2.argmin(-1)
            matched = d2.min(-1) <= tolerance**2
            out = np.asarray(self.indices, dtype=np.uint8)[nearest]
        if not matched.all():
            colours, counts = np.unique(rgb[~matched].reshape(-1, 3), axis=0, return_counts=True)
            order = np.argsort(-counts)[:8]
            listed = ", ".join(
                f"{tuple(int(v) for v in colours[i])} x{int(counts[i])}" for i in order
            )
            more = f" and {len(colours) - len(order)} more" if len(colours) > len(order) else ""
            raise UnknownColoursError(
                f"{int((~matched).sum())} pixels have colours not in the class table: "
                f"{listed}{more}",
                "add these colours to the table, or pass a tolerance for compressed images",
            )
        return out

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """Return the JSON-ready form ``{"classes": [{"index", "name", "colour"}, ...]}``."""
        return {
            "classes": [
                {"index": c.index, "name": c.name, "colour": list(c.colour)} for c in self.classes
            ]
        }

    @classmethod
    def from_dict(cls, data: dict) -> ColourTable:
        """Build a table from the form written by :meth:`to_dict`."""
        try:
            entries = data["classes"]
            return cls(
                [ClassColour(int(e["index"]), str(e["name"]), tuple(e["colour"])) for e in entries]
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SeglabError):
                raise
            raise SeglabError(
                f"a colour table must be {{'classes': [{{'index', 'name', 'colour'}}, ...]}}: "
                f"{type(err).__name__}: {err}",
                "fix the colour-table JSON",
            ) from err

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON (atomically) and return the path."""
        from seglab.io.atomic import atomic_file

        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ColourTable:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataFileError(f"colour table {path} not found", "check the path")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataFileError(
                f"colour table {path} is not valid JSON ({err})", "fix or regenerate the file"
            ) from err
        return cls.from_dict(data)


#: Study A's six classes (C1..C6) with the colours the lung phantom and bundle use.
LUNG_CLASSES = ColourTable(
    [
        ClassColour(0, "Background", (0, 0, 0)),
        ClassColour(1, "Conductive Airway", (255, 255, 0)),
        ClassColour(2, "Distal Acinar Tubule Bud", (0, 255, 0)),
        ClassColour(3, "Proximal Acinar Tubule", (0, 0, 255)),
        ClassColour(4, "Pulmonary Artery", (255, 0, 0)),
        ClassColour(5, "Pulmonary Vein and Venule", (0, 255, 255)),
    ]
)
