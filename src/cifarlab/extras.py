"""The optional extras (pyproject's `[project.optional-dependencies]`) and the modules each brings.

A command that needs a module from an extra that is not installed ends with one line naming the pip command
(`missing_extra_message`), never with an internal error; tests check this map against pyproject.toml. The command
fits how this copy was installed (`install_command`): `cifarlab[export]` names whatever an index holds under that
name, so a copy installed from a source checkout, as README does, gets the checkout's path instead.
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

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
    return f"cifarlab {command} needs {module.split('.')[0]}, from the '{extra}' extra: {install_command(extra)}"


def install_command(extra: str) -> str:
    """The pip command that adds `extra` to this copy of cifarlab, the way it was installed.

    From an index: pip install 'cifarlab[export]'. From a source checkout (`pip install .`, `pip install -e .`):
    the checkout, as '.[export]' from inside it, with -e for an editable install. From a git URL or an archive:
    'cifarlab[export] @ URL'. Read from the installed distribution's direct_url.json (PEP 610).
    """
    try:
        text = metadata.distribution("cifarlab").read_text("direct_url.json")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        checkout = Path(__file__).resolve().parents[2]
        return pip_command(extra, {"url": checkout.as_uri(), "dir_info": {"editable": True}}, Path.cwd())
    return pip_command(extra, json.loads(text) if text else None, Path.cwd())


def pip_command(extra: str, direct_url: dict[str, Any] | None, cwd: Path) -> str:
    """`install_command` for a PEP 610 direct_url.json (None: installed from an index), run from `cwd`."""
    if not direct_url:
        return f"pip install {shlex.quote(f'cifarlab[{extra}]')}"
    url = direct_url.get("url", "")
    if "dir_info" in direct_url and url.startswith("file:"):
        checkout = Path(unquote(urlparse(url).path))
        where = "." if checkout.resolve() == cwd.resolve() else str(checkout)
        editable = "-e " if direct_url["dir_info"].get("editable") else ""
        return f"pip install {editable}{shlex.quote(f'{where}[{extra}]')}"
    if "vcs_info" in direct_url:
        vcs = direct_url["vcs_info"]
        revision = vcs.get("requested_revision") or vcs.get("commit_id")
        url = f"{vcs['vcs']}+{url}" + (f"@{revision}" if revision else "")
    return f"pip install {shlex.quote(f'cifarlab[{extra}] @ {url}')}"
