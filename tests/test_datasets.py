"""dropkit.experiments.datasets and .sources: the IDX reader, checksums, splits, and where data is found."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from dropkit.experiments import sources
from dropkit.experiments.datasets import (
    DIGITS_TEST_SIZE,
    load_dataset,
    load_digits,
    load_idx_dataset,
    read_idx,
)
from dropkit.experiments.sources import IDX_FILES, SOURCES, find_files, locate, search_dirs
from idx_helpers import gz_contents, idx_bytes, source_for, tiny_arrays, write_idx_dir


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-300, 0, 7, 32767], dtype=np.int16),
        np.array([[0.5, -1.25], [1e300, 3.0]]),
    ],
    ids=["uint8-3d", "int16-1d", "float64-2d"],
)
def test_read_idx_round_trips(tmp_path, array, compress):
    data = idx_bytes(array)
    path = tmp_path / ("file.gz" if compress else "file")
    path.write_bytes(gzip.compress(data) if compress else data)
    got = read_idx(path)
    assert got.dtype == array.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_rejects_a_wrong_magic_number(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(16))
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte: not an IDX file \(magic number 0x12340803"
    ):
        read_idx(path)
    path.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(ValueError, match=r"not an IDX file \(magic number 0x504b0304"):
        read_idx(path)


def test_read_idx_rejects_a_size_that_does_not_match_the_header(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"IDX header says shape \(5,\), which needs 13 bytes; file has 12"):
        read_idx(path)


def test_read_idx_rejects_a_broken_gzip(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(50, dtype=np.uint8)))[:-10])
    with pytest.raises(ValueError, match=r"broken.gz: not a valid gzip file"):
        read_idx(path)


def test_idx_dataset_is_a_pool_and_a_test_set_scaled_to_unit_range(tmp_path):
    arrays = tiny_arrays()
    data = load_idx_dataset("mnist", locate("mnist", write_idx_dir(tmp_path, compress=False, arrays=arrays)))
    assert data.x_pool.dtype == np.float32 and data.x_pool.shape == (40, 5, 5)
    np.testing.assert_array_equal(data.x_pool, (arrays[0] / np.float32(255)).astype(np.float32))
    np.testing.assert_array_equal(data.y_pool, arrays[1])
    np.testing.assert_array_equal(data.x_test, (arrays[2] / np.float32(255)).astype(np.float32))
    np.testing.assert_array_equal(data.y_test, arrays[3])
    assert data.classes == 10 and data.source == str(tmp_path)
    assert data.verified is False  # not the published MNIST


def test_checksums_accept_the_published_download_or_its_decompressed_content(monkeypatch, tmp_path):
    contents = gz_contents()
    monkeypatch.setitem(SOURCES, "fashion-mnist", source_for("http://unused/", contents))
    gz_dir = write_idx_dir(tmp_path / "gz")
    assert load_idx_dataset("fashion-mnist", locate("fashion-mnist", gz_dir)).verified is True
    # Recompressed (as Debian ships it): the .gz differs, its content does not.
    recompressed = tmp_path / "recompressed"
    recompressed.mkdir()
    for name, data in contents.items():
        (recompressed / f"{name}.gz").write_bytes(
            gzip.compress(gzip.decompress(data), compresslevel=1, mtime=7)
        )
        assert (recompressed / f"{name}.gz").read_bytes() != data
    assert load_idx_dataset("fashion-mnist", locate("fashion-mnist", recompressed)).verified is True
    raw = write_idx_dir(tmp_path / "raw", compress=False)
    assert load_idx_dataset("fashion-mnist", locate("fashion-mnist", raw)).verified is True
    # One changed pixel is not the published data.
    (raw / IDX_FILES[2]).write_bytes(idx_bytes(tiny_arrays()[2] ^ np.uint8(1)))
    assert load_idx_dataset("fashion-mnist", locate("fashion-mnist", raw)).verified is False


def test_the_published_checksums_are_sha256_of_every_file():
    for source in SOURCES.values():
        for table in (source.gz_sha256, source.raw_sha256):
            assert set(table) == set(IDX_FILES)
            assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in table.values())


@pytest.mark.skipif(
    not (sources.DEBIAN_ROOT / "fashion-mnist").is_dir(), reason="apt-get install dataset-fashion-mnist"
)
def test_debians_fashion_mnist_is_the_published_one():
    data, downloaded = load_dataset("fashion-mnist", data_dir=sources.DEBIAN_ROOT / "fashion-mnist")
    assert downloaded == [] and data.verified is True
    assert data.x_pool.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert np.bincount(data.y_pool).tolist() == [6000] * 10


def where(tmp_path: Path, **environ: str) -> dict[str, object]:
    return {
        "environ": {key: str(value) for key, value in environ.items()},
        "home": tmp_path / "home",
        "cwd": tmp_path / "work",
        "debian_root": tmp_path / "debian",
    }


def test_search_order_is_the_documented_one(tmp_path):
    dirs = search_dirs("fashion-mnist", **where(tmp_path, DROPKIT_DATA=tmp_path / "mine"))
    assert dirs == [
        tmp_path / "mine/fashion-mnist",
        tmp_path / "home/.cache/dropkit/fashion-mnist",
        tmp_path / "debian/fashion-mnist",
        tmp_path / "work/data/FashionMNIST/raw",
        tmp_path / "home/data/FashionMNIST/raw",
        tmp_path / "home/.keras/datasets/fashion-mnist",
    ]
    xdg = search_dirs("mnist", **where(tmp_path, XDG_CACHE_HOME=tmp_path / "xdg"))
    assert xdg == [  # no $DROPKIT_DATA, the XDG cache, no Keras folder for MNIST
        tmp_path / "xdg/dropkit/mnist",
        tmp_path / "debian/mnist",
        tmp_path / "work/data/MNIST/raw",
        tmp_path / "home/data/MNIST/raw",
    ]


def test_the_first_complete_folder_wins(tmp_path):
    dirs = search_dirs("fashion-mnist", **where(tmp_path, DROPKIT_DATA=tmp_path / "mine"))
    keras, torchvision, debian = dirs[5], dirs[3], dirs[2]
    write_idx_dir(keras)
    assert locate("fashion-mnist", dirs=dirs)[IDX_FILES[0]].parent == keras
    write_idx_dir(torchvision, compress=False)  # torchvision keeps the raw files (and the .gz) in raw/
    assert locate("fashion-mnist", dirs=dirs)[IDX_FILES[0]] == torchvision / IDX_FILES[0]
    write_idx_dir(debian)
    (debian / f"{IDX_FILES[3]}.gz").unlink()  # an incomplete folder is passed over
    assert locate("fashion-mnist", dirs=dirs)[IDX_FILES[0]].parent == torchvision
    (debian / f"{IDX_FILES[3]}.gz").write_bytes(b"")
    assert locate("fashion-mnist", dirs=dirs)[IDX_FILES[0]].parent == debian
    write_idx_dir(dirs[0])
    assert locate("fashion-mnist", dirs=dirs)[IDX_FILES[0]].parent == dirs[0]


def test_raw_files_are_preferred_to_gz_in_one_folder(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / IDX_FILES[1]).write_bytes(b"")
    found, missing = find_files(tmp_path)
    assert missing == [] and found[IDX_FILES[1]] == tmp_path / IDX_FILES[1]
    assert found[IDX_FILES[0]] == tmp_path / f"{IDX_FILES[0]}.gz"


def test_not_found_names_every_folder_and_the_three_ways(tmp_path):
    dirs = search_dirs("fashion-mnist", **where(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        locate("fashion-mnist", dirs=dirs)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("dataset 'fashion-mnist' not found in ")
    for directory in dirs:
        assert str(directory) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "`--download` (from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in message
    assert "`--data-dir DIR` with train-images-idx3-ubyte[.gz]" in message
    with pytest.raises(FileNotFoundError) as error:
        locate("mnist", dirs=search_dirs("mnist", **where(tmp_path)))
    assert "; get it with `--download` (from https://ossci-datasets.s3.amazonaws.com/mnist/" in str(
        error.value
    )
    assert "apt-get" not in str(error.value)  # no Debian package ships MNIST


def test_a_given_data_dir_is_the_only_place_looked_at(tmp_path):
    dirs = search_dirs("fashion-mnist", **where(tmp_path))
    write_idx_dir(dirs[1])
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / IDX_FILES[0]).write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        locate("fashion-mnist", tmp_path / "given")
    missing = ", ".join(f"{name}[.gz]" for name in IDX_FILES[1:])
    assert f"given lacks {missing}; get it with" in str(error.value)


def test_idx_labels_must_be_non_negative_integers(tmp_path):
    write_idx_dir(tmp_path, compress=False)
    negative, fractional = np.arange(20, dtype=np.int16) - 1, np.arange(20) / 2
    for labels in (negative, fractional):
        (tmp_path / IDX_FILES[3]).write_bytes(idx_bytes(labels))
        with pytest.raises(ValueError, match="expected non-negative integer class labels"):
            load_idx_dataset("mnist", locate("mnist", tmp_path))


def test_unknown_dataset_is_rejected():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'cifar'; choose one of digits, fashion-mnist, mnist"
    ):
        load_dataset("cifar")


def test_digits_are_sklearns_with_a_fixed_test_set():
    from sklearn.datasets import load_digits as sklearn_digits

    reference = sklearn_digits()
    data = load_digits()
    assert len(data.y_test) == DIGITS_TEST_SIZE and len(data.y_pool) == 1797 - DIGITS_TEST_SIZE
    order = np.random.default_rng(2014).permutation(1797)  # the documented test split
    test, pool = np.sort(order[:DIGITS_TEST_SIZE]), np.sort(order[DIGITS_TEST_SIZE:])
    np.testing.assert_array_equal(data.x_test.reshape(-1, 64), (reference.data[test] / 16).astype(np.float32))
    np.testing.assert_array_equal(data.y_pool, reference.target[pool])


def test_split_draws_validation_then_training_images_from_the_pool_with_the_seed():
    data = load_digits()
    splits = data.split(5, val_size=300, train_size=200)
    order = np.random.default_rng(5).permutation(1200)
    np.testing.assert_array_equal(splits.y_val, data.y_pool[np.sort(order[:300])])
    np.testing.assert_array_equal(splits.y_train, data.y_pool[order[300:500]])
    np.testing.assert_array_equal(splits.x_test, data.x_test)  # the test set is the same for every seed
    smaller = data.split(5, val_size=300, train_size=50)
    np.testing.assert_array_equal(smaller.y_train, splits.y_train[:50])  # nested in the larger one
    np.testing.assert_array_equal(smaller.y_val, splits.y_val)
    assert not np.array_equal(data.split(6, val_size=300, train_size=200).y_val, splits.y_val)
    with pytest.raises(ValueError, match=r"must fit in the pool of 1200 images, got 1000 \+ 201"):
        data.split(5, val_size=1000, train_size=201)
