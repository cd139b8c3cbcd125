from pathlib import Path

import numpy as np
import pytest

from seglab.bundle.data import dataset_dicts
from seglab.errors import DataFileError, SeglabError
from seglab.io.images import write_image


def make_folder(root: Path, n: int, labelled: int | None = None) -> Path:
    labelled = n if labelled is None else labelled
    for i in range(n):
        write_image(root / "images" / f"s{i}.png", np.full((8, 8), i, np.uint8))
        if i < labelled:
            write_image(root / "labels" / f"s{i}.png", np.zeros((8, 8), np.uint8))
    return root


def test_all_lists_every_sample_sorted(tmp_path):
    dicts = dataset_dicts(make_folder(tmp_path, 3))
    assert [d["name"] for d in dicts] == ["s0", "s1", "s2"]
    assert dicts[1]["image"] == str(tmp_path / "images" / "s1.png")
    assert dicts[1]["label"] == str(tmp_path / "labels" / "s1.png")


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(10, 0.2, 2), (3, 0.2, 1), (2, 0.9, 1)])
def test_train_and_val_partition_the_samples(tmp_path, n, fraction, n_val):
    root = make_folder(tmp_path, n)
    train = dataset_dicts(root, "train", fraction, seed=1)
    val = dataset_dicts(root, "val", fraction, seed=1)
    assert len(val) == n_val
    assert sorted(d["name"] for d in train + val) == sorted(f"s{i}" for i in range(n))
    assert val == dataset_dicts(root, "val", fraction, seed=1)


def test_no_validation_fraction_gives_an_empty_val_split(tmp_path):
    root = make_folder(tmp_path, 2)
    assert dataset_dicts(root, "val", 0.0) == []
    assert len(dataset_dicts(root, "train", 0.0)) == 2


def test_unlabelled_images_for_inference(tmp_path):
    root = make_folder(tmp_path, 2, labelled=0)
    dicts = dataset_dicts(root, require_labels=False)
    assert [set(d) for d in dicts] == [{"image", "name"}] * 2
    with pytest.raises(DataFileError):
        dataset_dicts(root)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"split": "test"}, "unknown split"), ({"val_fraction": 1.0}, "val_fraction")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(SeglabError, match=match):
        dataset_dicts(make_folder(tmp_path, 2), **kwargs)


def test_contours_are_listed_when_present(tmp_path):
    root = make_folder(tmp_path, 2)
    write_image(root / "contours" / "s1.png", np.zeros((8, 8), np.uint8))
    dicts = dataset_dicts(root)
    assert "contour" not in dicts[0]
    assert dicts[1]["contour"] == str(root / "contours" / "s1.png")


def test_class_weights_come_from_the_training_labels_through_the_load_transforms(tmp_path):
    from seglab.bundle import class_weights_for
    from seglab.networks.losses import inverse_frequency_weights

    maps = [np.array([[0, 0, 0, 1]]), np.array([[0, 2, 2, 2]])]
    datalist = [{"label": i} for i in range(len(maps))]

    def load(sample):
        return {"label": maps[sample["label"]][None]}  # (1, H, W) as MONAI loads it

    weights = class_weights_for(datalist, 3, "inverse-frequency", load)
    assert weights == pytest.approx(inverse_frequency_weights(maps, 3))
    assert weights[1] > weights[2] > weights[0]  # the rarest class weighs most
    with pytest.raises(SeglabError, match="no training samples"):
        class_weights_for([], 3, "inverse-frequency", load)
