"""Tiny IDX datasets the tests write themselves: the four (Fashion-)MNIST files, and their checksums."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from dropkit.experiments.sources import IDX_FILES, Source

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: 00 00, type code, ndim, big-endian sizes, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def tiny_arrays(pool: int = 40, test: int = 20, side: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Images and labels for the four files: ``pool`` training images, ``test`` test images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(pool + test, dtype=np.uint8) % 10
    images = rng.integers(0, 256, size=(pool + test, side, side), dtype=np.uint8)
    return [images[:pool], labels[:pool], images[pool:], labels[pool:]]


def gz_contents(arrays: list[np.ndarray] | None = None) -> dict[str, bytes]:
    """The four files' gzipped bytes (mtime 0, so the same arrays give the same bytes)."""
    arrays = tiny_arrays() if arrays is None else arrays
    return {
        name: gzip.compress(idx_bytes(array), mtime=0) for name, array in zip(IDX_FILES, arrays, strict=True)
    }


def write_idx_dir(directory: Path, *, compress: bool = True, arrays: list[np.ndarray] | None = None) -> Path:
    """Write the four files into ``directory`` (created), gzipped or raw; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in gz_contents(arrays).items():
        if compress:
            (directory / f"{name}.gz").write_bytes(content)
        else:
            (directory / name).write_bytes(gzip.decompress(content))
    return directory


def source_for(url: str, contents: dict[str, bytes]) -> Source:
    """A ``Source`` serving ``contents`` (file name -> .gz bytes) from ``url``, with their true checksums."""
    return Source(
        url,
        {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()},
        {name: hashlib.sha256(gzip.decompress(data)).hexdigest() for name, data in contents.items()},
        "FashionMNIST",
        "fashion-mnist",
        "dataset-fashion-mnist",
    )
