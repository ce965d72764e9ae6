"""``--download`` against a loopback HTTP server serving small files the test makes: nothing leaves
the machine.

Checked: the four files arrive, verified, under their names; a checksum mismatch, a dropped
connection, a missing file (404) and Ctrl-C each leave nothing behind, not even the folder.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from dropkit.experiments import sources
from dropkit.experiments.datasets import load_dataset
from dropkit.experiments.download import DownloadError, download
from dropkit.experiments.sources import IDX_FILES, SOURCES
from idx_helpers import gz_contents, source_for


@contextmanager
def serve(files: dict[str, bytes], *, behaviour: str = "complete") -> Iterator[tuple[str, list[str]]]:
    """Serve ``files`` (URL path -> body) on 127.0.0.1; yields the base URL and the paths requested.

    ``behaviour``: ``complete``; ``truncate`` (announce the full length, send half, close);
    ``interrupt`` (send half, then deliver SIGINT to this process, as Ctrl-C would).
    """
    requested: list[str] = []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if behaviour == "complete":
                self.wfile.write(body)
                return
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if behaviour == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
                release.wait(5)  # keep the connection open: the client is stopped by the signal alone
            self.close_connection = True

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def published(contents: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{name}.gz": data for name, data in contents.items()}


def test_download_fetches_verifies_and_writes_the_four_files(tmp_path):
    contents = gz_contents()
    target = tmp_path / "cache" / "fashion-mnist"
    with serve(published(contents)) as (url, requested):
        written = download("fashion-mnist", target, progress=False, source=source_for(url, contents))
    assert requested == [f"/{name}.gz" for name in IDX_FILES]
    assert written == [target / f"{name}.gz" for name in IDX_FILES]
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in IDX_FILES)
    for name in IDX_FILES:
        assert (target / f"{name}.gz").read_bytes() == contents[name]
    with serve({}) as (url, requested):  # everything is there: nothing is fetched again
        assert download("fashion-mnist", target, progress=False, source=source_for(url, contents)) == []
    assert requested == []


def test_only_missing_files_are_fetched(tmp_path):
    contents = gz_contents()
    (tmp_path / f"{IDX_FILES[0]}.gz").write_bytes(contents[IDX_FILES[0]])
    with serve(published(contents)) as (url, requested):
        download("fashion-mnist", tmp_path, progress=False, source=source_for(url, contents))
    assert requested == [f"/{name}.gz" for name in IDX_FILES[1:]]


@pytest.mark.parametrize("behaviour", ["mismatch", "truncate", "missing"])
def test_a_failed_download_leaves_nothing_behind(tmp_path, behaviour):
    contents = gz_contents()
    served = published(contents)
    if behaviour == "mismatch":  # the third file is not the published one
        data = served[f"{IDX_FILES[2]}.gz"]
        served[f"{IDX_FILES[2]}.gz"] = data[:20] + bytes([data[20] ^ 1]) + data[21:]
    if behaviour == "missing":
        del served[f"{IDX_FILES[3]}.gz"]
    target = tmp_path / "new" / "fashion-mnist"
    with (
        serve(served, behaviour="truncate" if behaviour == "truncate" else "complete") as (url, _),
        pytest.raises(DownloadError) as error,
    ):
        download("fashion-mnist", target, progress=False, source=source_for(url, contents))
    message = str(error.value)
    assert message.endswith("; nothing written") and "\n" not in message
    if behaviour == "mismatch":
        assert f"{url}{IDX_FILES[2]}.gz has SHA-256 " in message and "not the published" in message
    if behaviour == "missing":
        assert f"cannot download {url}{IDX_FILES[3]}.gz: Not Found" in message
    assert list(tmp_path.iterdir()) == []  # not the files, not the folders it created


def test_ctrl_c_during_a_download_leaves_nothing_behind(tmp_path):
    contents = gz_contents()
    existing = tmp_path / "cache"
    existing.mkdir()
    with (
        serve(published(contents), behaviour="interrupt") as (url, _),
        pytest.raises(KeyboardInterrupt),
    ):
        download("fashion-mnist", existing, progress=False, source=source_for(url, contents))
    assert list(existing.iterdir()) == []  # the folder was there before: it stays, empty


def test_load_dataset_downloads_into_the_cache_only_when_nothing_is_found(tmp_path, monkeypatch):
    contents = gz_contents()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "DEBIAN_ROOT", tmp_path / "debian")
    with serve(published(contents)) as (url, requested):
        monkeypatch.setitem(SOURCES, "fashion-mnist", source_for(url, contents))
        with pytest.raises(FileNotFoundError, match="not found in"):
            load_dataset("fashion-mnist")  # no --download: no network
        assert requested == []
        data, written = load_dataset("fashion-mnist", download=True, progress=False)
        cache = tmp_path / "xdg" / "dropkit" / "fashion-mnist"
        assert written == [cache / f"{name}.gz" for name in IDX_FILES]
        assert data.source == str(cache) and data.verified is True and data.x_pool.shape == (40, 5, 5)
        again, written = load_dataset("fashion-mnist", download=True, progress=False)
        assert written == [] and len(requested) == 4  # found in the cache: nothing downloaded twice
        np.testing.assert_array_equal(again.x_test, data.x_test)
