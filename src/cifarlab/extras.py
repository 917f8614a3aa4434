"""The optional extras (pyproject's `[project.optional-dependencies]`) and the modules each brings.

A command that needs a module from an extra that is not installed ends with one line naming the pip command
(`missing_extra_message`), never with an internal error; tests check this map against pyproject.toml.
"""

from __future__ import annotations

EXTRA_MODULES = {  # top-level module -> the extra that installs it
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "optuna": "tune",
    "scipy": "robustness",
    "sqlalchemy": "tune",
    "psycopg": "tune",
    "cleanlab": "audit",
}


def missing_extra_message(module: str | None, command: str) -> str | None:
    """'cifarlab export needs onnxscript: pip install 'cifarlab[export]'', or None for a module of no extra."""
    extra = EXTRA_MODULES.get((module or "").split(".")[0])
    if extra is None:
        return None
    return f"cifarlab {command} needs {module.split('.')[0]}, from the '{extra}' extra: pip install 'cifarlab[{extra}]'"
