"""Load test of `cifarlab serve`: p50/p99 latency and requests/s at several concurrencies, batching on and off.

The server runs as `cifarlab serve` in its own process; the load generator runs in another process (threads
over plain http.client, one keep-alive connection each) against 127.0.0.1, bounded in requests and in time.
Weights do not change the speed, so by default it makes untrained checkpoints of the proyecto9 and fast94
architectures with the normal checkpoint writer.

    python benchmarks/serve_load.py                      # both presets, concurrency 1/8/32, batching on/off
    python benchmarks/serve_load.py --presets fast94 --requests 200 --seconds 20
    python benchmarks/serve_load.py --model runs/fast94-...   # a trained run instead
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_checkpoint(preset: str, folder: Path) -> Path:
    """An untrained checkpoint of `preset`'s model, written as the trainer writes one."""
    import cifarlab
    from cifarlab.inference.checkpoint import save_checkpoint

    config = cifarlab.get_preset(preset).config
    model = cifarlab.create_model(config.model)
    meta = {"preset": preset, "model": config.model, "model_kwargs": {}, "class_names": [f"c{i}" for i in range(10)],
            "image_size": 32, "normalization": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]},
            "channels_last": config.channels_last, "tta": config.train.tta, "metrics": {}}  # fmt: skip
    return save_checkpoint(folder / preset / "model.safetensors", model, meta)


def _png(seed: int) -> bytes:
    """A 32x32 PNG, as a client would send after resizing a photo."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "cifarlabbench"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return body, f"multipart/form-data; boundary={boundary}"


def _client(port: int, concurrency: int, requests: int, seconds: float, queue: multiprocessing.Queue) -> None:
    """The load generator (its own process): `concurrency` threads, `requests` in all, at most `seconds`."""
    bodies = [_multipart(_png(i)) for i in range(16)]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in counter:  # shared iterator: next() is atomic under the GIL
            if time.perf_counter() > deadline:
                break
            body, content_type = bodies[i % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            with lock:
                if response.status == 200:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((latencies, errors[0], time.perf_counter() - start))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model: Path, max_batch: int) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [sys.executable, "-m", "cifarlab.cli", "serve", str(model), "--port", str(port), "--max-batch",
               str(max_batch)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server for {model} did not start")


def _health(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/health")
    return json.loads(connection.getresponse().read())


def measure(model: Path, name: str, concurrencies: list[int], requests: int, seconds: float, max_batch: int) -> None:
    process, port = _start_server(model, max_batch)
    try:
        context = multiprocessing.get_context("spawn")
        for concurrency in concurrencies:
            warm = context.Queue()
            _client(port, concurrency, 2 * concurrency, 10, warm)  # warm-up, in this process
            warm.get()
            before = _health(port)
            queue = context.Queue()
            generator = context.Process(target=_client, args=(port, concurrency, requests, seconds, queue))
            generator.start()
            latencies, errors, wall = queue.get()
            generator.join()
            after = _health(port)
            batches = after["batches_run"] - before["batches_run"]
            images = after["images_run"] - before["images_run"]
            ms = sorted(1000 * x for x in latencies)
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(f"| {name} | {'on' if max_batch > 1 else 'off'} | {concurrency} | {len(ms)} | "
                  f"{statistics.median(ms):.1f} | {p99:.1f} | {len(ms) / wall:.0f} | "
                  f"{images / max(batches, 1):.1f} | {errors} |", flush=True)  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="proyecto9,fast94", help="untrained models to make (comma-separated)")
    parser.add_argument("--model", help="a run directory, checkpoint or .onnx file instead of --presets")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement (at most)")
    parser.add_argument("--seconds", type=float, default=30, help="time limit per measurement")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"# {os.cpu_count()} CPUs; {args.requests} requests or {args.seconds:g} s per row, 32x32 PNG each")
    print("| model | batching | concurrency | requests | p50 ms | p99 ms | req/s | images/batch | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        models = [(Path(args.model), Path(args.model).name)] if args.model else [
            (make_checkpoint(p, Path(tmp)), p) for p in args.presets.split(",")]  # fmt: skip
        for model, name in models:
            for max_batch in (32, 1):
                measure(model, name, concurrencies, args.requests, args.seconds, max_batch)


if __name__ == "__main__":
    main()
