"""The example notebooks: kept in git without outputs, and executed headless with papermill on a small generated
image folder (quick mode: a few batches per run), failing on any cell error."""

import re
from pathlib import Path

import pytest

from tests.factories import make_dataset, write_image_folder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the test extra: pip install -e '.[test]'")


def test_the_examples_are_there():
    assert [path.name for path in NOTEBOOKS] == ["seed_ladder.ipynb", "your_images.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_committed_notebook_holds_no_outputs_and_takes_data_and_quick(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"
    parameters = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0] is code[1], "the second code cell is the one tagged 'parameters'"
    assert {line.split("=")[0].strip() for line in parameters[0].source.splitlines()} == {"data", "quick"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("notebook-data"), make_dataset(train=80, test=40))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_notebook_runs_clean_in_quick_mode_on_an_image_folder(path, folder, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / path.name
    # start_timeout: a kernel starts slowly on a busy machine
    papermill.execute_notebook(str(path), str(out), parameters={"data": str(folder), "quick": True},
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               start_timeout=300)  # fmt: skip
    outputs = [output for cell in nbformat.read(out, as_version=4).cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    html = "".join(output.get("data", {}).get("text/html", "") for output in outputs)
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert figures, "no figure drawn: neither the live curves nor a plot"
    if path.name == "seed_ladder.ipynb":
        assert len(re.findall(r"^> \d+\.\d{3}$", text, re.MULTILINE)) == 9  # each step's '> NN.NNN', as the seed
        assert "cifarlab-comparison" in html  # and it ends with every step against the seed
    else:
        assert "cifarlab-run" in html and "cifarlab-predictions" in html and "<iframe" in html
        assert "exported " in text and list(tmp_path.glob("runs/*/model*.onnx"))
