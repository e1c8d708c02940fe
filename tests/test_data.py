"""The IDX reader and the dataset search order, on files the tests write themselves."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from bench.tasks import data
from bench.tasks.data import DatasetError


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_split(directory, split, images, labels, compress=True, image_magic=None):
    images_stem, labels_stem = data.SPLITS[split]
    for stem, array, magic in ((images_stem, images, image_magic), (labels_stem, labels, None)):
        raw = idx_bytes(array, magic)
        if compress:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)


def make_dataset_dir(tmp_path, n_train=20, n_test=10, compress=True):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.arange(n) % 10
        write_split(tmp_path, split, images, labels, compress)
    return tmp_path


@pytest.fixture
def no_standard_dirs(tmp_path, monkeypatch):
    """Point the standard places at empty directories, so only what a test names is found."""
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(data, "KERAS_CACHE", tmp_path / "keras")
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv(data.ENV_DATASET, raising=False)


@pytest.mark.parametrize("compress", [True, False])
def test_valid_files_load(tmp_path, compress, no_standard_dirs):
    make_dataset_dir(tmp_path, compress=compress)
    ds = data.load_classification(data_dir=tmp_path)
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (20, 28, 28) and ds.x_test.shape == (10, 28, 28)
    assert ds.y_train.tolist() == [i % 10 for i in range(20)]


def test_env_var_directory_is_used(tmp_path, monkeypatch, no_standard_dirs):
    make_dataset_dir(tmp_path, n_train=30)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path))
    assert data.load_classification().x_train.shape[0] == 30


def test_debian_directory_is_found(tmp_path, no_standard_dirs):
    target = data.SYSTEM_DIR / "fashion-mnist"
    target.mkdir(parents=True)
    make_dataset_dir(target, n_train=40)
    ds = data.load_classification()
    assert ds.source == str(target) and len(ds.x_train) == 40


def corrupt(tmp_path, how):
    make_dataset_dir(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    images = tmp_path / "train-images-idx3-ubyte.gz"
    if how == "wrong magic":
        write_split(
            tmp_path, "train", np.zeros((20, 28, 28)), np.zeros(20), image_magic=0x0803 + 0x1000
        )
        return images, "bad magic"
    if how == "truncated":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[: len(raw) // 2]))
        return images, "truncated"
    if how == "label out of range":
        write_split(tmp_path, "train", np.zeros((20, 28, 28)), np.full(20, 12))
        return labels, "label 12 out of range"
    if how == "count mismatch":
        write_split(tmp_path, "train", np.zeros((20, 28, 28)), np.zeros(19))
        return labels, "19 labels for 20 images"
    if how == "corrupt gzip":
        images.write_bytes(images.read_bytes()[:40])
        return images, "corrupt gzip"
    if how == "missing":
        labels.unlink()
        return tmp_path / "train-labels-idx1-ubyte", "file not found"
    if how == "labels as images":
        raw = idx_bytes(np.zeros(20))
        images.write_bytes(gzip.compress(raw))
        return images, "expected 0x00000803"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "wrong magic",
        "truncated",
        "label out of range",
        "count mismatch",
        "corrupt gzip",
        "missing",
        "labels as images",
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, how, no_standard_dirs):
    path, message = corrupt(tmp_path, how)
    with pytest.raises(DatasetError) as err:
        data.load_classification(data_dir=tmp_path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_explicit_directory_that_does_not_exist_is_an_error(tmp_path, no_standard_dirs):
    with pytest.raises(DatasetError, match="does not exist"):
        data.load_classification(data_dir=tmp_path / "nope")


def test_digits_fallback_when_no_files(no_standard_dirs, capsys):
    ds = data.load_classification()
    assert ds.name == "digits-28x28"
    assert ds.x_train.shape[1:] == (28, 28) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert "using scikit-learn digits" in capsys.readouterr().err


def test_unknown_dataset_name(no_standard_dirs):
    with pytest.raises(DatasetError, match="unknown dataset"):
        data.load_classification("cifar")


def test_standardize_uses_training_statistics_only():
    ds = data.Dataset(
        "t",
        "t",
        np.full((4, 28, 28), 10, np.uint8),
        np.zeros(4),
        np.full((2, 28, 28), 20, np.uint8),
        np.zeros(2),
    )
    ds.x_train[0, 0, 0] = 30  # give the training split a nonzero std
    out = data.standardize(ds, (28, 28, 1))
    assert out.x_train.shape == (4, 28, 28, 1) and out.x_train.dtype == np.float32
    assert abs(out.x_train.mean()) < 1e-5
    assert out.x_test.mean() > 1.0  # scaled with the training mean, not its own


def test_epoch_order_is_deterministic_and_differs_between_epochs():
    a, b = data.epoch_order(100, 0, 0), data.epoch_order(100, 0, 0)
    assert (a == b).all() and not (a == data.epoch_order(100, 0, 1)).all()
    assert sorted(a) == list(range(100))
