import hashlib
import json

import numpy as np
import pytest
import tifffile

import seglab.io.dataset as dataset_module
from seglab.errors import DataFileError, OutputExistsError, SeglabError
from seglab.io.dataset import (
    MANIFEST_FILE,
    ManifestReport,
    file_sha256,
    scan_dataset,
    verify_manifest,
    write_manifest,
)
from seglab.io.images import write_image
from seglab.io.labels import LUNG_CLASSES

RNG = np.random.default_rng(3)


def _index_map(shape):
    return RNG.integers(0, 6, shape, dtype=np.uint8)


def _colour_dataset(root, names=("a", "b", "c"), shape=(8, 9)):
    """2D RGB images with colour-coded PNG labels and classes.json (study A layout)."""
    truth = {}
    for name in names:
        write_image(root / "images" / f"{name}.png", RNG.integers(0, 255, (*shape, 3), np.uint8))
        labels = _index_map(shape)
        write_image(root / "labels" / f"{name}.png", LUNG_CLASSES.encode(labels))
        truth[name] = labels
    LUNG_CLASSES.save(root / "classes.json")
    return truth


def _stack_dataset(root, names=("s1", "s2"), shape=(3, 8, 9), spacing=(2.0, 0.5, 0.5)):
    """3D TIFF stacks with index-map labels and contours (study B layout)."""
    for name in names:
        write_image(root / "images" / f"{name}.tif", RNG.integers(0, 255, shape, np.uint8), spacing)
        write_image(root / "labels" / f"{name}.tif", RNG.integers(0, 2, shape, np.uint8), spacing)
        write_image(root / "contours" / f"{name}.tif", RNG.integers(0, 2, shape, np.uint8))


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------- scan / load
def test_scan_pairs_files_by_name_and_reads_headers(tmp_path):
    _stack_dataset(tmp_path, names=("s2", "s1", "s10"))
    ds = scan_dataset(tmp_path)
    assert ds.names == ["s1", "s10", "s2"]
    assert len(ds) == 3
    s1 = ds.sample("s1")
    assert s1.image == tmp_path / "images" / "s1.tif"
    assert s1.label == tmp_path / "labels" / "s1.tif"
    assert s1.contour == tmp_path / "contours" / "s1.tif"
    assert s1.image_info.shape == (3, 8, 9)
    assert s1.image_info.spacing == (2.0, 0.5, 0.5)
    assert s1.label_info.axes == "ZYX"
    assert ds.colour_table is None


def test_scan_reads_no_pixels(tmp_path, monkeypatch):
    _stack_dataset(tmp_path)

    def refuse(path):
        raise AssertionError(f"scan read the pixels of {path}")

    monkeypatch.setattr(dataset_module, "read_image", refuse)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    assert len(scan_dataset(tmp_path)) == 2


def test_load_decodes_colour_labels_through_classes_json(tmp_path):
    truth = _colour_dataset(tmp_path)
    ds = scan_dataset(tmp_path)
    assert ds.colour_table == LUNG_CLASSES
    for name, labels in truth.items():
        loaded = ds.load(name)
        assert loaded.image.shape == (8, 9, 3)
        assert loaded.axes == "YXC"
        assert loaded.label.dtype == np.uint8
        np.testing.assert_array_equal(loaded.label, labels)
        assert loaded.contour is None
        assert loaded.spacing is None


def test_load_stack_with_contour(tmp_path):
    _stack_dataset(tmp_path)
    ds = scan_dataset(tmp_path)
    sample = ds.samples[0]
    loaded = ds.load(sample)
    assert loaded.image.shape == loaded.label.shape == loaded.contour.shape == (3, 8, 9)
    assert loaded.spacing == (2.0, 0.5, 0.5)


def test_unknown_label_colour_names_file_and_colour(tmp_path):
    _colour_dataset(tmp_path, names=("a",))
    rgb = LUNG_CLASSES.encode(np.zeros((8, 9), np.uint8))
    rgb[0, :3] = (10, 20, 30)
    write_image(tmp_path / "labels" / "a.png", rgb)
    ds = scan_dataset(tmp_path)
    with pytest.raises(DataFileError, match=r"labels/a\.png.*\(10, 20, 30\) x3") as err:
        ds.load("a")
    _one_line(err)


def test_colour_labels_without_classes_json(tmp_path):
    _colour_dataset(tmp_path)
    (tmp_path / "classes.json").unlink()
    with pytest.raises(DataFileError, match="3 label.*colour images.*classes.json") as err:
        scan_dataset(tmp_path)
    _one_line(err)


def test_index_labels_with_classes_json_are_returned_as_is(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((4, 5), np.uint8))
    labels = _index_map((4, 5))
    write_image(tmp_path / "labels" / "a.png", labels)
    LUNG_CLASSES.save(tmp_path / "classes.json")
    np.testing.assert_array_equal(scan_dataset(tmp_path).load("a").label, labels)


def test_images_without_labels_are_listed(tmp_path):
    names = [f"img{i}" for i in range(8)]
    for name in names:
        write_image(tmp_path / "images" / f"{name}.png", np.zeros((4, 5), np.uint8))
    write_image(tmp_path / "labels" / "img3.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataFileError, match="7 image") as err:
        scan_dataset(tmp_path)
    text = _one_line(err)
    assert "img0.png, img1.png, img2.png, img4.png, img5.png and 2 more" in text
    assert "require_labels=False" in text

    ds = scan_dataset(tmp_path, require_labels=False)
    assert [s.label is not None for s in ds] == [n == "img3" for n in names]
    assert ds.load("img0").label is None


def test_unlabelled_dataset_needs_no_labels_folder(tmp_path):
    write_image(tmp_path / "images" / "a.tif", np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(DataFileError, match="no labels/ folder"):
        scan_dataset(tmp_path)
    assert scan_dataset(tmp_path, require_labels=False).samples[0].label is None


@pytest.mark.parametrize("folder", ["labels", "contours"])
def test_files_without_images_are_listed(tmp_path, folder):
    _stack_dataset(tmp_path)
    write_image(tmp_path / folder / "stray.tif", np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(DataFileError, match=f"1 file.*{folder}.*stray.tif") as err:
        scan_dataset(tmp_path)
    _one_line(err)


@pytest.mark.parametrize(
    ("folder", "shape"), [("labels", (3, 8, 8)), ("labels", (4, 8, 9)), ("contours", (8, 9))]
)
def test_shape_mismatch_names_sample_and_both_shapes(tmp_path, folder, shape):
    _stack_dataset(tmp_path)
    write_image(tmp_path / folder / "s2.tif", np.zeros(shape, np.uint8))
    with pytest.raises(DataFileError, match="s2") as err:
        scan_dataset(tmp_path)
    text = _one_line(err)
    assert str(shape) in text
    assert "(3, 8, 9)" in text


def test_colour_image_matches_index_label_by_spatial_shape(tmp_path):
    write_image(tmp_path / "images" / "a.tif", np.zeros((8, 9, 3), np.uint8))
    write_image(tmp_path / "labels" / "a.tif", np.zeros((8, 9), np.uint8))
    assert scan_dataset(tmp_path).samples[0].image_info.spatial_shape == (8, 9)


def test_hidden_files_are_ignored_other_files_are_errors(tmp_path):
    _stack_dataset(tmp_path)
    (tmp_path / "images" / ".s1.abc.tmp.tif").write_bytes(b"half written")
    assert len(scan_dataset(tmp_path)) == 2
    (tmp_path / "images" / "notes.txt").write_text("x")
    (tmp_path / "images" / "sub").mkdir()
    with pytest.raises(DataFileError, match="2 entries.*notes.txt, sub") as err:
        scan_dataset(tmp_path)
    _one_line(err)


def test_same_name_with_two_endings(tmp_path):
    _stack_dataset(tmp_path)
    write_image(tmp_path / "images" / "s1.nii.gz", np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(DataFileError, match="s1.nii.gz and s1.tif|s1.tif and s1.nii.gz"):
        scan_dataset(tmp_path)


def test_missing_or_empty_dataset(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataFileError, match="not a folder"):
        scan_dataset(tmp_path / "file")
    with pytest.raises(DataFileError, match="no images/ folder"):
        scan_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataFileError, match="holds no images"):
        scan_dataset(tmp_path)


def test_corrupt_image_is_reported_by_scan(tmp_path):
    _stack_dataset(tmp_path)
    (tmp_path / "images" / "s1.tif").write_bytes(b"garbage" * 10)
    with pytest.raises(DataFileError, match="s1.tif"):
        scan_dataset(tmp_path)


def test_unknown_sample_name(tmp_path):
    _stack_dataset(tmp_path)
    with pytest.raises(SeglabError, match="no sample 'zz'.*s1, s2"):
        scan_dataset(tmp_path).load("zz")


# ---------------------------------------------------------------------------------- digests
@pytest.mark.parametrize("size", [0, 10, (1 << 20) * 2 + 7])
def test_file_sha256_matches_hashlib(tmp_path, size):
    data = RNG.integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="cannot read"):
        file_sha256(tmp_path / "nope")


# ---------------------------------------------------------------------------------- manifest
def test_manifest_lists_files_digests_and_headers(tmp_path):
    _stack_dataset(tmp_path, names=("s1",))
    LUNG_CLASSES.save(tmp_path / "classes.json")
    path = write_manifest(tmp_path)
    assert path == tmp_path / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "seglab-dataset-manifest"
    assert manifest["version"] == 1
    digest = hashlib.sha256((tmp_path / "classes.json").read_bytes()).hexdigest()
    assert manifest["classes"] == {"file": "classes.json", "sha256": digest}
    (entry,) = manifest["samples"]
    assert entry["name"] == "s1"
    assert entry["files"] == {
        "image": "images/s1.tif",
        "label": "labels/s1.tif",
        "contour": "contours/s1.tif",
    }
    for rel in entry["files"].values():
        assert entry["sha256"][rel] == hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
    assert entry["shape"] == [3, 8, 9]
    assert entry["dtype"] == "uint8"
    assert entry["axes"] == "ZYX"
    assert entry["spacing"] == [2.0, 0.5, 0.5]


def test_manifest_is_deterministic_and_respects_overwrite(tmp_path):
    _colour_dataset(tmp_path)
    first = write_manifest(tmp_path).read_bytes()
    assert write_manifest(tmp_path).read_bytes() == first
    with pytest.raises(OutputExistsError):
        write_manifest(tmp_path, overwrite=False)


def test_manifest_of_bad_dataset_is_not_written(tmp_path):
    _stack_dataset(tmp_path)
    (tmp_path / "labels" / "s1.tif").unlink()
    with pytest.raises(DataFileError, match="no label"):
        write_manifest(tmp_path)
    assert not (tmp_path / MANIFEST_FILE).exists()


def test_verify_reports_changed_missing_and_new_files(tmp_path):
    _stack_dataset(tmp_path)
    write_manifest(tmp_path)
    report = verify_manifest(tmp_path)
    assert report.ok
    assert report.checked == 6
    assert "matches its manifest (6 files)" in report.summary()

    write_image(tmp_path / "images" / "s1.tif", np.zeros((3, 8, 9), np.uint8), overwrite=True)
    (tmp_path / "contours" / "s2.tif").unlink()
    write_image(tmp_path / "images" / "s3.tif", np.zeros((3, 8, 9), np.uint8))
    LUNG_CLASSES.save(tmp_path / "classes.json")
    (tmp_path / "images" / ".hidden.tif").write_bytes(b"x")

    report = verify_manifest(tmp_path)
    assert report == ManifestReport(
        tmp_path,
        6,
        changed=("images/s1.tif",),
        missing=("contours/s2.tif",),
        new=("classes.json", "images/s3.tif"),
    )
    assert not report.ok
    summary = report.summary()
    assert "1 changed (images/s1.tif), 1 missing (contours/s2.tif), 2 new" in summary
    with pytest.raises(DataFileError, match="1 changed") as err:
        verify_manifest(tmp_path, strict=True)
    _one_line(err)


def test_verify_notices_a_changed_classes_json(tmp_path):
    _colour_dataset(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "classes.json").write_text(
        (tmp_path / "classes.json").read_text().replace("Background", "Bg")
    )
    assert verify_manifest(tmp_path).changed == ("classes.json",)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        ("{not json", "not readable JSON"),
        ("[]", "not a seglab dataset manifest"),
        ('{"format": "seglab-dataset-manifest", "version": 99}', "version 99"),
        ('{"format": "seglab-dataset-manifest", "version": 1}', "malformed"),
        (
            '{"format": "seglab-dataset-manifest", "version": 1, '
            '"samples": [{"sha256": {"../../etc/passwd": "0"}}]}',
            "not a path inside the dataset",
        ),
    ],
)
def test_verify_rejects_missing_or_malformed_manifest(tmp_path, content, match):
    _stack_dataset(tmp_path)
    if content is not None:
        (tmp_path / MANIFEST_FILE).write_text(content)
    with pytest.raises(DataFileError, match=match) as err:
        verify_manifest(tmp_path)
    _one_line(err)
