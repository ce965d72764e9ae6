"""Where ``dropkit train`` finds (Fashion-)MNIST, and the checksums it trusts.

Without ``--data-dir``, the first folder of this list that holds all four IDX files (raw or
``.gz``) wins; :func:`search_dirs` builds it:

1. ``$DROPKIT_DATA/<name>``
2. dropkit's cache, ``$XDG_CACHE_HOME/dropkit/<name>`` (default ``~/.cache/dropkit/<name>``):
   where ``--download`` writes
3. Debian's ``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``)
4. torchvision's ``<root>/FashionMNIST/raw`` (``<root>/MNIST/raw``) for ``<root>`` = ``./data``
   (the PyTorch tutorials' ``root="data"``) and ``~/data``
5. Keras's ``~/.keras/datasets/fashion-mnist`` (Fashion-MNIST only: Keras keeps MNIST as one .npz)

The published SHA-256 of each download is checked; where a copy was recompressed (Debian's are),
the SHA-256 of its decompressed content is checked instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEBIAN_ROOT",
    "IDX_FILES",
    "SOURCES",
    "Source",
    "cache_dir",
    "find_files",
    "locate",
    "search_dirs",
    "ways_to_get",
]

# Standard file names; each may also be gzipped (name + ".gz").
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_ROOT = Path("/usr/share/datasets")


@dataclass(frozen=True)
class Source:
    """Where a dataset is published, and the SHA-256 of its files as downloaded and decompressed."""

    url: str  # the folder serving the four .gz files
    gz_sha256: Mapping[str, str]
    raw_sha256: Mapping[str, str]
    torchvision_folder: str
    keras_folder: str | None
    apt_package: str | None

    def url_of(self, file: str) -> str:
        """The download address of ``file`` (one of ``IDX_FILES``)."""
        return f"{self.url}{file}.gz"

    def matches(self, file: str, content: bytes, data: bytes, sha256=hashlib.sha256) -> bool:
        """Whether a file whose bytes are ``content`` (decompressed: ``data``) is the published one."""
        if content is not data and sha256(content).hexdigest() == self.gz_sha256[file]:
            return True
        return sha256(data).hexdigest() == self.raw_sha256[file]


SOURCES: dict[str, Source] = {
    # Zalando's links (github.com/zalandoresearch/fashion-mnist#get-the-data).
    "fashion-mnist": Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        "FashionMNIST",
        "fashion-mnist",
        "dataset-fashion-mnist",
    ),
    # torchvision's first mirror of yann.lecun.com/exdb/mnist, the same bytes.
    "mnist": Source(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        "MNIST",
        None,
        None,
    ),
}


def cache_dir(name: str, *, environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """dropkit's cache for ``name``: ``$XDG_CACHE_HOME/dropkit/<name>``, else ``~/.cache/dropkit/<name>``.

    >>> str(cache_dir("mnist", environ={}, home=Path("/home/ada")))
    '/home/ada/.cache/dropkit/mnist'
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    base = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else home / ".cache"
    return base / "dropkit" / name


def search_dirs(
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    cwd: Path | None = None,
    debian_root: Path | None = None,
) -> list[Path]:
    """The folders searched for ``name``, in order (see the module's docstring).

    >>> [str(p) for p in search_dirs("mnist", environ={}, home=Path("/h"), cwd=Path("/w"))]
    ['/h/.cache/dropkit/mnist', '/usr/share/datasets/mnist', '/w/data/MNIST/raw', '/h/data/MNIST/raw']
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    cwd = Path.cwd() if cwd is None else cwd
    debian_root = DEBIAN_ROOT if debian_root is None else debian_root
    source = SOURCES[name]
    dirs = [Path(environ["DROPKIT_DATA"]) / name] if environ.get("DROPKIT_DATA") else []
    dirs += [cache_dir(name, environ=environ, home=home), debian_root / name]
    dirs += [root / source.torchvision_folder / "raw" for root in (cwd / "data", home / "data")]
    if source.keras_folder is not None:
        dirs.append(home / ".keras" / "datasets" / source.keras_folder)
    return dirs


def find_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files present in ``directory`` (raw preferred over ``.gz``) and the names missing."""
    found, missing = {}, []
    for file in IDX_FILES:
        for candidate in (directory / file, directory / f"{file}.gz"):
            if candidate.is_file():
                found[file] = candidate
                break
        else:
            missing.append(file)
    return found, missing


def ways_to_get(name: str) -> str:
    """How to get ``name``'s files, for error messages: the apt package, ``--download``, ``--data-dir``."""
    source = SOURCES[name]
    apt = f"`sudo apt-get install {source.apt_package}` (Debian, Ubuntu), or " if source.apt_package else ""
    return (
        f"get it with {apt}`--download` (from {source.url}, SHA-256 checked, into {cache_dir(name)}), "
        f"or `--data-dir DIR` with {', '.join(f + '[.gz]' for f in IDX_FILES)}"
    )


def locate(
    name: str, data_dir: str | Path | None = None, *, dirs: list[Path] | None = None
) -> dict[str, Path]:
    """The four IDX files of ``name``: in ``data_dir`` if given, else in the first complete folder of
    ``dirs`` (default :func:`search_dirs`).

    Raises ``FileNotFoundError`` with one line naming what is missing where, and how to get it.
    """
    if data_dir is not None:
        found, missing = find_files(Path(data_dir))
        if missing:
            raise FileNotFoundError(
                f"dataset {name!r}: {data_dir} lacks {', '.join(m + '[.gz]' for m in missing)}; "
                f"{ways_to_get(name)}"
            )
        return found
    dirs = search_dirs(name) if dirs is None else dirs
    for directory in dirs:
        found, missing = find_files(directory)
        if not missing:
            return found
    unset = "" if os.environ.get("DROPKIT_DATA") else " ($DROPKIT_DATA is not set)"
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"dataset {name!r} not found in {looked}{unset}; {ways_to_get(name)}")
