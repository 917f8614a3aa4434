"""Build hook: record the git revision a wheel is built from.

`pip install .` copies the package out of the checkout, so an installed cifarlab cannot ask git which revision it
is; this writes it into the built package as `_build_revision.txt`, which run records then name. Everything else
about the build is in pyproject.toml.
"""

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class BuildPyWithRevision(build_py):
    """build_py, then the revision file beside the built package (nothing when not built from a git checkout)."""

    def run(self) -> None:
        """Build as usual, then write (or clear) the revision file."""
        super().run()
        target = Path(self.build_lib) / "cifarlab" / "_build_revision.txt"
        revision = _git("rev-parse", "HEAD")
        if not revision:
            target.unlink(missing_ok=True)  # not a stale one from an earlier build
            return
        if _git("status", "--porcelain", "--untracked-files=no", "--", "src"):
            revision += "+uncommitted"
        target.write_text(revision + "\n")


setup(cmdclass={"build_py": BuildPyWithRevision})
