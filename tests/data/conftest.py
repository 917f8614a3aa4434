"""Fixtures for the data tests: a small CIFAR-10 archive in the official format and a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

OFFICIAL_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEMBERS = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way python 2 did for the CIFAR batches: py2 `str` opcodes, `numpy.core` names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        # Python 3 pickles bytes at protocol 2 as _codecs.encode(...), a global no restricted loader allows.
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    """Pickle `obj` like the python-2 CIFAR-10 files (protocol 2)."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


@dataclass
class FakeCifar:
    """A small CIFAR-10 archive and the arrays written into it."""

    archive: Path
    md5: str
    class_names: list[str]
    train_images: np.ndarray  # (N, 3, 32, 32) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    train_rows: np.ndarray  # (N, 3072) uint8, exactly as stored in the batches
    members: dict[str, bytes] = field(default_factory=dict)  # member name -> pickled bytes

    def write_folder(self, folder: Path) -> Path:
        """Write the members as an extracted `cifar-10-batches-py/`-style folder and return it."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, raw in self.members.items():
            (folder / name).write_bytes(raw)
        return folder


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable images: red and green encode the class, blue is a left-to-right ramp, plus a little noise."""
    n = len(labels)
    images = np.empty((n, 3, 32, 32), np.uint8)
    noise = rng.integers(0, 10, size=(n, 32, 32))
    images[:, 0] = 10 + 20 * labels[:, None, None] + noise
    images[:, 1] = 245 - 20 * labels[:, None, None] - noise
    images[:, 2] = 4 + 8 * np.arange(32)[None, None, :]
    return images


def _batch(labels: np.ndarray, rng: np.random.Generator, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    images = _images(labels, rng)
    rows = images.reshape(len(labels), 3072)  # 1024 R, 1024 G, 1024 B, row-major
    content = {
        b"batch_label": name.encode(),
        b"labels": [int(x) for x in labels],
        b"data": rows,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    return content, images, rows


def build_fake_cifar(
    path: Path,
    *,
    rows_per_batch: int = 20,
    seed: int = 0,
    class_names: list[str] | None = None,
    overrides: dict[str, bytes] | None = None,
    omit: tuple[str, ...] = (),
) -> FakeCifar:
    """Write a tar.gz in the official layout: five train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    class_names = list(class_names or OFFICIAL_CLASSES)
    members, train, test = {}, [], None
    for name in MEMBERS[:-1]:
        labels = rng.permutation(np.arange(rows_per_batch) % 10).astype(np.int64)  # every class present
        content, images, rows = _batch(labels, rng, name)
        members[name] = py2_pickle(content)
        if name == "test_batch":
            test = (images, labels)
        else:
            train.append((images, labels, rows))
    meta = {b"num_cases_per_batch": rows_per_batch, b"label_names": [n.encode() for n in class_names], b"num_vis": 3072}
    members["batches.meta"] = py2_pickle(meta)
    members.update(overrides or {})
    for name in omit:
        members.pop(name)

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, raw in [("readme.html", b"<html></html>"), *members.items()]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return FakeCifar(
        archive=path,
        md5=hashlib.md5(path.read_bytes()).hexdigest(),
        class_names=class_names,
        train_images=np.concatenate([t[0] for t in train]),
        train_labels=np.concatenate([t[1] for t in train]),
        test_images=test[0],
        test_labels=test[1],
        train_rows=np.concatenate([t[2] for t in train]),
        members=members,
    )


@pytest.fixture
def make_fake_cifar(tmp_path):
    """Factory: `make_fake_cifar(name="x.tar.gz", **options)` writes a fake archive under tmp_path/src."""

    def make(name: str = "cifar-10-python.tar.gz", **options) -> FakeCifar:
        return build_fake_cifar(tmp_path / "src" / name, **options)

    return make


@pytest.fixture
def fake_cifar(make_fake_cifar) -> FakeCifar:
    """A fake CIFAR-10 archive of 5 x 20 train and 20 test images."""
    return make_fake_cifar()


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point $CIFARLAB_HOME (and $HOME) into tmp_path and clear proxy variables, so no test leaves it."""
    home = tmp_path / "cifarlab-home"
    monkeypatch.setenv("CIFARLAB_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return home


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path (without the leading /) -> body
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    statuses: list[int] = field(default_factory=list)
    honour_range: bool = True  # False: answer 200 with the whole body even when a Range is sent
    drop_after: int | None = None  # send this many body bytes then close the connection (once)
    url: str = ""
    stopped: bool = False
    _server: ThreadingHTTPServer | None = None

    def serve(self, name: str, body: bytes) -> str:
        """Serve `body` at /name and return its URL."""
        self.files[name] = body
        return self.url + name

    def stop(self) -> None:
        """Shut the server down (idempotent)."""
        if not self.stopped:
            self.stopped = True
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def _respond(self, status: int, headers: dict[str, str]) -> None:
        self.server.state.statuses.append(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self):
        state: ServerState = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        body = state.files.get(self.path.lstrip("/"))
        if body is None:
            self._respond(404, {"Content-Length": "0"})
            return
        start, status, headers = 0, 200, {}
        if range_header and state.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self._respond(416, {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
                return
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        payload = body[start:]
        self._respond(status, {**headers, "Content-Length": str(len(payload))})
        if state.drop_after is not None:
            payload, state.drop_after = payload[: state.drop_after], None
            self.close_connection = True  # the socket closes after this, short of Content-Length
        self.wfile.write(payload)


@pytest.fixture
def http_server(isolated_home):
    """A local HTTP server on 127.0.0.1 (port chosen by the OS) that supports Range and counts requests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = ServerState(url=f"http://127.0.0.1:{server.server_address[1]}/", _server=server)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.stop()
    thread.join(timeout=5)
