"""The missing-extra message names the pip command that fits how this copy was installed (PEP 610's direct_url)."""

import json
from importlib import metadata
from pathlib import Path

import pytest

from cifarlab.extras import install_command, missing_extra_message, pip_command

EDITABLE = {"url": "file:///src/cifarlab", "dir_info": {"editable": True}}


@pytest.mark.parametrize(("direct_url", "cwd", "command"), [
    (None, "/anywhere", "pip install 'cifarlab[export]'"),  # from an index
    (EDITABLE, "/src/cifarlab", "pip install -e '.[export]'"),  # pip install -e ., then run in the checkout
    (EDITABLE, "/home", "pip install -e '/src/cifarlab[export]'"),
    ({"url": "file:///src/my%20lab", "dir_info": {}}, "/home", "pip install '/src/my lab[export]'"),  # pip install .
    ({"url": "https://example.org/cifarlab.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}, "/home",
     "pip install 'cifarlab[export] @ git+https://example.org/cifarlab.git@abc123'"),
    ({"url": "file:///tmp/cifarlab-0.1.0-py3-none-any.whl", "archive_info": {}}, "/home",
     "pip install 'cifarlab[export] @ file:///tmp/cifarlab-0.1.0-py3-none-any.whl'"),
])  # fmt: skip
def test_the_pip_command_follows_how_cifarlab_was_installed(direct_url, cwd, command):
    assert pip_command("export", direct_url, Path(cwd)) == command


def test_this_copy_gets_the_command_its_own_install_record_calls_for(monkeypatch, tmp_path):
    text = metadata.distribution("cifarlab").read_text("direct_url.json")
    monkeypatch.chdir(tmp_path)
    assert install_command("serve") == pip_command("serve", json.loads(text) if text else None, tmp_path)
    message = missing_extra_message("onnxruntime.capi", "export")
    assert message == f"cifarlab export needs onnxruntime, from the 'export' extra: {install_command('export')}"
    assert missing_extra_message("numpy", "train") is None
