import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

import cifarlab

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cifarlab.serve.app import create_app  # noqa: E402
from cifarlab.serve.batcher import MicroBatcher, QueueFullError  # noqa: E402
from tests.deploy_fixtures import CLASS_NAMES, train_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return cifarlab.load(train_tiny_run(tmp_path_factory.mktemp("serve")), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def client(clf):
    with TestClient(create_app(clf, max_upload_mb=0.5, max_files=4, max_pixels=1_000_000)) as test_client:
        yield test_client


def png(size=(40, 30), colour=(200, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_page_health_and_model(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external resources
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["classes"] == CLASS_NAMES and info["image_size"] == 32 and info["preset"] == "proyecto1"
    assert 0 <= info["test_accuracy"] <= 1 and info["cifarlab_version"] == cifarlab.__version__


def test_predict_several_files_matches_the_library(client, clf, tmp_path):
    files = [("file", ("red.png", png(), "image/png")), ("file", ("blue.png", png(colour=(20, 40, 220)), "image/png"))]
    answer = client.post("/predict?top_k=2", files=files)
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert [p["filename"] for p in predictions] == ["red.png", "blue.png"]
    (tmp_path / "red.png").write_bytes(png())
    expected = clf.predict_files([tmp_path / "red.png"], top_k=2)[0]
    assert [e["class"] for e in predictions[0]["top_k"]] == expected.classes
    assert [e["probability"] for e in predictions[0]["top_k"]] == pytest.approx(expected.probabilities, abs=1e-5)


def _noise_png(n_bytes_at_least: int) -> bytes:
    side = int((n_bytes_at_least / 3) ** 0.5) + 8
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1100, 1000)).save(buffer, "PNG")  # 1.1 MP, a few kB: over the 1 MP limit of this app
    return buffer.getvalue()


def _truncated() -> bytes:
    data = _noise_png(3000)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("files", "data", "status", "message"),
    [
        ([("file", ("big.png", _noise_png(600_000), "image/png"))], None, 413, "upload too large"),
        ([("file", ("notes.png", b"just some text", "image/png"))], None, 400, "notes.png: not an image"),
        ([("file", ("cut.png", _truncated(), "image/png"))], None, 400, "cut.png: unreadable image"),
        ([("file", ("bomb.png", _bomb(), "image/png"))], None, 400, "bomb.png: image of 1100x1000 pixels is over"),
        ([("file", (f"{i}.png", png(), "image/png")) for i in range(5)], None, 400, "Too many files"),
        ([("file", ("empty.png", b"", "image/png"))], None, 400, "empty.png: empty file"),
        ([("other", ("a.png", png(), "image/png"))], None, 400, "no image"),
        (None, {"file": "text, not a file"}, 400, "must hold an uploaded file"),
    ],
    ids=["over-limit", "not-image", "truncated", "bomb", "too-many-parts", "empty", "missing-field", "text-field"],
)
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(client, files, data, status, message):
    answer = client.post("/predict", files=files, data=data)
    assert answer.status_code == status
    assert message in answer.json()["detail"]
    assert client.post("/predict", files=[("file", ("ok.png", png(), "image/png"))]).status_code == 200


def test_chunked_upload_over_the_limit_is_cut_off_by_bytes_received(client):
    body = _noise_png(600_000)

    def chunks():  # a generator body: sent chunked, with no Content-Length to check
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    answer = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413 and "upload too large" in answer.json()["detail"]
    assert client.get("/health").status_code == 200


def test_bad_top_k(client):
    answer = client.post("/predict?top_k=9", files=[("file", ("ok.png", png(), "image/png"))])
    assert answer.status_code == 400 and "top_k must be between 1 and 4" in answer.json()["detail"]
    answer = client.post("/predict?top_k=abc", files=[("file", ("ok.png", png(), "image/png"))])
    assert answer.status_code == 400 and answer.json()["detail"].startswith("top_k: ")
    assert "got 'abc'" in answer.json()["detail"]


def test_batcher_dispatches_at_once_when_idle_and_batches_under_load():
    release = threading.Event()
    calls = []

    def predict(images):
        calls.append(len(images))
        if len(calls) == 1:
            release.wait(10)  # hold the first batch while the others queue up
        return images.reshape(len(images), -1)[:, :2].astype(np.float32)

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=8, window_ms=5, max_queue=5)
        await batcher.start()
        images = [np.full((1, 3, 2, 2), i, np.uint8) for i in range(6)]
        first = asyncio.create_task(batcher.submit(images[0]))
        while not calls:  # the first request went straight to the model
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(batcher.submit(x)) for x in images[1:]]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError):  # 5 waiting: the queue is full
            await batcher.submit(images[0])
        release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [1, 5]  # one alone, then the five that queued meanwhile in one batch
    assert [int(r[0, 0]) for r in results] == [0, 1, 2, 3, 4, 5]  # each caller got its own rows


def test_batching_off_runs_one_request_per_call():
    calls = []

    def predict(images):
        calls.append(len(images))
        return np.zeros((len(images), 2), np.float32)

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=1, max_queue=16)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(np.zeros((1, 3, 2, 2), np.uint8)) for _ in range(6)))
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [1] * 6
