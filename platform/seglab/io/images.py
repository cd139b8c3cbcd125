"""Read and write 2D images and 3D stacks: PNG, TIFF (ImageJ, OME, plain) and NIfTI.

Every reader returns arrays in one layout, whatever the file stores:

==========  ================  ============================================
``axes``    array shape       meaning
==========  ================  ============================================
``"YX"``    (H, W)            2D grey-level image or label map
``"YXC"``   (H, W, C)         2D image with C channels (RGB: C = 3)
``"ZYX"``   (Z, H, W)         stack of Z slices
``"ZYXC"``  (Z, H, W, C)      stack of colour slices
==========  ================  ============================================

Axes of length 1 other than Y and X are dropped on reading, so a one-slice stack reads back as a
2D image. ``spacing`` is the physical size of a pixel along each spatial axis (the axes without
``C``), in micrometres, in the same order as the array: ``(y, x)`` or ``(z, y, x)``; it is
``None`` when the file does not say (PNG never does).

Where the spacing comes from:

* TIFF written by seglab with a dtype ImageJ cannot hold: the JSON description
  (``{"spacing": [...], "unit": "um"}``), exact.
* OME-TIFF: ``PhysicalSizeX/Y/Z`` and their units (default um).
* ImageJ TIFF: ``XResolution``/``YResolution`` (pixels per unit) and ``spacing`` (z step) with the
  ``unit`` of the description (``micron``, ``um``, ``µm`` also as the escape ImageJ writes,
  ``nm``, ``mm``, ...). As in ImageJ, a missing value means 1 unit; without a real unit
  (``pixel`` or none) the spacing is unknown.
* plain TIFF: resolution tags with ResolutionUnit centimetre, millimetre or micrometre; the common
  72 pixels per inch is a screen default, not a pixel size, and is ignored. A plain multi-page
  TIFF has no z step, so its spacing is unknown.
* NIfTI: ``pixdim`` with the spatial unit of ``xyzt_units`` (metre, mm, micron); an ``unknown``
  unit gives an unknown spacing. NIfTI-1 stores ``pixdim`` as float32; values are read back as the
  shortest decimal that float32 holds, so a spacing written as 0.3 reads back as 0.3.

NIfTI stores axes in the order (x, y, z[, c]) with x varying fastest; seglab arrays are
(z, y, x[, c]). Readers and writers transpose between the two, so ``write_image`` then
``read_image`` returns the same array. A 2D colour image is stored as (x, y, 1, c).

Errors: a missing file, an unsupported suffix, a truncated or corrupt file, an empty image, a
layout seglab cannot use or (from :func:`read_image`) NaN or infinite pixel values raise
:class:`~seglab.errors.DataFileError` with a one-line message;
bad arguments raise :class:`~seglab.errors.SeglabError`. Files are written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglab.errors import DataFileError, SeglabError
from seglab.io.atomic import atomic_file

#: File-name endings the readers and writers understand, by format.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "png": (".png",),
    "ome-tiff": (".ome.tif", ".ome.tiff"),
    "tiff": (".tif", ".tiff"),
    "nifti": (".nii", ".nii.gz"),
}

_AXES_LAYOUTS = ("YX", "YXC", "ZYX", "ZYXC")

# Micrometres per unit; keys are lower-case.
_UM_PER_UNIT: dict[str, float] = {
    "um": 1.0,
    "\u00b5m": 1.0,  # micro sign
    "\u03bcm": 1.0,  # Greek mu
    "\\u00b5m": 1.0,  # ImageJ writes the escape literally
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "nanometers": 1e-3,
    "nanometres": 1e-3,
    "pm": 1e-6,
    "\u00e5": 1e-4,  # angstrom
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}

# TIFF ResolutionUnit -> micrometres per unit (2 = inch is deliberately absent).
_TIFF_RESUNIT_UM = {3: 1e4, 4: 1e3, 5: 1.0}

_NIFTI_UNIT_UM = {"meter": 1e6, "mm": 1e3, "micron": 1.0}

_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


# ---------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, read from its header without decoding the pixels.

    Attributes
    ----------
    path : Path
        The file.
    shape : tuple of int
        Shape of the array :func:`read_image` returns.
    dtype : numpy.dtype
        Its dtype.
    axes : str
        ``"YX"``, ``"YXC"``, ``"ZYX"`` or ``"ZYXC"``.
    spacing : tuple of float or None
        Pixel size in um per spatial axis, ``(y, x)`` or ``(z, y, x)``; None when unknown.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    spacing: tuple[float, ...] | None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis: ``(H, W)`` or ``(Z, H, W)``."""
        return tuple(n for n, a in zip(self.shape, self.axes, strict=True) if a != "C")


@dataclass
class Image:
    """An image or stack with its axes and physical pixel size.

    Attributes
    ----------
    array : ndarray
        ``(H, W)``, ``(H, W, C)``, ``(Z, H, W)`` or ``(Z, H, W, C)``, as ``axes`` says. A
        ``numpy.memmap`` when it comes from :func:`read_stack_memmap`.
    spacing : tuple of float or None
        Pixel size in um per spatial axis, same order as the array (``(y, x)`` or
        ``(z, y, x)``); None when unknown.
    path : Path or None
        The file it was read from, if any.
    axes : str
        ``"YX"``, ``"YXC"``, ``"ZYX"`` or ``"ZYXC"``; inferred from the shape and the length of
        ``spacing`` when left empty (see :func:`infer_axes`).
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    path: Path | None = None
    axes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            self.array = np.asarray(self.array)
        self.axes = _check_axes(self.array.shape, self.axes or None, self.spacing)
        self.spacing = _check_spacing(self.spacing, self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`array`."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis: ``(H, W)`` or ``(Z, H, W)``."""
        return tuple(n for n, a in zip(self.array.shape, self.axes, strict=True) if a != "C")


# ---------------------------------------------------------------------------------------- public
def image_format(path: str | os.PathLike[str]) -> str:
    """Name the format a file name stands for.

    Parameters
    ----------
    path : path-like
        A file name; only its ending is looked at (case-insensitive).

    Returns
    -------
    str
        ``"png"``, ``"tiff"``, ``"ome-tiff"`` or ``"nifti"``.

    Raises
    ------
    DataFileError
        For any other ending.
    """
    name = Path(path).name.lower()
    for fmt, endings in SUFFIXES.items():
        if name.endswith(endings):
            return fmt
    known = ", ".join(s for endings in SUFFIXES.values() for s in endings)
    raise DataFileError(
        f"{Path(path)} has an unsupported file type (expected one of {known})",
        "convert the image to TIFF, PNG or NIfTI",
    )


def image_stem(path: str | os.PathLike[str]) -> str:
    """Strip the image ending from a file name (``a.ome.tif`` -> ``a``, ``b.nii.gz`` -> ``b``).

    Raises
    ------
    DataFileError
        When the ending is not a supported image format.
    """
    name = Path(path).name
    fmt = image_format(name)
    for ending in sorted(SUFFIXES[fmt], key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    raise AssertionError("unreachable")  # pragma: no cover


def infer_axes(shape: Sequence[int], spatial_ndim: int | None = None) -> str:
    """Guess the axes of an array from its shape.

    Parameters
    ----------
    shape : sequence of int
        Array shape, 2 to 4 dimensions.
    spatial_ndim : int, optional
        Number of spatial axes when known (the length of a spacing): it settles 3 dimensions.

    Returns
    -------
    str
        ``"YX"`` for 2 dimensions; for 3 dimensions ``"YXC"`` if the last axis has length 3 or
        4 (RGB, RGBA) and ``spatial_ndim`` is not 3, else ``"ZYX"``; ``"ZYXC"`` for 4
        dimensions. Pass ``axes`` (or a 3-value spacing) for a stack only 3 or 4 pixels wide.
    """
    ndim = len(shape)
    if ndim == 2:
        return "YX"
    if ndim == 3:
        return "YXC" if shape[-1] in (3, 4) and spatial_ndim != 3 else "ZYX"
    if ndim == 4:
        return "ZYXC"
    raise SeglabError(
        f"an image must have 2 to 4 dimensions, got shape {tuple(shape)}",
        "pass (H, W), (H, W, C), (Z, H, W) or (Z, H, W, C)",
    )


def read_image_info(path: str | os.PathLike[str]) -> ImageInfo:
    """Read shape, dtype, axes and spacing from a file's header, without decoding pixels.

    Parameters
    ----------
    path : path-like
        A ``.png``, ``.tif``/``.tiff``/``.ome.tif`` or ``.nii``/``.nii.gz`` file.

    Returns
    -------
    ImageInfo
        What :func:`read_image` would return, less the pixels.

    Raises
    ------
    DataFileError
        Missing file, unsupported suffix, corrupt or truncated header, empty image, or a layout
        with more than one axis besides Y, X and channels.
    """
    path, fmt = _existing_image(path)
    with _file_errors(path):
        if fmt == "png":
            return _png_info(path)
        if fmt == "nifti":
            return _nifti_info(path)
        with _tiff(path) as (tif, problems):
            info, _ = _tiff_info(tif, path)
            _raise_logged(path, problems)
        return info


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read an image or stack.

    Parameters
    ----------
    path : path-like
        A ``.png``, ``.tif``/``.tiff``/``.ome.tif`` or ``.nii``/``.nii.gz`` file.

    Returns
    -------
    Image
        ``array`` in the layout of ``axes`` (see the module docstring), the file's dtype
        (a NIfTI with scaling slope/intercept gives floats); ``spacing`` in um or None.

    Raises
    ------
    DataFileError
        Missing file, unsupported suffix, truncated or corrupt file, empty image (0 pages or a
        zero-length axis), 16-bit colour PNG, more than one axis besides Y, X and channels, or
        NaN or infinite pixel values (the message counts them and gives the first one's index).
    """
    path, fmt = _existing_image(path)
    with _file_errors(path):
        if fmt == "png":
            image = _read_png(path)
        elif fmt == "nifti":
            image = _read_nifti(path)
        else:
            with _tiff(path) as (tif, problems):
                info, layout = _tiff_info(tif, path)
                _raise_logged(path, problems)
                data = tif.series[0].asarray()
                _raise_logged(path, problems)
            array = layout.apply(data)
            image = Image(array=array, spacing=info.spacing, path=path, axes=info.axes)
    _check_finite(path, image.array, image.axes)
    return image


def read_stack_memmap(path: str | os.PathLike[str]) -> Image:
    """Memory-map an uncompressed TIFF instead of reading it into memory.

    Slices are read from disk when indexed, so stacks larger than memory (e.g. 690 x 1024 x 1024
    SBF-SEM slices) can be processed slice by slice.

    Parameters
    ----------
    path : path-like
        An uncompressed ``.tif``/``.tiff`` whose pixels are stored contiguously (as
        :func:`write_image` writes them, and as ImageJ saves stacks).

    Returns
    -------
    Image
        ``array`` is a read-only ``numpy.memmap`` (or a transposed view of one) in the layout of
        ``axes``; ``spacing`` as for :func:`read_image`.

    Raises
    ------
    DataFileError
        Not a TIFF, missing, truncated or corrupt, or compressed / not contiguous (then use
        :func:`read_image`, or re-save it uncompressed).
    """
    path, fmt = _existing_image(path)
    if fmt not in ("tiff", "ome-tiff"):
        raise DataFileError(
            f"{path} is not a TIFF; only uncompressed TIFF stacks can be memory-mapped",
            "use read_image, or convert the stack to TIFF",
        )
    import tifffile

    with _file_errors(path):
        with _tiff(path) as (tif, problems):
            info, layout = _tiff_info(tif, path)
            _raise_logged(path, problems)
            mappable = tif.series[0].dataoffset is not None
        if not mappable:
            raise DataFileError(
                f"{path} is compressed or its pixels are not stored contiguously, so it cannot be "
                "memory-mapped",
                "use read_image, or re-save it uncompressed with write_image",
            )
        try:
            data = tifffile.memmap(path, series=0, mode="r")
        except ValueError as err:
            raise DataFileError(
                f"{path} cannot be memory-mapped ({err})",
                "use read_image, or re-save it uncompressed with write_image",
            ) from err
    return Image(array=layout.apply(data), spacing=info.spacing, path=path, axes=info.axes)


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray | Image,
    spacing: Sequence[float] | None = None,
    *,
    axes: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an image or stack; the format follows the file name.

    Parameters
    ----------
    path : path-like
        Output file: ``.tif``/``.tiff`` (ImageJ TIFF for uint8, uint16 and float32 grey levels and
        uint8 RGB; otherwise a TIFF with a JSON description that tifffile reads back exactly),
        ``.ome.tif``/``.ome.tiff`` (OME-TIFF), ``.png`` (2D only: bool, uint8 or uint16 grey,
        uint8 with 2, 3 or 4 channels) or ``.nii``/``.nii.gz`` (NIfTI-1, axes reversed to x, y, z).
        TIFF pixels are stored uncompressed, so :func:`read_stack_memmap` can map them.
    image : ndarray or Image
        ``(H, W)``, ``(H, W, C)``, ``(Z, H, W)`` or ``(Z, H, W, C)`` of bool, integer or float.
        An :class:`Image` brings its own spacing and axes.
    spacing : sequence of float, optional
        Pixel size in um per spatial axis, ``(y, x)`` or ``(z, y, x)``. Overrides the spacing of
        an :class:`Image`. PNG cannot store it.
    axes : str, optional
        ``"YX"``, ``"YXC"``, ``"ZYX"`` or ``"ZYXC"``; inferred from the shape and the length of
        ``spacing`` when omitted (see :func:`infer_axes`).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    SeglabError
        Empty or non-numeric array, wrong axes or spacing, or a dtype/layout the format cannot
        store (the message names a format that can).
    DataFileError
        Unsupported suffix.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = image_format(path)
    if isinstance(image, Image):
        array = image.array
        axes = axes or image.axes
        if spacing is None:
            spacing = image.spacing
    else:
        array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise SeglabError(
            f"cannot write an image of dtype {array.dtype}",
            "pass bool, integer or float pixels",
        )
    axes = _check_axes(array.shape, axes, spacing)
    if array.size == 0:
        raise SeglabError(
            f"cannot write an empty image of shape {array.shape} to {path}",
            "pass an image with at least one pixel",
        )
    spacing_t = _check_spacing(spacing, axes)
    array = np.ascontiguousarray(array)
    if fmt == "png":
        _check_png_writable(path, array, axes, spacing_t)
    elif fmt == "nifti" and array.dtype == np.bool_:
        raise SeglabError(
            f"NIfTI cannot store bool pixels ({path})",
            "write image.astype(np.uint8), or use a .tif file",
        )
    elif fmt == "ome-tiff" and array.dtype.name in ("int64", "uint64", "float16"):
        raise SeglabError(
            f"OME-TIFF cannot store {array.dtype} pixels ({path})",
            "write a plain .tif file, which holds any numeric dtype, or cast the image",
        )
    with atomic_file(path, overwrite=overwrite) as tmp:
        try:
            if fmt == "png":
                _write_png(tmp, array)
            elif fmt == "nifti":
                _write_nifti(tmp, array, axes, spacing_t)
            else:
                _write_tiff(tmp, array, axes, spacing_t, ome=fmt == "ome-tiff")
        except (SeglabError, MemoryError):
            raise
        except Exception as err:  # the writer refused this array: report it in one line
            raise SeglabError(
                f"cannot write {array.dtype} image of shape {array.shape} to {path}: {err}",
                "use another format (a .tif file holds any numeric dtype)",
            ) from err
    return path


# ---------------------------------------------------------------------------------------- checks
def _existing_image(path: str | os.PathLike[str]) -> tuple[Path, str]:
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"image file {path} not found", "check the path")
    if not path.is_file():
        raise DataFileError(f"{path} is not a file", "pass an image file, not a folder")
    return path, image_format(path)


def _check_axes(
    shape: Sequence[int], axes: str | None, spacing: Sequence[float] | None = None
) -> str:
    if axes is None:
        try:
            spatial_ndim = len(spacing) if spacing is not None else None  # type: ignore[arg-type]
        except TypeError:
            spatial_ndim = None
        return infer_axes(shape, spatial_ndim)
    axes = str(axes).upper()
    if axes not in _AXES_LAYOUTS:
        raise SeglabError(
            f"axes must be one of {', '.join(_AXES_LAYOUTS)}, got {axes!r}",
            "name the axes of the array in order",
        )
    if len(axes) != len(shape):
        raise SeglabError(
            f"axes {axes!r} do not fit an array of shape {tuple(shape)}",
            "give one letter per array dimension",
        )
    return axes


def _check_spacing(spacing: Sequence[float] | None, axes: str) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    spatial = axes.replace("C", "")
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError) as err:
        raise SeglabError(
            f"spacing must be a sequence of numbers, got {spacing!r}",
            f"give one pixel size in um per axis ({', '.join(spatial.lower())})",
        ) from err
    if len(values) != len(spatial):
        raise SeglabError(
            f"spacing {values} has {len(values)} values but the image has axes {axes}",
            f"give one pixel size in um per spatial axis ({', '.join(spatial.lower())})",
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise SeglabError(
            f"spacing values must be positive and finite, got {values}",
            "give pixel sizes in um, e.g. (0.5, 0.1, 0.1)",
        )
    return values


def _check_finite(path: Path, array: np.ndarray, axes: str) -> None:
    """Refuse float pixels that are NaN or infinite: no seglab computation has a use for them."""
    if array.dtype.kind not in "fc":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    nan = int(np.count_nonzero(np.isnan(array)))
    first = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), array.shape))
    raise DataFileError(
        f"{path} has {bad} NaN or infinite pixel value(s) ({nan} NaN, {bad - nan} infinite; "
        f"the first at {axes} index {first})",
        "replace them with finite values (e.g. 0 or the background level) and save the image again",
    )


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """Turn any decoder failure while reading ``path`` into a one-line DataFileError."""
    try:
        yield
    except (SeglabError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # a decoder failing on user data is the file's problem
        detail = " ".join(str(err).split())
        if len(detail) > 200:
            detail = detail[:197] + "..."
        raise DataFileError(
            f"cannot read {path}: it is corrupt, truncated or not the format its name says "
            f"({type(err).__name__}: {detail})",
            "re-export or re-copy the file",
        ) from err


def _tidy(value: float, factor: float) -> float:
    """Convert to um; a unit conversion keeps 15 significant digits to drop rounding noise."""
    if factor == 1.0:
        return float(value)
    return float(f"{float(value) * factor:.15g}")


def _um_per_unit(unit: object) -> float | None:
    if not isinstance(unit, str):
        return None
    return _UM_PER_UNIT.get(unit.strip().lower())


def _spacing_for(axes: str, known: dict[str, float]) -> tuple[float, ...] | None:
    spatial = axes.replace("C", "")
    if all(a in known and math.isfinite(known[a]) and known[a] > 0 for a in spatial):
        return tuple(known[a] for a in spatial)
    return None


# ---------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class _Layout:
    """How to turn an array as stored (axes named by letters) into seglab's layout."""

    shape: tuple[int, ...]  # after dropping length-1 axes
    order: tuple[int, ...]  # transpose of the squeezed array into Z, Y, X, C order
    axes: str

    def apply(self, data: np.ndarray) -> np.ndarray:
        return data.reshape(self.shape).transpose(self.order)


def _layout(path: Path, shape: Sequence[int], letters: str) -> _Layout:
    """Plan the squeeze and transpose; ``letters`` holds Y, X, C (channels) or Z (anything else)."""
    shape = tuple(int(n) for n in shape)
    if not shape or 0 in shape:
        raise DataFileError(
            f"{path} holds no pixels (empty image or stack, shape {shape})",
            "check that the export wrote the image data",
        )
    kept = [i for i, a in enumerate(letters) if a in "YX" or shape[i] != 1]
    names = "".join(letters[i] for i in kept)
    if sorted(names.replace("Z", "").replace("C", "")) != ["X", "Y"]:
        raise DataFileError(
            f"{path} has axes {letters} of shape {shape}, not one Y and one X axis",
            "re-export it as a 2D image or a 3D stack",
        )
    if names.count("Z") > 1 or names.count("C") > 1:
        raise DataFileError(
            f"{path} has {len(names)} axes of shape {tuple(shape[i] for i in kept)} after dropping "
            "length-1 axes; seglab reads 2D images and 3D stacks, with at most one channel axis",
            "save one time point, series or channel group per file",
        )
    order = tuple(sorted(range(len(names)), key=lambda j: "ZYXC".index(names[j])))
    axes = "".join(names[j] for j in order)
    return _Layout(tuple(shape[i] for i in kept), order, axes)


# ---------------------------------------------------------------------------------------- TIFF
class _LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tiff(path: Path) -> Iterator[tuple[object, list[str]]]:
    """Open a TIFF, collecting (not printing) the errors tifffile logs about a damaged file."""
    import tifffile

    logger = logging.getLogger("tifffile")
    handler = _LogRecords()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif, handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _raise_logged(path: Path, problems: list[str]) -> None:
    if problems:
        detail = " ".join(problems[0].split())
        raise DataFileError(
            f"{path} is corrupt or truncated (tifffile: {detail})",
            "re-export or re-copy the file",
        )


def _tiff_info(tif, path: Path) -> tuple[ImageInfo, _Layout]:
    if not tif.pages or not tif.series:
        raise DataFileError(
            f"{path} contains no images (an empty TIFF stack)",
            "check that the export wrote the image data",
        )
    series = tif.series[0]
    letters = "".join(
        a if a in "YX" else "C" if a in "CS" else "Z" for a in str(series.axes).upper()
    )
    layout = _layout(path, series.shape, letters)
    _check_tiff_extent(tif, series, path)
    known = _tiff_spacing(tif, series)
    info = ImageInfo(
        path=path,
        shape=tuple(layout.shape[i] for i in layout.order),
        dtype=np.dtype(series.dtype),
        axes=layout.axes,
        spacing=_spacing_for(layout.axes, known),
    )
    return info, layout


def _check_tiff_extent(tif, series, path: Path) -> None:
    size = tif.filehandle.size
    end = 0
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        for page in series.pages:
            if page is None:
                raise DataFileError(f"{path} is truncated (a page is missing)", "re-copy the file")
            counts = page.databytecounts
            if len(counts):
                end = max(end, max(o + c for o, c in zip(page.dataoffsets, counts, strict=True)))
    if end > size:
        raise DataFileError(
            f"{path} is truncated: its pixels need {end} bytes but the file has {size}",
            "re-copy or re-export the file",
        )


def _tiff_spacing(tif, series) -> dict[str, float]:
    """Pixel sizes in um by axis letter (Z, Y, X) from whatever metadata the file has."""
    page = series.keyframe
    if tif.is_shaped and tif.shaped_metadata:
        meta = tif.shaped_metadata[0]
        values, unit = meta.get("spacing"), meta.get("unit")
        axes = str(meta.get("axes", "")).upper()
        factor = _um_per_unit(unit)
        if factor and isinstance(values, list) and values:
            spatial = [a for a in axes if a != "C"]
            if len(spatial) == len(values):
                return {a: _tidy(v, factor) for a, v in zip(spatial, values, strict=True)}
    if tif.is_ome and tif.ome_metadata:
        known = _ome_spacing(tif.ome_metadata)
        if known:
            return known
    if tif.is_imagej and tif.imagej_metadata is not None:
        return _imagej_spacing(tif.imagej_metadata, page)
    unit = _tag(page, "ResolutionUnit")
    factor = _TIFF_RESUNIT_UM.get(int(unit)) if unit is not None else None
    known: dict[str, float] = {}
    if factor:
        for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
            size = _pixel_size(_tag(page, tag))
            if size is not None:
                known[letter] = _tidy(size, factor)
    return known


def _tag(page, name: str):
    tag = page.tags.get(name)
    return None if tag is None else tag.value


def _pixel_size(resolution) -> float | None:
    """Return the unit length per pixel from a TIFF rational (pixels per unit)."""
    try:
        if isinstance(resolution, tuple):
            num, den = resolution
            return float(den) / float(num) if num and den else None
        return 1.0 / float(resolution) if resolution else None
    except (TypeError, ValueError):
        return None


def _imagej_spacing(meta: dict, page) -> dict[str, float]:
    known: dict[str, float] = {}
    unit = meta.get("unit")
    for letter, tag, key in (("X", "XResolution", "unit"), ("Y", "YResolution", "yunit")):
        factor = _um_per_unit(meta.get(key, unit))
        if factor:
            size = _pixel_size(_tag(page, tag))
            # ImageJ: no resolution tag means a pixel width of 1 unit.
            known[letter] = _tidy(1.0 if size is None else size, factor)
    factor = _um_per_unit(meta.get("zunit", unit))
    if factor:
        try:
            z = float(meta.get("spacing", 1.0))  # ImageJ omits spacing=1
        except (TypeError, ValueError):
            z = math.nan
        known["Z"] = _tidy(abs(z), factor)
    return known


def _ome_spacing(xml: str) -> dict[str, float]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    known: dict[str, float] = {}
    for letter in "XYZ":
        value = pixels.get(f"PhysicalSize{letter}")
        factor = _um_per_unit(pixels.get(f"PhysicalSize{letter}Unit", "\u00b5m"))
        if value is None or not factor:
            continue
        try:
            known[letter] = _tidy(float(value), factor)
        except ValueError:
            continue
    return known


def _write_tiff(
    tmp: Path, array: np.ndarray, axes: str, spacing: tuple[float, ...] | None, *, ome: bool
) -> None:
    import tifffile

    channels = array.shape[-1] if axes.endswith("C") else 0
    photometric = "rgb" if channels == 3 else "minisblack"
    planar = "contig" if channels else None
    tiff_axes = axes.replace("C", "S")
    sizes = dict(zip(axes.replace("C", ""), spacing, strict=True)) if spacing else {}
    resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"]) if sizes else None
    bigtiff = array.nbytes > 2**32 - 2**25
    imagej_ok = array.dtype in _IMAGEJ_DTYPES and (
        channels == 0 or (channels == 3 and array.dtype == np.uint8)
    )
    if ome:
        metadata: dict[str, object] = {"axes": tiff_axes}
        for letter, size in sizes.items():
            metadata[f"PhysicalSize{letter}"] = size
            metadata[f"PhysicalSize{letter}Unit"] = "\u00b5m"
        tifffile.imwrite(
            tmp,
            array,
            ome=True,
            bigtiff=bigtiff,
            photometric=photometric,
            planarconfig=planar,
            metadata=metadata,
        )
    elif imagej_ok and not bigtiff:
        metadata = {"axes": tiff_axes}
        if sizes:
            metadata["unit"] = "um"
            if "Z" in sizes:
                metadata["spacing"] = sizes["Z"]
        tifffile.imwrite(
            tmp,
            array,
            imagej=True,
            photometric=photometric,
            resolution=resolution,
            metadata=metadata,
        )
    else:
        metadata = {"axes": axes}
        if spacing:
            metadata.update(spacing=list(spacing), unit="um")
        tifffile.imwrite(
            tmp,
            array,
            bigtiff=bigtiff,
            photometric=photometric,
            planarconfig=planar,
            resolution=(resolution[0] * 1e4, resolution[1] * 1e4) if resolution else None,
            resolutionunit="CENTIMETER" if resolution else None,
            metadata=metadata,
        )


# ---------------------------------------------------------------------------------------- PNG
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(path: Path) -> tuple[int, int]:
    """Bit depth and colour type from the IHDR chunk."""
    with path.open("rb") as fh:
        head = fh.read(33)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise DataFileError(
            f"{path} is not a PNG file (bad signature or header)",
            "re-export the file, or give it the ending of its real format",
        )
    bit_depth, colour_type = head[24], head[25]
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 1024))
        tail = fh.read()
    if b"IEND" not in tail:
        raise DataFileError(
            f"{path} is truncated (the PNG has no end chunk)", "re-copy or re-export the file"
        )
    if bit_depth == 16 and colour_type in (2, 4, 6):
        raise DataFileError(
            f"{path} is a 16-bit colour PNG, which seglab cannot read without losing precision",
            "save it as TIFF, or as an 8-bit PNG",
        )
    return bit_depth, colour_type


def _png_mode(pil_image, bit_depth: int) -> tuple[str, np.dtype, int]:
    """PIL mode to convert to (or ''), resulting dtype and channel count (0 for grey)."""
    mode = pil_image.mode
    if mode == "1":
        return "", np.dtype(bool), 0
    if mode == "L":
        return "", np.dtype(np.uint8), 0
    if mode.startswith("I;16"):
        return "", np.dtype(np.uint16), 0
    if mode == "I":
        return "", np.dtype(np.uint16 if bit_depth == 16 else np.int32), 0
    if mode in ("LA", "RGB", "RGBA"):
        return "", np.dtype(np.uint8), len(mode)
    if mode in ("P", "PA"):
        rgba = mode == "PA" or "transparency" in pil_image.info
        return ("RGBA", np.dtype(np.uint8), 4) if rgba else ("RGB", np.dtype(np.uint8), 3)
    raise DataFileError(
        f"PNG mode {mode!r} is not supported",
        "save it as grey-level, RGB or RGBA PNG, or as TIFF",
    )


def _png_info(path: Path) -> ImageInfo:
    from PIL import Image as PILImage

    bit_depth, _ = _png_header(path)
    with PILImage.open(path, formats=["PNG"]) as im:
        _, dtype, channels = _png_mode(im, bit_depth)
        width, height = im.size
    shape = (height, width, channels) if channels else (height, width)
    _layout(path, shape, "YXC" if channels else "YX")
    return ImageInfo(path, shape, dtype, "YXC" if channels else "YX", None)


def _read_png(path: Path) -> Image:
    from PIL import Image as PILImage

    bit_depth, _ = _png_header(path)
    with PILImage.open(path, formats=["PNG"]) as im:
        convert, dtype, channels = _png_mode(im, bit_depth)
        im.load()
        array = np.asarray(im.convert(convert) if convert else im)
    array = array.astype(dtype, copy=False)
    _layout(path, array.shape, "YXC" if channels else "YX")
    return Image(array=array, spacing=None, path=path, axes="YXC" if channels else "YX")


def _check_png_writable(
    path: Path, array: np.ndarray, axes: str, spacing: tuple[float, ...] | None
) -> None:
    if spacing is not None:
        raise SeglabError(
            f"PNG cannot store a pixel size, but spacing {spacing} was given for {path}",
            "write a .tif or .nii.gz to keep the spacing, or pass spacing=None",
        )
    if axes == "YX" and array.dtype in (np.dtype(bool), np.dtype(np.uint8), np.dtype(np.uint16)):
        return
    if axes == "YXC" and array.shape[-1] in (2, 3, 4) and array.dtype == np.uint8:
        return
    raise SeglabError(
        f"PNG cannot store a {array.dtype} image with axes {axes} and shape {array.shape} ({path})",
        "PNG holds 2D bool/uint8/uint16 grey or uint8 RGB/RGBA images; write a .tif instead",
    )


def _write_png(tmp: Path, array: np.ndarray) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(array).save(tmp, format="PNG")


# ---------------------------------------------------------------------------------------- NIfTI
def _nifti_letters(ndim: int) -> str:
    # Stored order: x, y, z, then t (or c), then c (NIfTI puts vector components in dim 5).
    return ("XYZCC" + "Z" * max(0, ndim - 5))[:ndim]


def _nifti_image(path: Path):
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise DataFileError(f"{path} is not a NIfTI image", "convert it to NIfTI or TIFF")
    return img


def _nifti_layout_and_spacing(img, path: Path) -> tuple[_Layout, dict[str, float]]:
    shape = tuple(int(n) for n in img.shape)
    if img.get_data_dtype().names:
        raise DataFileError(
            f"{path} stores RGB voxels as a structured NIfTI type, which seglab does not read",
            "save the colour channels as a 4th dimension, or as TIFF",
        )
    letters = _nifti_letters(len(shape))
    if len(shape) < 2:
        raise DataFileError(f"{path} has shape {shape}, not an image", "check the file")
    layout = _layout(path, shape, letters)
    space_unit, _ = img.header.get_xyzt_units()
    factor = _NIFTI_UNIT_UM.get(space_unit)
    known: dict[str, float] = {}
    if factor:
        zooms = img.header.get_zooms()
        for letter, zoom in zip("XYZ", zooms[:3], strict=False):
            # pixdim is float32: take the shortest decimal that float32 holds.
            known[letter] = _tidy(float(str(np.float32(zoom))), factor)
    return layout, known


def _nifti_info(path: Path) -> ImageInfo:
    img = _nifti_image(path)
    layout, known = _nifti_layout_and_spacing(img, path)
    if not path.name.lower().endswith(".gz"):
        needed = int(img.header["vox_offset"]) + int(np.prod(img.shape)) * (
            img.get_data_dtype().itemsize
        )
        size = path.stat().st_size
        if needed > size:
            raise DataFileError(
                f"{path} is truncated: its voxels need {needed} bytes but the file has {size}",
                "re-copy or re-export the file",
            )
    first = np.asarray(img.dataobj[tuple(slice(0, 1) for _ in img.shape)])
    shape = tuple(layout.shape[i] for i in layout.order)
    return ImageInfo(path, shape, first.dtype, layout.axes, _spacing_for(layout.axes, known))


def _read_nifti(path: Path) -> Image:
    img = _nifti_image(path)
    layout, known = _nifti_layout_and_spacing(img, path)
    data = np.asarray(img.dataobj)
    # Layout letters are X, Y, Z; reversing spatial order gives Z, Y, X via the sort in _layout.
    array = np.ascontiguousarray(layout.apply(data))
    return Image(array=array, spacing=_spacing_for(layout.axes, known), path=path, axes=layout.axes)


def _write_nifti(
    tmp: Path, array: np.ndarray, axes: str, spacing: tuple[float, ...] | None
) -> None:
    import nibabel as nib

    if axes == "YX":
        data = array.T
    elif axes == "YXC":
        data = array.transpose(1, 0, 2)[:, :, None, :]
    elif axes == "ZYX":
        data = array.transpose(2, 1, 0)
    else:
        data = array.transpose(2, 1, 0, 3)
    sizes = dict(zip(axes.replace("C", ""), spacing, strict=True)) if spacing else {}
    affine = np.diag([sizes.get("X", 1.0), sizes.get("Y", 1.0), sizes.get("Z", 1.0), 1.0])
    img = nib.Nifti1Image(data, affine, dtype=array.dtype)
    img.header.set_xyzt_units(xyz="micron" if spacing else "unknown")
    nib.save(img, tmp)
