"""The prediction server: a FastAPI app over a loaded model, its web page, and `serve` to run it under uvicorn."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from cifarlab._version import __version__
from cifarlab.inference.images import decode_image
from cifarlab.inference.predict import Predictor
from cifarlab.serve.batcher import MicroBatcher, QueueFullError

MAX_PIXELS = 25_000_000  # per uploaded image; Pillow's own bomb limit (89 MP) lets a 10 MB PNG cost ~270 MB decoded
MAX_FILES = 16  # images per request


def create_app(
    classifier: Predictor,
    *,
    max_upload_mb: float = 10.0,
    max_files: int = MAX_FILES,
    max_pixels: int = MAX_PIXELS,
    max_batch: int = 32,
    batch_window_ms: float = 2.0,
    max_queue: int = 256,
) -> FastAPI:
    """The app: `GET /` (page), `POST /predict`, `GET /health`, `GET /model`.

    Args:
        classifier: a loaded model (`cifarlab.load`).
        max_upload_mb: largest request body, counted on the bytes received (413 beyond it).
        max_files: most images in one request.
        max_pixels: largest image, in pixels, checked before it is decoded.
        max_batch: most images per model call; 1 turns micro-batching off.
        batch_window_ms: how long a batch waits for more requests while the model is under load.
        max_queue: most requests waiting for the model (503 beyond it).

    Raises:
        ValueError: for an option out of range.
    """
    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be above 0, got {max_upload_mb}")
    batcher = MicroBatcher(
        lambda images: classifier.predict(torch.from_numpy(images)).numpy(),
        max_batch=max_batch,
        window_ms=batch_window_ms,
        max_queue=max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="cifarlab", version=__version__, lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_middleware(_BodyLimit, max_bytes=int(max_upload_mb * 1024 * 1024))
    app.state.batcher = batcher
    page = resources.files("cifarlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    info = model_info(classifier)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "batches_run": batcher.batches_run, "images_run": batcher.images_run}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return info

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 3) -> dict[str, Any]:
        if not 1 <= top_k <= len(classifier.class_names):
            raise HTTPException(400, f"top_k must be between 1 and {len(classifier.class_names)}, got {top_k}")
        async with request.form(max_files=max_files, max_fields=max_files) as form:
            uploads = form.getlist("file")
            if not uploads:
                raise HTTPException(400, "no image: send each image as a multipart form field named 'file'")
            if not all(isinstance(upload, UploadFile) for upload in uploads):
                raise HTTPException(400, "field 'file' must hold an uploaded file, not text")
            names = [upload.filename or f"file {i + 1}" for i, upload in enumerate(uploads)]
            contents = [await upload.read() for upload in uploads]
        images = await asyncio.to_thread(_decode_all, names, contents, classifier.image_size, max_pixels)
        try:
            probabilities = await batcher.submit(images)
        except QueueFullError as error:
            raise HTTPException(503, f"server busy: {error}") from None
        predictions = []
        for name, row in zip(names, probabilities):
            order = np.argsort(-row, kind="stable")[:top_k]
            top = [{"class": classifier.class_names[i], "probability": round(float(row[i]), 6)} for i in order]
            predictions.append({"filename": name, "top_k": top})
        return {"predictions": predictions}

    return app


def model_info(classifier: Predictor) -> dict[str, Any]:
    """What `GET /model` answers: preset, classes, image size, test accuracy, TTA level, cifarlab version."""
    meta = getattr(classifier, "meta", {})
    return {
        "preset": meta.get("preset"),
        "model": meta.get("model"),
        "format": "onnx" if meta.get("format") == "onnx" else "checkpoint",
        "classes": list(classifier.class_names),
        "image_size": classifier.image_size,
        "test_accuracy": meta.get("metrics", {}).get("test_accuracy"),
        "tta": getattr(classifier, "tta", 0),
        "cifarlab_version": __version__,
    }


def _decode_all(names: list[str], contents: list[bytes], image_size: int, max_pixels: int) -> np.ndarray:
    """(n, 3, S, S) uint8 images; the first bad file raises HTTPException 400 naming it."""
    images = []
    for name, data in zip(names, contents):
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        try:
            images.append(decode_image(io.BytesIO(data), image_size, max_pixels=max_pixels))
        except ValueError as error:
            raise HTTPException(400, f"{name}: {error}") from None
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


class _TooLarge(Exception):
    """The request body passed the limit."""


class _BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, counted on the bytes received.

    A Content-Length over the limit is refused before reading; chunked uploads (no Content-Length) and
    lying headers are cut off as soon as the count passes the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        mb = self.max_bytes / 1024 / 1024
        body = json.dumps({"detail": f"upload too large: over the limit of {mb:g} MB (--max-upload-mb)"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 10.0,
    max_batch: int = 32,
    batch_window_ms: float = 2.0,
    device: str = "auto",
    precision: str = "auto",
) -> None:
    """Load `model` (run directory, checkpoint or .onnx) and serve it under uvicorn until interrupted.

    Raises:
        FileNotFoundError: if there is no model there.
        ValueError: if it cannot be loaded or an option is out of range.
    """
    import uvicorn

    from cifarlab.inference.load import load

    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")
    _check_port_free(host, port)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)  # inference runs in one worker thread, using every core the process may use
    classifier = load(model, device=device, precision=precision)
    app = create_app(classifier, max_upload_mb=max_upload_mb, max_batch=max_batch, batch_window_ms=batch_window_ms)
    print(f"serving {model} on http://{host}:{port} ({threads} threads, batches of up to {max_batch})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _check_port_free(host: str, port: int) -> None:
    """A one-line error now, before loading the model, when `host:port` cannot be bound (uvicorn would log it later)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: unknown address ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed server's port is free
        try:
            probe.bind(address)
        except OSError as error:
            raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error}); "
                             "choose another --port or stop what uses it") from None  # fmt: skip


async def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """A malformed query (`top_k=abc`): 400 with one `detail` line, as every other bad request gets."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
        got = f", got {problem['input']!r}" if "input" in problem else ""
        parts.append(f"{where}: {problem.get('msg', 'invalid')}{got}")
    return JSONResponse(status_code=400, content={"detail": "; ".join(parts)})
