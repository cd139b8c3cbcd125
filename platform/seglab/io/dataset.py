"""Dataset folders: images paired with label maps, optional contours, and a manifest of digests.

A dataset is a folder laid out as::

    DATASET/
      images/    <name>.<ext>   2D images or stacks (.png, .tif, .tiff, .ome.tif, .nii, .nii.gz)
      labels/    <name>.<ext>   same name as the image: an index map, or a colour-coded RGB image
                                when classes.json is present
      contours/  <name>.<ext>   optional: object outlines, same name as the image
      classes.json              optional: the ColourTable that decodes colour-coded labels
      manifest.json             written by write_manifest: files, sha256 digests, shapes, spacing

Files are paired by name without the image ending (``images/a.tif`` with ``labels/a.png``).
Hidden files (``.name``, e.g. half-written temporary files) are ignored; any other file whose
ending is not an image format is an error, so nothing is silently left out.

:func:`scan_dataset` reads only file headers (shape, dtype, axes, spacing), never the pixels;
:meth:`Dataset.load` reads one sample's arrays. :func:`write_manifest` records a sha256 digest of
every file, and :func:`verify_manifest` reports files that changed, went missing or appeared since.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from seglab.errors import DataFileError, SeglabError
from seglab.io.atomic import atomic_file
from seglab.io.images import ImageInfo, image_stem, read_image, read_image_info
from seglab.io.labels import ColourTable, UnknownColoursError

IMAGES_DIR = "images"
LABELS_DIR = "labels"
CONTOURS_DIR = "contours"
CLASSES_FILE = "classes.json"
MANIFEST_FILE = "manifest.json"

MANIFEST_FORMAT = "seglab-dataset-manifest"
MANIFEST_VERSION = 1

_IGNORED_NAMES = frozenset({"Thumbs.db", "desktop.ini"})
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Sample:
    """One image with its label map and optional contour map (paths and headers, no pixels).

    Attributes
    ----------
    name : str
        File name without the image ending, shared by the image, label and contour.
    image, label, contour : Path, Path or None, Path or None
        The files; ``label`` is None only when scanned with ``require_labels=False``,
        ``contour`` is None when the sample has no contour file.
    image_info, label_info, contour_info : ImageInfo, ImageInfo or None, ImageInfo or None
        Their headers: shape, dtype, axes and spacing (um).
    """

    name: str
    image: Path
    label: Path | None
    contour: Path | None
    image_info: ImageInfo
    label_info: ImageInfo | None = None
    contour_info: ImageInfo | None = None


@dataclass(frozen=True)
class LoadedSample:
    """The arrays of one sample.

    Attributes
    ----------
    name : str
        Sample name.
    image : ndarray
        ``(H, W)``, ``(H, W, C)``, ``(Z, H, W)`` or ``(Z, H, W, C)`` as ``axes`` says.
    label : ndarray or None
        Class indices with the image's spatial shape (``(H, W)`` or ``(Z, H, W)``); colour-coded
        labels are decoded through the dataset's colour table (uint8). None for unlabelled images.
    contour : ndarray or None
        The contour file as stored, or None.
    spacing : tuple of float or None
        The image's pixel size in um, ``(y, x)`` or ``(z, y, x)``; None when unknown.
    axes : str
        Axes of ``image``.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    contour: np.ndarray | None
    spacing: tuple[float, ...] | None
    axes: str


@dataclass(frozen=True)
class Dataset:
    """A scanned dataset folder; build it with :func:`scan_dataset`.

    Attributes
    ----------
    root : Path
        The dataset folder.
    samples : tuple of Sample
        One per image, sorted by name.
    colour_table : ColourTable or None
        From ``classes.json``, when present.
    """

    root: Path
    samples: tuple[Sample, ...]
    colour_table: ColourTable | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def names(self) -> list[str]:
        """Sample names in order."""
        return [s.name for s in self.samples]

    def sample(self, name: str) -> Sample:
        """Return the sample called ``name``.

        Raises
        ------
        SeglabError
            When there is no such sample.
        """
        for s in self.samples:
            if s.name == name:
                return s
        raise SeglabError(
            f"dataset {self.root} has no sample {name!r} (it has {_few(self.names)})",
            "use one of the listed names",
        )

    def load(self, sample: Sample | str) -> LoadedSample:
        """Read the arrays of one sample.

        Parameters
        ----------
        sample : Sample or str
            A sample of this dataset, or its name.

        Returns
        -------
        LoadedSample
            Image, label (class indices, colour labels decoded through ``classes.json``),
            contour and the image's spacing.

        Raises
        ------
        DataFileError
            When a file is unreadable, its shape no longer matches the image, or a colour label
            holds colours missing from ``classes.json`` (the message lists them).
        """
        if isinstance(sample, str):
            sample = self.sample(sample)
        image = read_image(sample.image)
        label = None
        if sample.label is not None:
            label_image = read_image(sample.label)
            label = label_image.array
            if "C" in label_image.axes:
                label = self._decode(sample.label, label)
            _check_same_space(sample.name, "label", image.spatial_shape, label.shape)
        contour = None
        if sample.contour is not None:
            contour_image = read_image(sample.contour)
            contour = contour_image.array
            _check_same_space(
                sample.name, "contour", image.spatial_shape, contour_image.spatial_shape
            )
        return LoadedSample(sample.name, image.array, label, contour, image.spacing, image.axes)

    def _decode(self, path: Path, rgb: np.ndarray) -> np.ndarray:
        if self.colour_table is None:
            raise DataFileError(
                f"label {path} is a colour image but {self.root / CLASSES_FILE} is missing",
                "add classes.json (a colour table) or save labels as index maps",
            )
        try:
            return self.colour_table.decode(rgb)
        except UnknownColoursError as err:
            raise DataFileError(
                f"label {path}: {err.problem}",
                f"check the label's colours against {self.root / CLASSES_FILE} and correct "
                "them, or add the missing classes there",
            ) from err
        except SeglabError as err:
            raise DataFileError(f"label {path}: {err.problem}", err.fix) from err


@dataclass(frozen=True)
class ManifestReport:
    """How a dataset folder differs from its manifest.

    Attributes
    ----------
    root : Path
        The dataset folder.
    checked : int
        Number of files the manifest lists.
    changed, missing, new : tuple of str
        Paths relative to ``root`` (``images/a.tif``): listed files whose digest differs, listed
        files that are gone, and files in ``images/``, ``labels/``, ``contours/`` or
        ``classes.json`` that the manifest does not list.
    """

    root: Path
    checked: int
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the folder matches the manifest exactly."""
        return not (self.changed or self.missing or self.new)

    def summary(self) -> str:
        """One line: that the folder matches, or what differs."""
        if self.ok:
            return f"dataset {self.root} matches its manifest ({self.checked} files)"
        parts = [
            f"{len(files)} {what} ({_few(files)})"
            for what, files in (
                ("changed", self.changed),
                ("missing", self.missing),
                ("new", self.new),
            )
            if files
        ]
        return f"dataset {self.root} differs from its manifest: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------- scan
def scan_dataset(root: str | os.PathLike[str], *, require_labels: bool = True) -> Dataset:
    """Pair the images, labels and contours of a dataset folder, reading headers only.

    Parameters
    ----------
    root : path-like
        Folder with ``images/``, ``labels/`` (may be absent when ``require_labels`` is False),
        optional ``contours/`` and optional ``classes.json``.
    require_labels : bool
        Whether every image must have a label. With False, unlabelled images become samples
        whose ``label`` is None (e.g. images to predict on).

    Returns
    -------
    Dataset
        Samples sorted by name.

    Raises
    ------
    DataFileError
        Missing folder, no images, a file with an unsupported ending, two files with the same
        name in one folder, images without labels (when required), labels or contours without
        images, a label or contour whose spatial shape differs from its image, colour labels
        without ``classes.json``, or an unreadable header. Lists of names show the first few.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFileError(
            f"dataset folder {root} not found" if not root.exists() else f"{root} is not a folder",
            f"pass a folder holding {IMAGES_DIR}/ and {LABELS_DIR}/",
        )
    images = _list_images(root, IMAGES_DIR, required=True)
    if not images:
        raise DataFileError(
            f"{root / IMAGES_DIR} holds no images", "put the images (.tif, .png, .nii.gz) there"
        )
    labels = _list_images(root, LABELS_DIR, required=require_labels)
    contours = _list_images(root, CONTOURS_DIR, required=False)
    for folder, files in ((LABELS_DIR, labels), (CONTOURS_DIR, contours)):
        orphans = sorted(set(files) - set(images))
        if orphans:
            raise DataFileError(
                f"{len(orphans)} file(s) in {root / folder} have no image of the same name in "
                f"{root / IMAGES_DIR}: {_few([files[n].name for n in orphans])}",
                "add the images, or remove or rename these files",
            )
    if require_labels:
        unlabelled = sorted(set(images) - set(labels))
        if unlabelled:
            raise DataFileError(
                f"{len(unlabelled)} image(s) in {root / IMAGES_DIR} have no label of the same "
                f"name in {root / LABELS_DIR}: {_few([images[n].name for n in unlabelled])}",
                "add the labels, remove these images, or scan with require_labels=False",
            )
    table = ColourTable.load(root / CLASSES_FILE) if (root / CLASSES_FILE).is_file() else None

    samples = []
    colour_labels = []
    for name in sorted(images):
        image_info = read_image_info(images[name])
        label_info = contour_info = None
        if name in labels:
            label_info = read_image_info(labels[name])
            _check_same_space(name, "label", image_info.spatial_shape, label_info.spatial_shape)
            if "C" in label_info.axes:
                colour_labels.append(labels[name].name)
                if label_info.shape[-1] not in (3, 4):
                    raise DataFileError(
                        f"label {labels[name]} has {label_info.shape[-1]} channels; a label is "
                        "an index map or an RGB/RGBA colour image",
                        "save it as an index map or as RGB",
                    )
        if name in contours:
            contour_info = read_image_info(contours[name])
            _check_same_space(name, "contour", image_info.spatial_shape, contour_info.spatial_shape)
        samples.append(
            Sample(
                name=name,
                image=images[name],
                label=labels.get(name),
                contour=contours.get(name),
                image_info=image_info,
                label_info=label_info,
                contour_info=contour_info,
            )
        )
    if colour_labels and table is None:
        raise DataFileError(
            f"{len(colour_labels)} label(s) are colour images ({_few(colour_labels)}) but "
            f"{root / CLASSES_FILE} is missing",
            "add classes.json (a colour table, see ColourTable.save) or save labels as index maps",
        )
    return Dataset(root=root, samples=tuple(samples), colour_table=table)


def check_samples(
    dataset: Dataset, *, channels: int | None = None, require_foreground: bool = False
) -> None:
    """Read every sample of a scanned dataset and refuse what a training or evaluation cannot use.

    :func:`scan_dataset` reads headers only; this reads the pixels too, so that a bad file is
    reported before a training or an evaluation starts rather than deep inside it. A dataset
    without samples passes.

    Parameters
    ----------
    dataset : Dataset
        From :func:`scan_dataset`.
    channels : int, optional
        Channels every image must have (3 for RGB; 1 for grey images and stacks), checked from
        the headers before any pixel is read.
    require_foreground : bool
        Whether at least one label must hold a class other than 0 (background).

    Raises
    ------
    DataFileError
        Images with another channel count (the message lists them with their counts), an
        unreadable or corrupt file, NaN or infinite pixels, colour labels with colours missing
        from ``classes.json``, a label or contour whose shape differs from its image, or (with
        ``require_foreground``) labels that are all background (the message lists them).
    """
    if channels is not None:
        counts = {s.image.name: _channel_count(s.image_info) for s in dataset.samples}
        wrong = [f"{name} has {count}" for name, count in counts.items() if count != channels]
        if wrong:
            kind = {1: " (grey)", 3: " (RGB)", 4: " (RGBA)"}.get(channels, "")
            raise DataFileError(
                f"{len(wrong)} image(s) in {dataset.root / IMAGES_DIR} do not have the "
                f"{channels} channel(s){kind} the model takes: {_few(wrong)}",
                f"convert them to {channels}-channel{kind} images, or remove them from the dataset",
            )
    empty = []
    for sample in dataset.samples:
        loaded = dataset.load(sample)
        if loaded.label is not None and not np.any(loaded.label):
            empty.append(sample.label.name if sample.label is not None else sample.name)
    labelled = [s for s in dataset.samples if s.label is not None]
    if require_foreground and labelled and len(empty) == len(labelled):
        fix = (
            f"check the label colours against {dataset.root / CLASSES_FILE}"
            if dataset.colour_table is not None
            else "check that the labels mark objects with values above 0"
        )
        raise DataFileError(
            f"every label in {dataset.root / LABELS_DIR} is all background (class 0), so there "
            f"is nothing to learn: {_few(empty)}",
            fix,
        )


def _channel_count(info: ImageInfo) -> int:
    return int(info.shape[-1]) if info.axes.endswith("C") else 1


def _list_images(root: Path, folder: str, *, required: bool) -> dict[str, Path]:
    """Map name -> path for the image files of ``root/folder``."""
    where = root / folder
    if not where.is_dir():
        if required:
            raise DataFileError(
                f"dataset {root} has no {folder}/ folder",
                f"put the {folder} in {where}",
            )
        return {}
    found: dict[str, Path] = {}
    unsupported: list[str] = []
    duplicates: list[str] = []
    for entry in sorted(where.iterdir()):
        if entry.name.startswith(".") or entry.name in _IGNORED_NAMES:
            continue
        try:
            name = image_stem(entry) if entry.is_file() else None
        except DataFileError:
            name = None
        if name is None:
            unsupported.append(entry.name)
            continue
        if name in found:
            duplicates.append(f"{found[name].name} and {entry.name}")
        found[name] = entry
    if unsupported:
        raise DataFileError(
            f"{where} holds {len(unsupported)} entries that are not image files "
            f"(.png, .tif, .tiff, .ome.tif, .nii, .nii.gz): {_few(unsupported)}",
            "move them out of the dataset folder",
        )
    if duplicates:
        raise DataFileError(
            f"{where} has files with the same name but different endings: {_few(duplicates)}",
            "keep one file per name",
        )
    return found


def _check_same_space(
    name: str, role: str, image_shape: tuple[int, ...], other_shape: tuple[int, ...]
) -> None:
    if tuple(image_shape) != tuple(other_shape):
        raise DataFileError(
            f"sample {name!r}: the {role} has spatial shape {tuple(other_shape)} but the image "
            f"has {tuple(image_shape)}",
            f"resize or re-export the {role} to the image's size",
        )


def _few(names: list[str] | tuple[str, ...], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


# ---------------------------------------------------------------------------------------- manifest
def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 digest of a file as 64 hex characters, reading it in 1 MiB chunks.

    Raises
    ------
    DataFileError
        When the file is missing or unreadable.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise DataFileError(
            f"cannot read {path}: {err.strerror or err}", "check the file and its permissions"
        ) from err
    return digest.hexdigest()


def write_manifest(
    root: str | os.PathLike[str], *, require_labels: bool = True, overwrite: bool = True
) -> Path:
    """Scan a dataset and write ``manifest.json`` (atomically) with every file's digest.

    The manifest is::

        {"format": "seglab-dataset-manifest", "version": 1,
         "classes": {"file": "classes.json", "sha256": "..."} or null,
         "samples": [{"name": "a",
                      "files": {"image": "images/a.tif", "label": "labels/a.png",
                                "contour": null},
                      "sha256": {"images/a.tif": "...", "labels/a.png": "..."},
                      "shape": [Z, H, W], "dtype": "uint8", "axes": "ZYX",
                      "spacing": [z, y, x] or null}, ...]}

    ``shape``, ``dtype``, ``axes`` and ``spacing`` (um) are the image's. It holds no time stamp,
    so the same files always give the same manifest.

    Parameters
    ----------
    root : path-like
        The dataset folder (see :func:`scan_dataset`).
    require_labels : bool
        Passed to :func:`scan_dataset`.
    overwrite : bool
        Whether an existing manifest may be replaced.

    Returns
    -------
    Path
        ``root/manifest.json``.

    Raises
    ------
    DataFileError
        Whatever :func:`scan_dataset` raises.
    OutputExistsError
        When the manifest exists and ``overwrite`` is False.
    """
    dataset = scan_dataset(root, require_labels=require_labels)
    root = dataset.root
    entries = []
    for s in dataset.samples:
        files = {"image": s.image, "label": s.label, "contour": s.contour}
        relative = {role: _relative(root, p) if p else None for role, p in files.items()}
        entries.append(
            {
                "name": s.name,
                "files": relative,
                "sha256": {rel: file_sha256(root / rel) for rel in relative.values() if rel},
                "shape": list(s.image_info.shape),
                "dtype": s.image_info.dtype.name,
                "axes": s.image_info.axes,
                "spacing": list(s.image_info.spacing) if s.image_info.spacing else None,
            }
        )
    classes = None
    if (root / CLASSES_FILE).is_file():
        classes = {"file": CLASSES_FILE, "sha256": file_sha256(root / CLASSES_FILE)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "classes": classes,
        "samples": entries,
    }
    path = root / MANIFEST_FILE
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def verify_manifest(root: str | os.PathLike[str], *, strict: bool = False) -> ManifestReport:
    """Compare a dataset folder with its ``manifest.json``.

    Every listed file is hashed again; differences are reported, not raised, unless ``strict``.

    Parameters
    ----------
    root : path-like
        The dataset folder.
    strict : bool
        Raise :class:`DataFileError` (with :meth:`ManifestReport.summary` as its message) when
        anything differs, instead of returning the report.

    Returns
    -------
    ManifestReport
        Changed, missing and new files.

    Raises
    ------
    DataFileError
        When the manifest is missing or malformed, or (with ``strict``) when the folder differs.
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DataFileError(f"{path} not found", "write one with write_manifest (seglab)")
    expected = _manifest_digests(path)
    changed, missing = [], []
    for rel, digest in sorted(expected.items()):
        file = root / rel
        if not file.is_file():
            missing.append(rel)
        elif file_sha256(file) != digest:
            changed.append(rel)
    present = [_relative(root, f) for f in _dataset_files(root)]
    new = sorted(rel for rel in present if rel not in expected)
    report = ManifestReport(root, len(expected), tuple(changed), tuple(missing), tuple(new))
    if strict and not report.ok:
        raise DataFileError(report.summary(), "re-check the data, then run write_manifest again")
    return report


def _manifest_digests(path: Path) -> dict[str, str]:
    """Return relative path -> digest for every file a manifest lists."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFileError(
            f"manifest {path} is not readable JSON ({err})", "write it again with write_manifest"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataFileError(
            f"{path} is not a seglab dataset manifest (no 'format': {MANIFEST_FORMAT!r})",
            "write it again with write_manifest",
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataFileError(
            f"manifest {path} has version {manifest.get('version')!r}; this seglab reads "
            f"version {MANIFEST_VERSION}",
            "write it again with write_manifest",
        )
    digests: dict[str, str] = {}
    try:
        for sample in manifest["samples"]:
            digests.update({str(k): str(v) for k, v in sample["sha256"].items()})
        classes = manifest.get("classes")
        if classes:
            digests[str(classes["file"])] = str(classes["sha256"])
    except (KeyError, TypeError, AttributeError) as err:
        raise DataFileError(
            f"manifest {path} is malformed ({type(err).__name__}: {err})",
            "write it again with write_manifest",
        ) from err
    for rel in digests:
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
            raise DataFileError(
                f"manifest {path} lists {rel!r}, which is not a path inside the dataset",
                "write it again with write_manifest",
            )
    return digests


def _dataset_files(root: Path) -> list[Path]:
    """Return the files a manifest should cover: every non-hidden file of the three folders."""
    files = []
    for folder in (IMAGES_DIR, LABELS_DIR, CONTOURS_DIR):
        where = root / folder
        if where.is_dir():
            files.extend(
                p
                for p in sorted(where.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name not in _IGNORED_NAMES
            )
    if (root / CLASSES_FILE).is_file():
        files.append(root / CLASSES_FILE)
    return files


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
