"""``--download``: fetch a dataset's missing IDX files, check each one's published SHA-256, write all or none.

Each file streams to a hidden ``.<file>.gz.<pid>.part`` next to its target while its SHA-256 is
computed; only when every file has arrived and matched are they renamed into place. A checksum
mismatch, a dropped connection or Ctrl-C removes the partial files (and any folder the download
created), so a later run never finds half a dataset. This is the only network access in dropkit.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from dropkit.experiments.sources import SOURCES, Source, find_files

__all__ = ["DownloadError", "download"]

CHUNK = 1 << 16  # bytes per read
TIMEOUT = 30.0  # seconds without data before a download counts as failed


class DownloadError(OSError):
    """A download failed or did not match its checksum; nothing was written."""


def _fetch(url: str, file: str, target, *, timeout: float, progress: bool | None) -> str:
    """Stream ``url`` into the open binary file ``target``; return the SHA-256 of what arrived."""
    from tqdm import tqdm  # a train extra, imported only when a download runs

    hasher = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "dropkit"})
    with (
        urllib.request.urlopen(request, timeout=timeout) as response,
        tqdm(
            total=response.length,
            unit="B",
            unit_scale=True,
            desc=f"{file}.gz",
            leave=False,
            disable=None if progress is None else not progress,
        ) as bar,
    ):
        while chunk := response.read(CHUNK):
            hasher.update(chunk)
            target.write(chunk)
            bar.update(len(chunk))
    return hasher.hexdigest()


def download(
    name: str,
    directory: str | Path,
    *,
    progress: bool | None = None,
    timeout: float = TIMEOUT,
    source: Source | None = None,
) -> list[Path]:
    """Download the IDX files of ``name`` that ``directory`` lacks; return the paths written.

    Files already there are left alone (loading checks them). ``source`` defaults to
    ``SOURCES[name]``; ``progress`` shows a bar per file on stderr (``None``: on a terminal only).

    Raises ``DownloadError`` (an ``OSError``) naming the address and the reason, after removing
    every partial file; ``KeyboardInterrupt`` passes through after the same clean-up.
    """
    source = SOURCES[name] if source is None else source
    directory = Path(directory)
    _, missing = find_files(directory)
    if not missing:
        return []
    created = []
    parent = directory
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    staged: list[tuple[Path, Path]] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for file in missing:
            url = source.url_of(file)
            part = directory / f".{file}.gz.{os.getpid()}.part"
            staged.append((part, directory / f"{file}.gz"))
            try:
                with open(part, "wb") as handle:
                    digest = _fetch(url, file, handle, timeout=timeout, progress=progress)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, "reason", None) or error
                raise DownloadError(f"cannot download {url}: {reason}; nothing written") from None
            if digest != source.gz_sha256[file]:
                raise DownloadError(
                    f"{url} has SHA-256 {digest}, not the published {source.gz_sha256[file]}; nothing written"
                )
    except BaseException:
        for part, _ in staged:
            with contextlib.suppress(OSError):
                part.unlink()
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for part, target in staged:
        os.replace(part, target)
    return [target for _, target in staged]
