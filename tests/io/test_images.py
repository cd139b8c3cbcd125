import logging
import struct
import warnings
import zlib

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from seglab.errors import DataFileError, OutputExistsError, SeglabError
from seglab.io.images import (
    Image,
    image_format,
    image_stem,
    infer_axes,
    read_image,
    read_image_info,
    read_stack_memmap,
    write_image,
)

RNG = np.random.default_rng(7)


def _random(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -1000), min(info.max, 60000), shape, dtype=dtype)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _png_bytes(width, height, bit_depth, colour_type, raw_rows):
    def chunk(kind, body):
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in raw_rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------- round trips
ROUND_TRIPS = [
    # (suffix, shape, dtype, axes)
    (".tif", (6, 7), np.uint8, "YX"),
    (".tif", (6, 7), np.uint16, "YX"),
    (".tif", (6, 7), np.float32, "YX"),
    (".tif", (6, 7, 3), np.uint8, "YXC"),
    (".tif", (6, 7, 3), np.uint16, "YXC"),
    (".tif", (6, 7, 4), np.uint8, "YXC"),
    (".tif", (5, 6, 7), np.uint8, "ZYX"),
    (".tif", (5, 6, 7), np.uint16, "ZYX"),
    (".tif", (5, 6, 7), np.float32, "ZYX"),
    (".tif", (5, 6, 7), np.int64, "ZYX"),
    (".tif", (5, 6, 7), np.float64, "ZYX"),
    (".tif", (5, 6, 7), bool, "ZYX"),
    (".tif", (4, 6, 7, 3), np.uint8, "ZYXC"),
    (".tif", (4, 6, 7, 2), np.float32, "ZYXC"),
    (".tiff", (5, 6, 7), np.uint16, "ZYX"),
    (".ome.tif", (5, 6, 7), np.uint16, "ZYX"),
    (".ome.tif", (6, 7, 3), np.uint8, "YXC"),
    (".ome.tiff", (4, 6, 7, 2), np.float32, "ZYXC"),
    (".png", (6, 7), np.uint8, "YX"),
    (".png", (6, 7), np.uint16, "YX"),
    (".png", (6, 7), bool, "YX"),
    (".png", (6, 7, 3), np.uint8, "YXC"),
    (".png", (6, 7, 4), np.uint8, "YXC"),
    (".nii", (6, 7), np.float32, "YX"),
    (".nii", (6, 7, 3), np.uint8, "YXC"),
    (".nii.gz", (5, 6, 7), np.uint16, "ZYX"),
    (".nii.gz", (5, 6, 7), np.int64, "ZYX"),
    (".nii.gz", (4, 6, 7, 3), np.float64, "ZYXC"),
]


@pytest.mark.parametrize(("suffix", "shape", "dtype", "axes"), ROUND_TRIPS)
def test_round_trip_keeps_pixels_dtype_and_axes(tmp_path, suffix, shape, dtype, axes):
    array = _random(shape, dtype)
    path = write_image(tmp_path / f"a{suffix}", array)
    assert path == tmp_path / f"a{suffix}"

    image = read_image(path)
    assert image.array.dtype == array.dtype
    assert image.axes == axes
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing is None
    assert image.path == path

    info = read_image_info(path)
    assert (info.shape, info.dtype, info.axes, info.spacing) == (shape, array.dtype, axes, None)
    assert info.spatial_shape == tuple(n for n, a in zip(shape, axes, strict=True) if a != "C")


SPACINGS = [
    ((5, 6, 7), (48.4 / 690, 14.3 / 1024, 14.3 / 1024)),  # study B, cell B voxel size
    ((5, 6, 7), (2.0, 0.3, 0.1)),
    ((6, 7), (0.3, 0.7)),
    ((6, 7, 3), (0.25, 0.5)),
]


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int32])
@pytest.mark.parametrize(("shape", "spacing"), SPACINGS)
def test_spacing_round_trip(tmp_path, suffix, dtype, shape, spacing):
    array = _random(shape, dtype if len(shape) != 3 or shape[-1] != 3 else np.uint8)
    path = write_image(tmp_path / f"a{suffix}", array, spacing)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, array)
    if suffix.startswith(".nii"):
        # NIfTI-1 pixdim is float32: equal to float32 precision
        np.testing.assert_allclose(image.spacing, spacing, rtol=1e-7)
    else:
        # ImageJ stores x/y as rationals: equal to ~1e-15
        np.testing.assert_allclose(image.spacing, spacing, rtol=1e-12)
    assert read_image_info(path).spacing == image.spacing


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_typed_decimal_spacing_comes_back_exactly(tmp_path, suffix):
    path = write_image(tmp_path / f"a{suffix}", _random((3, 4, 5), np.uint8), (0.3, 0.1, 0.05))
    assert read_image(path).spacing == (0.3, 0.1, 0.05)


def test_image_object_brings_its_spacing_and_axes(tmp_path):
    array = _random((3, 4, 4), np.uint8)  # 4 pixels wide: would be inferred as RGBA
    image = Image(array, spacing=(1.0, 0.5, 0.5), axes="ZYX")
    back = read_image(write_image(tmp_path / "a.tif", image))
    assert back.axes == "ZYX"
    assert back.spacing == (1.0, 0.5, 0.5)
    override = read_image(write_image(tmp_path / "b.tif", image, spacing=(2.0, 1.0, 1.0)))
    assert override.spacing == (2.0, 1.0, 1.0)


def test_nifti_axis_order_is_x_y_z_on_disk(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    path = write_image(tmp_path / "a.nii.gz", array, (3.0, 2.0, 1.0))
    raw = nib.load(path)
    assert raw.shape == (4, 3, 2)
    assert raw.header.get_xyzt_units()[0] == "micron"
    assert tuple(float(v) for v in raw.header.get_zooms()) == (1.0, 2.0, 3.0)
    data = np.asarray(raw.dataobj)
    for z, y, x in [(0, 0, 0), (1, 2, 3), (1, 0, 2), (0, 2, 1)]:
        assert data[x, y, z] == array[z, y, x]


def test_reads_nifti_written_by_another_tool_in_mm(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)  # (x, y, z)
    img = nib.Nifti1Image(data, np.diag([0.001, 0.002, 0.005, 1.0]))
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, tmp_path / "a.nii")
    image = read_image(tmp_path / "a.nii")
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.array, data.transpose(2, 1, 0))
    assert image.spacing == (5.0, 2.0, 1.0)


def test_nifti_with_unknown_unit_has_unknown_spacing(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), np.uint8), np.eye(4)), tmp_path / "a.nii")
    assert read_image(tmp_path / "a.nii").spacing is None


# ---------------------------------------------------------------------------------- TIFF metadata
@pytest.mark.parametrize(
    ("unit", "factor"),
    [("micron", 1.0), ("um", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)],
)
def test_imagej_units_are_converted_to_um(tmp_path, unit, factor):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 4, 5), np.uint8),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),  # pixels per unit: x size 0.5, y size 0.25
        metadata={"spacing": 2.0, "unit": unit, "axes": "ZYX"},
    )
    spacing = read_image(path).spacing
    assert spacing == pytest.approx((2.0 * factor, 0.25 * factor, 0.5 * factor), rel=1e-12)


def test_imagej_stack_without_spacing_key_has_one_unit_z_step(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 4, 5), np.uint8),
        imagej=True,
        resolution=(10, 10),
        metadata={"unit": "micron", "axes": "ZYX"},
    )
    assert read_image_info(path).spacing == pytest.approx((1.0, 0.1, 0.1))


def test_imagej_without_real_unit_has_unknown_spacing(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint8), imagej=True, resolution=(2, 2))
    assert read_image(path).spacing is None


def test_imagej_hyperstack_channels_move_last(tmp_path):
    zcyx = _random((3, 2, 4, 5), np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, zcyx, imagej=True, metadata={"axes": "ZCYX"})
    image = read_image(path)
    assert image.axes == "ZYXC"
    np.testing.assert_array_equal(image.array, zcyx.transpose(0, 2, 3, 1))


def test_reads_ome_tiff_physical_sizes(tmp_path):
    array = _random((3, 4, 5), np.uint16)
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path,
        array,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 250,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.5,
            "PhysicalSizeYUnit": "\u00b5m",
            "PhysicalSizeZ": 0.002,
            "PhysicalSizeZUnit": "mm",
        },
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == (2.0, 0.5, 0.25)


def test_ome_tiff_without_z_size_has_unknown_spacing(tmp_path):
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 4, 5), np.uint8),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
    )
    assert read_image(path).spacing is None


@pytest.mark.parametrize(
    ("unit", "expected"), [("INCH", None), ("NONE", None), ("CENTIMETER", (2.5, 5.0))]
)
def test_plain_tiff_resolution_only_counts_in_metric_units(tmp_path, unit, expected):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8), resolution=(2000, 4000), resolutionunit=unit)
    assert read_image(path).spacing == expected


def test_plain_multipage_tiff_reads_as_stack(tmp_path):
    pages = _random((3, 4, 5), np.uint8)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, metadata=None)
    image = read_image(path)
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.array, pages)
    assert image.spacing is None


def test_one_slice_stack_reads_back_as_2d(tmp_path):
    array = _random((1, 4, 5), np.uint8)
    image = read_image(write_image(tmp_path / "a.tif", array, (2.0, 0.5, 0.5), axes="ZYX"))
    assert image.axes == "YX"
    np.testing.assert_array_equal(image.array, array[0])
    assert image.spacing == (0.5, 0.5)


def test_tiff_with_two_depth_axes_is_refused(tmp_path):
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 4, 5), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(DataFileError, match="2D images and 3D stacks") as err:
        read_image(path)
    _one_line(err)


# ---------------------------------------------------------------------------------- PNG
def test_png_rgba_keeps_alpha(tmp_path):
    rgba = _random((5, 6, 4), np.uint8)
    PILImage.fromarray(rgba).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.axes == "YXC"
    np.testing.assert_array_equal(image.array, rgba)
    assert read_image_info(tmp_path / "a.png").shape == (5, 6, 4)


def test_palette_png_reads_as_rgb(tmp_path):
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    pal = PILImage.fromarray(indices, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    pal.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    expected = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)[indices]
    np.testing.assert_array_equal(image.array, expected)
    assert read_image_info(tmp_path / "p.png").shape == (2, 2, 3)


def test_sixteen_bit_colour_png_is_refused(tmp_path):
    row = struct.pack(">6H", 1, 2, 3, 4, 5, 6)  # 2 pixels of 16-bit RGB
    (tmp_path / "c16.png").write_bytes(_png_bytes(2, 1, 16, 2, [row]))
    for reader in (read_image, read_image_info):
        with pytest.raises(DataFileError, match="16-bit colour PNG") as err:
            reader(tmp_path / "c16.png")
        _one_line(err)


def test_sixteen_bit_grey_png_written_elsewhere_reads_as_uint16(tmp_path):
    row = struct.pack(">3H", 0, 300, 65535)
    (tmp_path / "g16.png").write_bytes(_png_bytes(3, 1, 16, 0, [row]))
    image = read_image(tmp_path / "g16.png")
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, [[0, 300, 65535]])


# ---------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".png", ".nii"])
@pytest.mark.parametrize("shape", [(40, 50), (4, 40, 50)])
def test_truncated_file_is_a_one_line_error(tmp_path, suffix, shape):
    if suffix == ".png" and len(shape) == 3:
        shape = (40, 50, 3)
    path = write_image(tmp_path / f"a{suffix}", _random(shape, np.uint8))
    _cut(path)
    for reader in (read_image, read_image_info):
        with pytest.raises(DataFileError, match="truncated|corrupt") as err:
            reader(path)
        assert str(path) in _one_line(err)


def test_truncated_gzip_nifti_fails_on_reading(tmp_path):
    path = write_image(tmp_path / "a.nii.gz", _random((4, 40, 50), np.uint16))
    _cut(path, 0.7)
    with pytest.raises(DataFileError, match="truncated") as err:
        read_image(path)
    _one_line(err)


def test_truncated_tiff_does_not_print_tifffile_errors(tmp_path, capsys):
    path = write_image(tmp_path / "a.tif", _random((4, 40, 50), np.uint8))
    _cut(path)
    with pytest.raises(DataFileError):
        read_image(path)
    assert "tifffile" not in capsys.readouterr().err
    assert logging.getLogger("tifffile").propagate is True


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".png", ".nii", ".nii.gz"])
@pytest.mark.parametrize("content", [b"", b"this is not an image at all" * 20])
def test_garbage_file_is_a_one_line_error(tmp_path, suffix, content):
    path = tmp_path / f"g{suffix}"
    path.write_bytes(content)
    for reader in (read_image, read_image_info):
        with pytest.raises(DataFileError) as err:
            reader(path)
        assert str(path) in _one_line(err)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="not found") as err:
        read_image(tmp_path / "nope.tif")
    _one_line(err)


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(DataFileError, match="not a file"):
        read_image_info(tmp_path / "d.tif")


@pytest.mark.parametrize("name", ["a.jpg", "a.tif.bak", "a.nii.zip", "a"])
def test_unsupported_suffix(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataFileError, match="unsupported file type") as err:
        read_image(tmp_path / name)
    _one_line(err)
    with pytest.raises(DataFileError, match="unsupported file type"):
        write_image(tmp_path / name, np.zeros((2, 2), np.uint8))


def test_zero_page_tiff_is_an_empty_stack(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"II*\x00\x00\x00\x00\x00")  # header whose first IFD offset is 0
    with pytest.raises(DataFileError, match="no images") as err:
        read_image(path)
    _one_line(err)


def test_zero_length_stack_is_empty(tmp_path):
    path = tmp_path / "zero.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(path, np.zeros((0, 4, 5), np.uint8))
    for reader in (read_image, read_image_info):
        with pytest.raises(DataFileError, match="no pixels"):
            reader(path)


# ---------------------------------------------------------------------------------- write errors
@pytest.mark.parametrize(
    ("array", "kwargs", "match"),
    [
        (np.zeros((0, 4), np.uint8), {}, "empty image"),
        (np.zeros((4,), np.uint8), {}, "2 to 4 dimensions"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), {}, "2 to 4 dimensions"),
        (np.zeros((4, 4), object), {}, "dtype object"),
        (np.zeros((4, 4), complex), {}, "dtype complex"),
        (np.zeros((3, 4, 5), np.uint8), {"spacing": (1.0, 1.0)}, "has 2 values"),
        (np.zeros((3, 4, 5), np.uint8), {"spacing": (1.0, -1.0, 1.0)}, "positive"),
        (np.zeros((3, 4, 5), np.uint8), {"spacing": (1.0, np.nan, 1.0)}, "finite"),
        (np.zeros((3, 4, 5), np.uint8), {"spacing": "abc"}, "has 3 values|numbers"),
        (np.zeros((3, 4, 5), np.uint8), {"axes": "XYZ"}, "axes must be"),
        (np.zeros((3, 4, 5), np.uint8), {"axes": "YX"}, "do not fit"),
    ],
)
def test_write_rejects_bad_input(tmp_path, array, kwargs, match):
    with pytest.raises(SeglabError, match=match) as err:
        write_image(tmp_path / "a.tif", array, **kwargs)
    _one_line(err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("array", "spacing", "match"),
    [
        (np.zeros((4, 5), np.uint8), (1.0, 1.0), "cannot store a pixel size"),
        (np.zeros((4, 5), np.float32), None, "PNG cannot store"),
        (np.zeros((4, 5, 3), np.uint16), None, "PNG cannot store"),
        (np.zeros((3, 4, 5), np.uint8), None, "PNG cannot store"),
    ],
)
def test_png_write_refuses_what_png_cannot_hold(tmp_path, array, spacing, match):
    with pytest.raises(SeglabError, match=match) as err:
        write_image(tmp_path / "a.png", array, spacing)
    assert ".tif" in _one_line(err)


def test_nifti_write_refuses_bool(tmp_path):
    with pytest.raises(SeglabError, match="bool"):
        write_image(tmp_path / "a.nii", np.zeros((3, 4), bool))


def test_ome_write_refuses_int64(tmp_path):
    with pytest.raises(SeglabError, match="OME-TIFF cannot store int64") as err:
        write_image(tmp_path / "a.ome.tif", np.zeros((3, 4, 5), np.int64))
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def half_write(path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(SeglabError, match="No space left") as err:
        write_image(tmp_path / "a.tif", np.zeros((3, 4, 5), np.uint8))
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_write_respects_overwrite(tmp_path):
    path = write_image(tmp_path / "a.tif", np.ones((3, 4), np.uint8))
    with pytest.raises(OutputExistsError):
        write_image(path, np.zeros((3, 4), np.uint8), overwrite=False)
    np.testing.assert_array_equal(read_image(path).array, 1)
    write_image(path, np.zeros((3, 4), np.uint8))
    np.testing.assert_array_equal(read_image(path).array, 0)


def test_write_creates_missing_folders(tmp_path):
    path = write_image(tmp_path / "x" / "y" / "a.png", np.zeros((3, 4), np.uint8))
    assert path.is_file()


# ---------------------------------------------------------------------------------- memmap
def test_memmap_stack_matches_read_image(tmp_path):
    array = _random((6, 7, 8), np.uint16)
    path = write_image(tmp_path / "s.tif", array, (2.0, 0.5, 0.5))
    image = read_stack_memmap(path)
    assert isinstance(image.array, np.memmap)
    assert not image.array.flags.writeable
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == (2.0, 0.5, 0.5)
    assert image.axes == "ZYX"


def test_memmap_colour_stack(tmp_path):
    array = _random((3, 4, 5, 3), np.uint8)
    image = read_stack_memmap(write_image(tmp_path / "s.tif", array))
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "ZYXC"


def test_memmap_refuses_compressed_tiff(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(
        path, _random((3, 20, 20), np.uint8), photometric="minisblack", compression="zlib"
    )
    with pytest.raises(DataFileError, match="compressed") as err:
        read_stack_memmap(path)
    _one_line(err)
    np.testing.assert_array_equal(read_image(path).array.shape, (3, 20, 20))


def test_memmap_refuses_other_formats_and_truncated_files(tmp_path):
    nii = write_image(tmp_path / "a.nii", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(DataFileError, match="not a TIFF"):
        read_stack_memmap(nii)
    tif = write_image(tmp_path / "a.tif", _random((4, 40, 50), np.uint8))
    _cut(tif)
    with pytest.raises(DataFileError, match="truncated|corrupt"):
        read_stack_memmap(tif)


# ---------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(
    ("shape", "spatial_ndim", "axes"),
    [
        ((4, 5), None, "YX"),
        ((4, 5, 3), None, "YXC"),
        ((4, 5, 4), None, "YXC"),
        ((4, 5, 6), None, "ZYX"),
        ((4, 5, 3), 3, "ZYX"),
        ((4, 5, 6), 2, "ZYX"),
        ((2, 4, 5, 3), None, "ZYXC"),
    ],
)
def test_infer_axes(shape, spatial_ndim, axes):
    assert infer_axes(shape, spatial_ndim) == axes


@pytest.mark.parametrize(
    ("name", "stem", "fmt"),
    [
        ("a.tif", "a", "tiff"),
        ("a.b.TIFF", "a.b", "tiff"),
        ("cell.ome.tif", "cell", "ome-tiff"),
        ("x.nii.gz", "x", "nifti"),
        ("x.nii", "x", "nifti"),
        ("slice_001.png", "slice_001", "png"),
    ],
)
def test_stem_and_format(name, stem, fmt):
    assert image_stem(name) == stem
    assert image_format(name) == fmt


def test_image_validates_spacing_against_axes():
    assert Image(np.zeros((3, 4, 5))).axes == "ZYX"
    with pytest.raises(SeglabError, match="has 2 values"):
        Image(np.zeros((3, 4, 5)), spacing=(1.0, 1.0))
    assert Image(np.zeros((4, 5, 3)), spacing=(1, 2)).spacing == (1.0, 2.0)
    assert Image(np.zeros((4, 5, 3)), spacing=(1, 2)).spatial_shape == (4, 5)
