"""Online datasets fail offline with instructions; local folders load fake files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gradfeat_plugin.data import VOC_CLASSES, dataset_targets, get_dataset
from gradfeat_plugin.errors import GradfeatError


@pytest.mark.parametrize(
    "name, files",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("svhn", "train_32x32.mat"),
        ("stl10", "stl10_binary"),
    ],
)
def test_torchvision_datasets_say_where_to_place_the_files(name, files, tmp_path):
    with pytest.raises(GradfeatError, match=f"{name} not found in .*{files}.*mnist5k"):
        get_dataset(name, data_dir=str(tmp_path))
    with pytest.raises(GradfeatError, match="--data-dir"):
        get_dataset(name)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(GradfeatError, match="unknown dataset 'mnist'.*mnist5k"):
        get_dataset("mnist")


def _write_image(path, value: int, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    for part in ("train", "val"):
        for label, cls in enumerate(("cat", "dog")):
            for i in range(2 if part == "val" else 3):
                _write_image(tmp_path / part / cls / f"{i}.png", 40 + 150 * label)
    return tmp_path


def test_imagefolder_reads_train_and_val(image_folder):
    splits = get_dataset(f"imagefolder:{image_folder}", input_size=(3, 16, 16))
    assert (len(splits.train), len(splits.test), splits.num_classes) == (6, 4, 2)
    image, target = splits.test[3]
    assert image.shape == (3, 16, 16) and target == 1
    # The dog images are uniform grey 190: (190/255 - 0.5) / 0.5 everywhere.
    assert torch.allclose(image, torch.full_like(image, 190 / 255 * 2 - 1), atol=1e-6)
    assert dataset_targets(splits.train).tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder_with_different_classes_is_a_user_error(image_folder):
    _write_image(image_folder / "val" / "bird" / "0.png", 10)
    with pytest.raises(GradfeatError, match="class folders differ"):
        get_dataset(f"imagefolder:{image_folder}")


def test_imagefolder_without_val_is_a_user_error(tmp_path):
    _write_image(tmp_path / "train" / "a" / "0.png", 10)
    with pytest.raises(GradfeatError, match="val is not a folder"):
        get_dataset(f"imagefolder:{tmp_path}")


_VOC_OBJECTS = {
    "000001": ["dog", "person"],
    "000002": ["car"],
    "000003": ["person", "person", "tvmonitor"],
    "000004": ["cat"],
}


@pytest.fixture
def vocdevkit(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for i, (image_id, names) in enumerate(_VOC_OBJECTS.items()):
        _write_image(voc / "JPEGImages" / f"{image_id}.jpg", 30 * i)
        objects = "".join(
            f"<object><name>{n}</name><difficult>0</difficult></object>" for n in names
        )
        xml = f"<annotation><filename>{image_id}.jpg</filename>{objects}</annotation>"
        (voc / "Annotations" / f"{image_id}.xml").write_text(xml)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n000003\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000004\n")
    return tmp_path


def test_voc2007_is_multilabel_with_multi_hot_targets(vocdevkit):
    splits = get_dataset("voc2007", data_dir=str(vocdevkit))
    assert (splits.task, splits.num_classes) == ("multilabel", 20)
    assert (len(splits.train), len(splits.test)) == (3, 1)
    expected = torch.zeros(3, 20)
    for row, names in enumerate(list(_VOC_OBJECTS.values())[:3]):
        for n in names:
            expected[row, VOC_CLASSES.index(n)] = 1.0
    assert torch.equal(torch.stack([splits.train[i][1] for i in range(3)]), expected)
    image, target = splits.test[0]
    assert image.shape == (3, 32, 32) and target.dtype == torch.float32
    assert target.nonzero().flatten().tolist() == [VOC_CLASSES.index("cat")]


def test_voc2007_absent_says_where_to_extract(tmp_path):
    with pytest.raises(
        GradfeatError, match="voc2007 trainval not found.*VOCdevkit/VOC2007"
    ):
        get_dataset("voc2007", data_dir=str(tmp_path))
    with pytest.raises(GradfeatError, match="--data-dir"):
        get_dataset("voc2007")
