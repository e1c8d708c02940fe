"""Datasets for the suite: an IDX reader for (Fashion-)MNIST, the digits fallback, and the
synthetic linear-regression set. NumPy only: no TensorFlow import here.

Where the IDX files are looked for, in order:
1. an explicit ``data_dir`` argument;
2. the ``LOOPBENCH_DATA_DIR`` environment variable;
3. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` package);
4. Keras's download cache, ``~/.keras/datasets/<name>/``.

A directory that is named explicitly (1 or 2) but lacks the files is an error; the
standard places (3, 4) are simply skipped. When none has the files, scikit-learn's bundled
8x8 digits are upsampled to 28x28 and used instead, with a one-line notice.

A task with several inputs (``Task.input_shape`` a dict or list of shapes) has its inputs
``x`` as a dict or a tuple of arrays, one per input, each with the examples along its first
axis; ``map_inputs``, ``take`` and ``n_examples`` work on either kind of ``x``, and on one
array exactly as NumPy indexing does.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENV_DATA_DIR = "LOOPBENCH_DATA_DIR"
ENV_DATASET = "LOOPBENCH_DATASET"
SYSTEM_DIR = Path("/usr/share/datasets")
KERAS_CACHE = Path.home() / ".keras" / "datasets"
KNOWN = ("fashion-mnist", "mnist")

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetError(ValueError):
    """A dataset file is missing, truncated or not what it claims to be."""


# --- inputs: one array, or a dict / tuple of arrays (a task with several inputs) ------------

Inputs = Any  # np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...] (or tensors)


def several(x: Inputs) -> bool:
    """Whether ``x`` is several inputs (a dict, tuple or list of them), not one array."""
    return isinstance(x, dict | tuple | list)


def map_inputs(fn, *xs: Inputs) -> Inputs:
    """``fn`` applied to each input (to the same input of each of ``xs``, which share one
    structure), in the structure of the first: a dict stays a dict, a tuple or list becomes a
    tuple (what ``tf.data`` takes for a structure); one array: ``fn(*xs)``. One level: the
    inputs themselves are arrays (or tensors), whatever ``fn`` returns for them."""
    first = xs[0]
    if isinstance(first, dict):
        return {k: fn(*(x[k] for x in xs)) for k in first}
    if isinstance(first, tuple | list):
        return tuple(fn(*parts) for parts in zip(*xs, strict=True))
    return fn(*xs)


def input_list(x: Inputs) -> list:
    """The inputs of ``x`` in order (a dict's in its key order); one array: ``[x]``."""
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, tuple | list) else [x]


def n_examples(x: Inputs) -> int:
    """How many examples ``x`` holds (the first input's first dimension)."""
    return len(x) if not several(x) else len(input_list(x)[0])


def take(x: Inputs, index) -> Inputs:
    """``x[index]`` of every input (a slice, or an array of example indices)."""
    if not several(x):
        return x[index]
    return map_inputs(lambda a: a[index], x)


@dataclass(frozen=True)
class Dataset:
    name: str  # "fashion-mnist", "mnist", "digits-28x28" or "synthetic-linear"
    source: str  # directory the files came from, or a description
    x_train: Inputs  # one array, or a dict / tuple of arrays (several inputs)
    y_train: np.ndarray
    x_test: Inputs
    y_test: np.ndarray

    def subset(self, n_train: int | None, n_test: int | None = None) -> Dataset:
        """The first ``n`` examples of each split (the seed itself trains on 10,000)."""
        return Dataset(
            self.name,
            self.source,
            take(self.x_train, slice(None, n_train)),
            self.y_train[:n_train],
            take(self.x_test, slice(None, n_test)),
            self.y_test[:n_test],
        )


# --- IDX files -------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e})") from None
    return raw


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) of unsigned bytes, validating its header."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: truncated: {len(raw)} bytes, no IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise DatasetError(f"{path}: bad magic number 0x{magic:08x}: not an unsigned-byte IDX file")
    if expect_magic is not None and magic != expect_magic:
        raise DatasetError(
            f"{path}: magic number 0x{magic:08x}, expected 0x{expect_magic:08x} "
            f"({expect_magic & 0xFF} dimensions)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated: header needs {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing data"
        raise DatasetError(
            f"{path}: {what}: header says dimensions {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_split(directory: Path, split: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = SPLITS[split]
    images_path = _find_file(directory, images_stem)
    labels_path = _find_file(directory, labels_stem)
    for stem, p in ((images_stem, images_path), (labels_stem, labels_path)):
        if p is None:
            raise DatasetError(f"{directory / stem}[.gz]: file not found")
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DatasetError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    if len(labels) and labels.max() >= num_classes:
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    return images, labels


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """(directory, explicit) pairs in search order."""
    out: list[tuple[Path, bool]] = []
    if data_dir is not None:
        out.append((Path(data_dir), True))
    elif os.environ.get(ENV_DATA_DIR):
        out.append((Path(os.environ[ENV_DATA_DIR]), True))
    out += [(SYSTEM_DIR / name, False), (KERAS_CACHE / name, False)]
    return out


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset | None:
    """The named IDX dataset from the first place that has it, or None if none does."""
    for directory, explicit in candidate_dirs(name, data_dir):
        if not explicit and _find_file(directory, SPLITS["train"][0]) is None:
            continue
        if explicit and not directory.is_dir():
            raise DatasetError(f"{directory}: dataset directory does not exist")
        x_train, y_train = read_split(directory, "train")
        x_test, y_test = read_split(directory, "test")
        return Dataset(name, str(directory), x_train, y_train, x_test, y_test)
    return None


# --- fallback and synthetic data -------------------------------------------------------


def load_digits_28() -> Dataset:
    """scikit-learn's bundled 8x8 digits, upsampled to 28x28 uint8 images."""
    from scipy.ndimage import zoom  # lazy: heavy; only without the IDX files
    from sklearn.datasets import load_digits  # lazy: heavy; only without the IDX files
    from sklearn.model_selection import train_test_split  # lazy: as above

    digits = load_digits()
    small = digits.images.astype(np.float32) * (255.0 / 16.0)
    big = zoom(small, (1, 3.5, 3.5), order=1)
    images = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=297, random_state=0, stratify=labels
    )
    return Dataset("digits-28x28", "sklearn.datasets.load_digits", x_tr, y_tr, x_te, y_te)


_read: dict = {}  # (name, the places looked in) -> Dataset: each read once per process


def load_classification(
    name: str | None = None, data_dir: str | os.PathLike | None = None, quiet: bool = False
) -> Dataset:
    """Fashion-MNIST (or ``LOOPBENCH_DATASET=mnist``), else the digits fallback; read and
    decompressed once per process, whatever tasks and subsets ask for it."""
    name = name or os.environ.get(ENV_DATASET) or "fashion-mnist"
    if name not in KNOWN:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")
    key = (name, *(str(d) for d, _ in candidate_dirs(name, data_dir)))
    if key not in _read:
        _read[key] = _load_classification(name, data_dir, quiet)
    return _read[key]


def _load_classification(name: str, data_dir, quiet: bool) -> Dataset:
    ds = load_idx_dataset(name, data_dir)
    if ds is None:
        ds = load_digits_28()
        if not quiet:
            print(
                f"loopbench: {name} not found (looked in {SYSTEM_DIR / name}, "
                f"{KERAS_CACHE / name}, ${ENV_DATA_DIR}); using scikit-learn digits "
                "upsampled to 28x28",
                file=sys.stderr,
            )
    return ds


def synthetic_linear(
    w: float, b: float, n_train: int = 4096, n_test: int = 1024, noise: float = 0.1, seed: int = 0
) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n_train + n_test, 1)).astype(np.float32)
    y = (w * x + b + noise * rng.standard_normal(x.shape)).astype(np.float32)
    return Dataset(
        "synthetic-linear",
        f"y={w}*x+{b}+N(0,{noise}^2)",
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
    )


# --- preparation shared by every implementation ----------------------------------------


def standardize(ds: Dataset, input_shape: tuple[int, ...]) -> Dataset:
    """Pixels as float32, scaled by one mean/std fitted on the training split (the seed's
    StandardScaler over all pixels), reshaped to the task's input shape."""
    from sklearn.preprocessing import StandardScaler  # lazy: heavy; data.py is NumPy only

    scaler = StandardScaler().fit(ds.x_train.reshape(-1, 1).astype(np.float64))

    def apply(x: np.ndarray) -> np.ndarray:
        flat = scaler.transform(x.reshape(-1, 1).astype(np.float64)).astype(np.float32)
        return flat.reshape((len(x), *input_shape))

    return Dataset(
        ds.name,
        ds.source,
        apply(ds.x_train),
        ds.y_train.astype(np.int32),
        apply(ds.x_test),
        ds.y_test.astype(np.int32),
    )


# --- data sources: a task's ``data=`` that loads itself -----------------------------------


class DataSource:
    """A task's ``data=`` that loads itself: a subclass's ``load(task, n_train, data_dir,
    quiet)`` returns the ``Dataset``, its training split cut to ``n_train`` examples."""

    def load(self, task, n_train: int | None = None, data_dir=None, quiet: bool = False):
        raise NotImplementedError


@dataclass(frozen=True)
class ImageData(DataSource):
    """The 28x28 image classification set (Fashion-MNIST; ``LOOPBENCH_DATASET=mnist``: MNIST;
    no files: scikit-learn's digits), standardised (``standardize``) into the task's input
    shape. The built-in ``mlp`` and ``cnn`` read it; any task may (``data=ImageData()``)."""

    def load(self, task, n_train: int | None = None, data_dir=None, quiet: bool = False):
        ds = load_classification(None, data_dir, quiet=quiet)
        return standardize(ds.subset(n_train), task.input_shape)


@dataclass(frozen=True)
class LinearData(DataSource):
    """``y = w*x + b + noise``, x uniform in [-1, 1]: the built-in ``linreg``'s data."""

    w: float
    b: float
    noise: float = 0.1

    def load(self, task, n_train: int | None = None, data_dir=None, quiet: bool = False):
        return synthetic_linear(self.w, self.b, noise=self.noise, seed=task.seed).subset(n_train)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the training set for one epoch; every implementation uses it."""
    return np.random.default_rng((seed, epoch)).permutation(n)
