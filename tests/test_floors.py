"""The package's floors: no import cycle, and inference, serve, predict and export stay off training and the API.

Two checks. Statically, imports are read with `ast` from the source, those inside functions included (a lazy import
counts the same); only those under `if TYPE_CHECKING:` are left out, since they never run. At run time, a fresh
interpreter imports each floor's entry points and runs its load and predict path, and what then sits in
`sys.modules` is checked: that counts what the package root and third-party libraries bring in too.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cifarlab"


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Module -> the cifarlab modules it imports (a name imported from a package counts as its submodule)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.split(".")[0] == "cifarlab")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "cifarlab":
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in files else source)
        graph[module] = {target for target in targets if target != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    graph = import_graph()
    # cli imports the ladder inside its handler, and api imports the trainer only for type checking nowhere
    assert "cifarlab.ladder" in graph["cifarlab.cli"]
    assert "cifarlab.training.trainer" in graph["cifarlab.api"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("front", ["cifarlab.inference.load", "cifarlab.serve.app", "cifarlab.export.onnx"])
def test_inference_serve_and_export_stay_off_training_and_the_api(front):
    below = reachable(import_graph(), front)
    upper = ("cifarlab.training", "cifarlab.transfer", "cifarlab.reports", "cifarlab.api", "cifarlab.ladder",
             "cifarlab.tuning", "cifarlab.auditing", "cifarlab.cli")  # fmt: skip
    climbing = sorted(m for m in below if m.startswith(upper))
    assert not climbing, f"{front} reaches {climbing}"
    assert "cifarlab" not in below, f"{front} imports the package root (and with it the whole API)"


def test_reports_and_training_stay_below_the_orchestration():
    graph = import_graph()
    orchestration = ("cifarlab.api", "cifarlab.ladder", "cifarlab.tuning", "cifarlab.auditing", "cifarlab.cli")
    for module in (m for m in graph if m.startswith(("cifarlab.reports", "cifarlab.training"))):
        climbing = sorted(t for t in graph[module] if t.startswith(orchestration) or t == "cifarlab")
        assert not climbing, (module, climbing)


def test_the_inference_package_imports_no_floor_above_it():
    graph = import_graph()
    allowed = ("cifarlab.inference", "cifarlab.models", "cifarlab.data", "cifarlab.evaluation", "cifarlab.device",
               "cifarlab._io", "cifarlab._download", "cifarlab._version", "cifarlab.extras")  # fmt: skip
    for module in (m for m in graph if m.startswith("cifarlab.inference")):
        assert all(t.startswith(allowed) for t in graph[module]), (module, sorted(graph[module]))


def test_no_library_module_reads_a_test_hook():
    offenders = [name for name, path in module_files().items() if "CIFARLAB_TEST" in path.read_text()]
    assert not offenders


# what a serving process must not carry: the floors above inference, and the libraries only they use
ABOVE_INFERENCE = ("cifarlab.training", "cifarlab.tuning", "cifarlab.auditing", "cifarlab.api", "cifarlab.ladder",
                   "cifarlab.transfer", "cifarlab.reports", "cifarlab.cli", "matplotlib", "optuna",
                   "cleanlab")  # fmt: skip
PUBLIC_NAMES = [
    "AuditResult", "Callback", "Classifier", "DataConfig", "Dataset", "EarlyStopping", "History", "ModelCheckpoint",
    "RunConfig", "RunResult", "Split", "TrainConfig", "Trainer", "TuneResult", "audit", "compare", "count_params",
    "create_model", "evaluate", "get_preset", "list_models", "list_presets", "load", "load_dataset", "predict",
    "resolve_config", "resume", "robustness", "run_ladder", "train", "train_within", "tune",
]  # fmt: skip


def loaded_above_inference(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the modules from `ABOVE_INFERENCE` it left in `sys.modules`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    return sorted({m for m in modules for top in ABOVE_INFERENCE if m == top or m.startswith(top + ".")})


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """An untrained proyecto1 saved as a run's checkpoint, and one image: enough to load, predict and export."""
    import torch
    from PIL import Image

    from cifarlab.inference.checkpoint import save_checkpoint
    from cifarlab.models import create_model

    root = tmp_path_factory.mktemp("floors")
    torch.manual_seed(0)
    meta = {"model": "proyecto1", "model_kwargs": {"num_classes": 4}, "class_names": ["a", "b", "c", "d"],
            "image_size": 32, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "tta": 0}  # fmt: skip
    save_checkpoint(root / "model.safetensors", create_model("proyecto1", num_classes=4), meta)
    Image.new("RGB", (40, 30), (200, 40, 90)).save(root / "cat.png")
    return root, root / "cat.png"


def test_the_run_time_check_sees_what_the_upper_floors_load():
    assert loaded_above_inference("import math") == []
    loaded = loaded_above_inference("import cifarlab.api")
    assert "cifarlab.api" in loaded and "cifarlab.training" in loaded and "matplotlib" in loaded


def test_the_package_root_is_lazy_and_keeps_its_public_names():
    assert loaded_above_inference("import cifarlab; cifarlab.load; cifarlab.Classifier; cifarlab.list_models") == []
    import cifarlab

    assert cifarlab.__all__ == PUBLIC_NAMES
    assert set(PUBLIC_NAMES) <= set(dir(cifarlab))
    assert all(getattr(cifarlab, name) is not None for name in PUBLIC_NAMES)
    assert cifarlab.Trainer.__module__ == "cifarlab.training.trainer" and cifarlab.train.__module__ == "cifarlab.api"
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        cifarlab.trian  # noqa: B018
    # the near-duplicate finder (whose threshold the command line's parser shows) comes without the audit's API
    assert loaded_above_inference("from cifarlab.auditing.duplicates import DEFAULT_THRESHOLD") == [
        "cifarlab.auditing", "cifarlab.auditing.duplicates"]  # fmt: skip


RUN_TIME_PATHS = {
    # predict (and its --explain): load a checkpoint, predict files, write a Grad-CAM picture
    "predict": ("torch", "from cifarlab.inference.load import load\n"
                "from cifarlab.inference.explain import ExplanationWriter\n"
                "clf = load(MODEL, device='cpu')\nprint(clf.predict_files([IMAGE])[0].line())\n"
                "ExplanationWriter(clf, OUT / 'explained').write(IMAGE)"),
    # the public entry point, through the package root
    "package-root": ("torch", "import cifarlab\n"
                     "print(cifarlab.load(MODEL, device='cpu').predict_files([IMAGE])[0].line())"),
    # serve: load the model and build the app (uvicorn's loop is not started)
    "serve": ("fastapi", "import uvicorn\nuvicorn.run = lambda *args, **kwargs: None\n"
              "from cifarlab.serve import serve\nserve(MODEL, port=0, device='cpu')"),
    # export: the ONNX file, checked against PyTorch, then loaded and run as predict runs it
    "export": ("onnxruntime", "from cifarlab.export import export_onnx\nfrom cifarlab.inference.load import load\n"
               "result = export_onnx(MODEL, OUT / 'model.onnx')\n"
               "print(load(result.path).predict_files([IMAGE])[0].line())"),
}  # fmt: skip


@pytest.mark.parametrize("path", list(RUN_TIME_PATHS))
def test_inference_serve_and_export_load_no_upper_floor_at_run_time(model_files, path):
    needs, code = RUN_TIME_PATHS[path]
    pytest.importorskip(needs)
    root, image = model_files
    setup = (f"from pathlib import Path\nMODEL = {str(root / 'model.safetensors')!r}\nIMAGE = {str(image)!r}\n"
             f"OUT = Path({str(root)!r})\n")  # fmt: skip
    assert loaded_above_inference(setup + code) == []
