"""Datasets for ``dropkit train``: scikit-learn's bundled digits, and (Fashion-)MNIST from IDX files.

Every loader returns images scaled to [0, 1] as float32 ``(N, H, W)`` and integer labels ``(N,)``.
Nothing is downloaded: digits ships with scikit-learn, and the IDX files are read from a directory
the user fills (the error message says from where).
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DIGITS_TRAIN_SIZE",
    "IDX_FILES",
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "read_idx",
]

DATASETS = ("digits", "fashion-mnist", "mnist")
# A small training split is what makes overfitting visible on 1,797 images; the rest validates.
DIGITS_TRAIN_SIZE = 150
# Standard file names; each may also be gzipped (name + ".gz").
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_SOURCES = {
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist#get-the-data",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of yann.lecun.com/exdb/mnist)",
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/, "the IDX file format"); data is big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Dataset:
    """A train/validation split: ``x_*`` float32 ``(N, H, W)`` in [0, 1], ``y_*`` int64 ``(N,)``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    val_source: str  # where the validation images come from, for reports

    def describe(self) -> dict[str, object]:
        """Name, image shape, class count, split sizes and validation source, JSON-ready (no pixels)."""
        return {
            "dataset": self.name,
            "image_shape": list(self.x_train.shape[1:]),
            "classes": self.classes,
            "train_size": len(self.y_train),
            "val_size": len(self.y_val),
            "val_source": self.val_source,
        }


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or gzipped (detected from its first bytes), as a native-endian array.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions ``d``, ``d`` big-endian uint32 sizes, then the data,
    big-endian, row-major. MNIST's images start ``00 00 08 03``, its labels ``00 00 08 01``.

    Raises ``ValueError`` naming the file for a wrong magic number or a size that does not match.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        magic = data[:4].hex() or "empty"
        raise ValueError(
            f"{path}: not an IDX file (magic number 0x{magic}; an IDX file starts with 00 00, a type "
            f"code in 08 09 0b 0c 0d 0e and the number of dimensions, e.g. 0x00000803 for images)"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape}, which needs {expected} bytes; file has {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image), got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(
            f"{labels_path}: expected non-negative integer class labels, got {labels.dtype} values"
        )
    return (images / np.float32(255)).astype(np.float32), labels.astype(np.int64)


def load_idx_dataset(name: str, data_dir: str | Path) -> Dataset:
    """(Fashion-)MNIST from the four standard IDX files in ``data_dir``; t10k is the validation set.

    Raises ``FileNotFoundError`` with one message naming every expected file and where to get them.
    """
    data_dir = Path(data_dir)
    found = {file: _find_idx(data_dir, file) for file in IDX_FILES}
    missing = [file for file, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"dataset {name!r} needs {', '.join(f + '[.gz]' for f in IDX_FILES)} in {data_dir}; "
            f"missing: {', '.join(missing)}; get them from {IDX_SOURCES.get(name, 'the dataset authors')}"
        )
    paths = [found[file] for file in IDX_FILES]
    x_train, y_train = _images_and_labels(paths[0], paths[1])
    x_val, y_val = _images_and_labels(paths[2], paths[3])
    if x_train.shape[1:] != x_val.shape[1:]:
        raise ValueError(
            f"{data_dir}: train images are {x_train.shape[1:]} but t10k images are {x_val.shape[1:]}"
        )
    classes = int(max(y_train.max(initial=0), y_val.max(initial=0))) + 1
    return Dataset(name, x_train, y_train, x_val, y_val, classes, "t10k (test) files")


def _digits_pixels_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797, 8, 8) pixels 0..16 and labels, read from the file it ships.

    Importing ``sklearn.datasets`` costs seconds (it pulls in SciPy); reading ``digits.csv.gz``
    (64 pixels and the label per row) from the installed package takes milliseconds.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    for location in locations:
        path = Path(location, "datasets", "data", "digits.csv.gz")
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits  # a layout we do not know: ask sklearn

    bunch = sklearn_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits(seed: int, train_size: int = DIGITS_TRAIN_SIZE) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixels 0..16 scaled to [0, 1], split at random by ``seed``.

    The first ``train_size`` images of a seeded permutation train; the rest validate.
    """
    pixels, labels = _digits_pixels_and_labels()
    images = (pixels / 16.0).astype(np.float32)
    if not 0 < train_size < len(labels):
        raise ValueError(f"train_size must be in [1, {len(labels) - 1}], got {train_size}")
    order = np.random.default_rng(seed).permutation(len(labels))
    train, val = order[:train_size], order[train_size:]
    return Dataset("digits", images[train], labels[train], images[val], labels[val], 10, "random split")


def load_dataset(name: str, *, seed: int, data_dir: str | Path | None = None) -> Dataset:
    """Load ``name`` (one of ``DATASETS``); ``seed`` splits digits, ``data_dir`` holds IDX files
    (default ``data/<name>``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits(seed)
    return load_idx_dataset(name, Path("data", name) if data_dir is None else data_dir)
