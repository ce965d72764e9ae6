"""Datasets for ``dropkit train``: scikit-learn's bundled digits, and (Fashion-)MNIST from IDX files.

Every loader returns a :class:`Dataset`: a *pool* of training images and a fixed *test* set, pixels
scaled to [0, 1] as float32 ``(N, H, W)``, integer labels ``(N,)``. :meth:`Dataset.split` then
draws, with a seed, the validation images out of the pool and the training images out of the rest,
so the test set is never looked at before the end.

Where (Fashion-)MNIST files are found and how they are downloaded and checked:
:mod:`~dropkit.experiments.sources`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropkit.experiments.sources import IDX_FILES, SOURCES, cache_dir, locate

__all__ = [
    "DATASETS",
    "DIGITS_TEST_SIZE",
    "IMAGE_FEATURES",
    "Dataset",
    "Splits",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "read_idx",
]

DATASETS = ("digits", "fashion-mnist", "mnist")
IMAGE_FEATURES = {"digits": 64, "fashion-mnist": 784, "mnist": 784}  # pixels per image, for size checks
# Digits has no official test split: a fixed third of it (the same for every seed) is the test set.
DIGITS_TEST_SIZE = 597
_DIGITS_TEST_SEED = 2014
# IDX type codes (http://yann.lecun.com/exdb/mnist/, "the IDX file format"); data is big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Splits:
    """One seed's train / validation split of the pool, plus the fixed test set (float32, int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A pool of training images and a test set: ``x_*`` float32 ``(N, H, W)`` in [0, 1], ``y_*`` int64.

    ``source`` says where the images came from; ``verified`` whether every file matched the
    published SHA-256 (None where no checksum is published, as for digits).
    """

    name: str
    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    source: str
    test_source: str
    verified: bool | None = None

    def split(self, seed: int, *, val_size: int, train_size: int) -> Splits:
        """A seeded permutation of the pool: its first ``val_size`` images validate, the next
        ``train_size`` train (so a smaller ``train_size`` is a subset of a larger one)."""
        pool = len(self.y_pool)
        if not (0 < val_size < pool and 0 < train_size <= pool - val_size):
            raise ValueError(
                f"val_size + train_size must fit in the pool of {pool} images, got {val_size} + {train_size}"
            )
        order = np.random.default_rng(seed).permutation(pool)
        val, train = np.sort(order[:val_size]), order[val_size : val_size + train_size]
        x, y = self.x_pool, self.y_pool
        return Splits(x[train], y[train], x[val], y[val], self.x_test, self.y_test)

    def describe(self) -> dict[str, object]:
        """Name, image shape, classes, pool and test sizes and where they came from (no pixels)."""
        return {
            "dataset": self.name,
            "image_shape": list(self.x_pool.shape[1:]),
            "classes": self.classes,
            "pool_size": len(self.y_pool),
            "test_size": len(self.y_test),
            "source": self.source,
            "test_source": self.test_source,
            "sha256_verified": self.verified,
        }


def _decode(path: Path, data: bytes) -> bytes:
    """The IDX bytes of a file's content, gunzipped if it starts with gzip's magic number."""
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a valid gzip file ({error})") from None


def _parse_idx(path: Path, data: bytes) -> np.ndarray:
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


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or gzipped (detected from its first bytes), as a native-endian array.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions ``d``, ``d`` big-endian uint32 sizes, then the data,
    big-endian, row-major. MNIST's images start ``00 00 08 03``, its labels ``00 00 08 01``.

    Raises ``ValueError`` naming the file for a wrong magic number or a size that does not match.
    """
    path = Path(path)
    return _parse_idx(path, _decode(path, path.read_bytes()))


def _images_and_labels(images: tuple[Path, np.ndarray], labels: tuple[Path, np.ndarray]):
    (images_path, pixels), (labels_path, classes) = images, labels
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {pixels.dtype} {pixels.shape}"
        )
    if classes.ndim != 1 or classes.shape[0] != pixels.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {pixels.shape[0]} labels (one per image), got shape {classes.shape}"
        )
    if not np.issubdtype(classes.dtype, np.integer) or (classes.size and classes.min() < 0):
        raise ValueError(
            f"{labels_path}: expected non-negative integer class labels, got {classes.dtype} values"
        )
    return (pixels / np.float32(255)).astype(np.float32), classes.astype(np.int64)


def load_idx_dataset(name: str, paths: dict[str, Path]) -> Dataset:
    """(Fashion-)MNIST from its four IDX files (``paths`` maps each name of ``IDX_FILES`` to a file):
    the 60,000 train images are the pool, the 10,000 t10k images the test set.

    Each file is checked against the published SHA-256 of the download, or, where the file was
    recompressed (Debian's copies are), of its decompressed content; ``Dataset.verified`` says
    whether all four matched.
    """
    source = SOURCES.get(name)
    arrays, verified = {}, source is not None
    for file in IDX_FILES:
        path = paths[file]
        content = path.read_bytes()
        data = _decode(path, content)
        if source is not None:
            verified &= source.matches(file, content, data, hashlib.sha256)
        arrays[file] = (path, _parse_idx(path, data))
    x_pool, y_pool = _images_and_labels(arrays[IDX_FILES[0]], arrays[IDX_FILES[1]])
    x_test, y_test = _images_and_labels(arrays[IDX_FILES[2]], arrays[IDX_FILES[3]])
    directory = paths[IDX_FILES[0]].parent
    if x_pool.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{directory}: train images are {x_pool.shape[1:]} but t10k images are {x_test.shape[1:]}"
        )
    classes = int(max(y_pool.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(
        name,
        x_pool,
        y_pool,
        x_test,
        y_test,
        classes,
        str(directory),
        "t10k files",
        verified if source is not None else None,
    )


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


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, pixels 0..16 scaled to [0, 1]: a fixed random 597 of them
    (``default_rng(2014)``, the same for every seed) are the test set, the other 1,200 the pool."""
    pixels, labels = _digits_pixels_and_labels()
    images = (pixels / 16.0).astype(np.float32)
    order = np.random.default_rng(_DIGITS_TEST_SEED).permutation(len(labels))
    test, pool = np.sort(order[:DIGITS_TEST_SIZE]), np.sort(order[DIGITS_TEST_SIZE:])
    return Dataset(
        "digits",
        images[pool],
        labels[pool],
        images[test],
        labels[test],
        10,
        "scikit-learn's digits",
        f"a fixed {DIGITS_TEST_SIZE} of the 1797 digits",
    )


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = False, progress: bool | None = None
) -> tuple[Dataset, list[Path]]:
    """Load ``name`` (one of ``DATASETS``) and return it with the files downloaded for it (often none).

    (Fashion-)MNIST is read from ``data_dir``, else from the first folder of the search order
    (:mod:`~dropkit.experiments.sources`). With ``download``, files not found are fetched first: into
    ``data_dir`` if given, else into dropkit's cache.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits(), []
    written: list[Path] = []
    if download:
        from dropkit.experiments.download import download as fetch

        if data_dir is not None:
            written = fetch(name, data_dir, progress=progress)
        else:
            try:
                locate(name)
            except FileNotFoundError:
                written = fetch(name, cache_dir(name), progress=progress)
                data_dir = cache_dir(name)
    return load_idx_dataset(name, locate(name, data_dir)), written
