"""Where a study lives: SQLite in the study folder by default, Optuna's journal file, or a database server.

One worker may use SQLite; several (`--workers N`, or several machines) need a storage made for several writers:
Optuna's journal file (one machine, or a shared filesystem) or a server database (`postgresql://...`). The
database storages run Optuna's heartbeat, so a trial whose worker died is marked failed and retried.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.extras import install_command

STUDY_DB = "study.db"
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "ceph", "glusterfs",
                        "fuse.glusterfs", "lustre", "gpfs", "beegfs"}  # fmt: skip
_ALTERNATIVES = ("--storage journal:PATH (Optuna's journal file, on this machine or a shared filesystem) or "
                 "--storage postgresql://USER@HOST/DB (a database server, for many machines)")  # fmt: skip


@dataclass(frozen=True)
class StorageSpec:
    """A resolved `--storage`: its kind ('sqlite', 'journal' or 'server'), URL or path, and how to show it."""

    kind: str
    target: str  # an SQLAlchemy URL, or the journal file's path
    shown: str  # the URL without its password

    def open(self, heartbeat_seconds: int | None = None) -> Any:
        """The Optuna storage; database ones with a heartbeat and a retry of trials whose worker died.

        Raises:
            ValueError: if the database cannot be reached (one line, naming the URL without its password).
        """
        import optuna

        if self.kind == "journal":
            from optuna.storages.journal import JournalFileBackend

            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(self.target))
        heartbeat: dict[str, Any] = {}
        if heartbeat_seconds is not None:
            # Optuna 4.9 renamed the stale-trial hook; the older name still works before it
            hook = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                    inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")  # fmt: skip
            heartbeat = {"heartbeat_interval": heartbeat_seconds, "grace_period": 2 * heartbeat_seconds,
                         hook: retry_trial}  # fmt: skip
        try:
            with warnings.catch_warnings():  # the heartbeat is 'experimental' in Optuna's words: do not warn each time
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(self.target, engine_kwargs=_engine_options(self.kind), **heartbeat)
        except ImportError:  # SQLAlchemy found no driver for the URL's database
            raise ValueError(f"--storage {self.shown}: its database driver is not installed; for PostgreSQL: "
                             f"{install_command('tune')} (psycopg)") from None  # fmt: skip
        except Exception as error:  # sqlalchemy's OperationalError and kin: say it in one line
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"--storage {self.shown}: cannot open the study database ({first})") from None

    def close(self, storage: Any) -> None:
        """Give back what `open` took: a database storage's session and pooled connections (a server counts them)."""
        if self.kind != "journal":
            storage.remove_session()
            storage.engine.dispose()


MAX_RETRIES = 2  # a trial whose worker died is retried this many times, then left failed


def retry_trial(study: Any, trial: Any) -> None:
    """Enqueue a failed trial again with its parameters; `retry_of` names the trial whose run the retry resumes."""
    first = int(trial.user_attrs.get("retry_of", trial.number))
    retries = int(trial.user_attrs.get("retries", 0))
    if retries >= MAX_RETRIES:
        return
    study.enqueue_trial(trial.params, user_attrs={"retry_of": first, "retries": retries + 1}, skip_if_exists=False)


def resolve_storage(storage: str | None, study_dir: Path, workers: int) -> StorageSpec:
    """Check `--storage` against `--workers` and the filesystem; default: SQLite in `study_dir`.

    Raises:
        ValueError: for several workers on SQLite, SQLite on a network filesystem, or an unknown kind of URL.
    """
    if storage is None:
        storage = f"sqlite:///{(study_dir / STUDY_DB).resolve()}"
    if storage.startswith("journal:"):
        path = Path(storage.removeprefix("journal:")).expanduser()
        if not path.name:
            raise ValueError("--storage journal:PATH needs a file path, e.g. journal:runs/tune/study.journal")
        return StorageSpec("journal", str(path.resolve()), f"journal:{path}")
    shown = re.sub(r"(//[^:/@]+:)[^@]+@", r"\1***@", storage)
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///"))
        if workers > 1:
            raise ValueError(f"--workers {workers} on SQLite ({shown}): SQLite does not take several writers "
                             f"safely; use {_ALTERNATIVES}")  # fmt: skip
        filesystem = _filesystem_of(path.parent)
        if filesystem in _NETWORK_FILESYSTEMS:
            raise ValueError(f"--storage {shown}: SQLite on a network filesystem ({filesystem}) corrupts under "
                             f"concurrent access; use {_ALTERNATIVES}")  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec("sqlite", storage, shown)
    if re.match(r"(postgresql|postgres|mysql|mariadb)(\+\w+)?://", storage):
        return StorageSpec("server", storage.replace("postgres://", "postgresql://", 1), shown)
    raise ValueError(f"--storage {shown}: not a study storage; give sqlite:///PATH, journal:PATH or "
                     "postgresql://USER@HOST/DB")  # fmt: skip


def _engine_options(kind: str) -> dict[str, Any]:
    if kind == "server":  # an unreachable server fails in seconds, not after the driver's long default
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def _filesystem_of(folder: Path) -> str | None:
    """The filesystem type of the mount holding `folder` (from /proc/mounts; None where that is not readable)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mount = parts[1].replace("\\040", " ")
            if (str(folder) == mount or str(folder).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind
