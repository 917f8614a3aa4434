import json
import re

import numpy as np
import pytest
import torch

import cifarlab
from cifarlab.cli import main
from tests.deploy_fixtures import CLASS_NAMES, train_tiny_run

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported(run):
    """`cifarlab export RUN` once: (its stdout, the .onnx path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFARLAB_HOME", str(run.parent / "home"))  # where the run's test images are cached
        capture = _Capture()
        with capture:
            assert main(["export", str(run)]) == 0
    return capture.text, run / "model.onnx"


class _Capture:
    """stdout of a block (capsys is function-scoped)."""

    def __enter__(self):
        import contextlib
        import io

        self.buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self.buffer)
        self._redirect.__enter__()

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)
        self.text = self.buffer.getvalue()


def test_export_reports_its_check(exported):
    out, path = exported
    assert path.is_file()
    match = re.search(r"checked against PyTorch on (\d+) test images .* at batch sizes 1, 2, 7, 256: "
                      r"top-1 agree (\d+)/(\d+), max \|prob diff\| ([0-9.e+-]+)", out)  # fmt: skip
    assert match, out
    assert match[1] == match[2] == match[3] == "266" and float(match[4]) <= 1e-4


def test_onnx_graph_signature_and_metadata(exported, run):
    model = onnx.load(str(exported[1]))
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]  # dynamic N
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == CLASS_NAMES and props["image_size"] == "32"
    assert props["preset"] == "proyecto1" and props["tta"] == "0"
    checkpoint = json.loads((run / "model.json").read_text())
    assert float(props["test_accuracy"]) == checkpoint["metrics"]["test_accuracy"]


def test_onnx_runtime_matches_pytorch_with_nothing_but_numpy(exported, run):
    session = onnxruntime.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # NHWC, as an app has them
    onnx_probs = session.run(None, {"images": images})[0]
    torch_probs = cifarlab.load(run, device="cpu", precision="fp32").predict(
        torch.from_numpy(images).permute(0, 3, 1, 2)
    )
    assert onnx_probs.shape == (5, 4)
    np.testing.assert_allclose(onnx_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(onnx_probs, torch_probs.numpy(), atol=1e-4)


def test_evaluate_onnx_prints_the_checkpoints_accuracy(exported, run, capsys):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFARLAB_HOME", str(run.parent / "home"))
        assert main(["evaluate", str(run), "--quiet", "--precision", "fp32"]) == 0
        assert main(["evaluate", str(exported[1]), "--quiet"]) == 0
    checkpoint, onnx_line = capsys.readouterr().out.split()[1::2]
    assert abs(float(checkpoint) - float(onnx_line)) <= 0.05


def test_predict_on_the_onnx_file_matches_the_checkpoint(exported, run, tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(4).integers(0, 256, (50, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    from_onnx = cifarlab.load(exported[1]).predict_files([tmp_path / "a.png"], top_k=4)[0]
    from_torch = cifarlab.load(run, device="cpu", precision="fp32").predict_files([tmp_path / "a.png"], top_k=4)[0]
    assert from_onnx.classes == from_torch.classes
    assert from_onnx.probabilities == pytest.approx(from_torch.probabilities, abs=1e-4)
    with pytest.raises(ValueError, match="exported without TTA; export again with --tta"):
        cifarlab.load(exported[1]).predict_files([tmp_path / "a.png"], tta=True)


def test_tta_export_bakes_the_views_in(run, tmp_path, capsys):
    out = tmp_path / "tta.onnx"
    assert main(["export", str(run), "--tta", "--out", str(out), "--opset", "18"]) == 0
    assert "TTA level 2" in capsys.readouterr().out
    clf = cifarlab.load(run, device="cpu", precision="fp32")
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    with_views = cifarlab.load(out).predict(images)
    np.testing.assert_allclose(with_views.numpy(), clf.predict(images, tta=True).numpy(), atol=1e-4)
    assert not np.allclose(with_views.numpy(), clf.predict(images, tta=False).numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--opset", "5"], "--opset must be between 17 and 23"), (["--out", "x.txt"], "must end in .onnx")],
)
def test_export_rejects_bad_options(run, argv, message, capsys):
    assert main(["export", str(run), *argv]) == 2
    assert message in capsys.readouterr().err


def test_export_names_a_missing_model(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_export_check_takes_every_class_of_a_class_sorted_test_split(run, monkeypatch):
    from cifarlab.export import onnx as onnx_export
    from cifarlab.inference.classifier import Classifier

    monkeypatch.setenv("CIFARLAB_HOME", str(run.parent / "home"))
    monkeypatch.setattr(onnx_export, "CHECK_BATCH_SIZES", (1, 2, 7))  # 10 of the 40 test images
    classifier = Classifier.load(run, device="cpu", precision="fp32")
    test = onnx_export._local_test_split(classifier)
    assert test.labels[:10].unique().tolist() == [0]  # the folder lists its test images class by class
    description, images = onnx_export._check_images(classifier)
    assert description.startswith("test images of") and len(images) == 10
    rows = torch.from_numpy(images).permute(0, 3, 1, 2)
    found = {int(test.labels[(test.images == row).flatten(1).all(dim=1)][0]) for row in rows}
    assert found == {0, 1, 2, 3}
