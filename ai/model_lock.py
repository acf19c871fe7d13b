"""Checking downloaded model files, and the lock file that keeps later downloads the same.

Every file a download brings is checked against the first of these that knows it:

1. a SHA-256 pinned in the code (`ModelSpec.digests`);
2. the lock file (`models.lock.json`) written by an earlier download, here or on the
   machine it was copied from;
3. what the Hugging Face Hub reports for that revision: the SHA-256 of large (LFS) files,
   the git blob id of small ones.

A file that matches none is deleted and named in a `ChecksumMismatch`, so a retry fetches
it again. After a good download the lock records, per model, the revision (a commit) and
the SHA-256 of each file; a model whose code pins no revision is then fetched at the
locked one, so an operator pins every model by keeping (or copying) that one file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_NAME = "models.lock.json"
LOCK_VERSION = 1


class ChecksumMismatch(ValueError):
    """A downloaded file is not the one expected; the message names it and both digests."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file as the hub describes it at one revision."""

    name: str
    sha256: str | None = None
    """Set for LFS files (the weights)."""
    git_blob: str | None = None
    """The git blob id (SHA-1 of "blob <size>\\0" + content), for files kept in git."""


@dataclass(frozen=True, slots=True)
class LockedModel:
    source: str
    revision: str | None
    """A commit of a hub repository; None for a single-file download (a URL)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """File name (relative to the model's folder) -> SHA-256."""


@dataclass(slots=True)
class ModelsLock:
    """`models.lock.json`: what was downloaded, per model source."""

    path: Path
    models: dict[str, LockedModel] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModelsLock:
        """The lock at `path`, empty if there is none; a damaged one is an error, not ignored."""
        if not path.is_file():
            return cls(path)
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != LOCK_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {LOCK_VERSION}")
            models = {
                source: LockedModel(source, entry.get("revision"), dict(entry["files"]))
                for source, entry in raw["models"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ChecksumMismatch(
                f"{path} is not a readable models lock ({error}); fix or delete it"
            ) from error
        return cls(path, models)

    def get(self, source: str) -> LockedModel | None:
        return self.models.get(source)

    def record(self, model: LockedModel) -> None:
        self.models[model.source] = model
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".part")
        partial.write_text(json.dumps(self._as_json(), indent=2, sort_keys=True) + "\n")
        partial.replace(self.path)

    def _as_json(self) -> dict[str, Any]:
        return {
            "version": LOCK_VERSION,
            "models": {
                source: {"revision": model.revision, "files": dict(sorted(model.files.items()))}
                for source, model in self.models.items()
            },
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The id git (and so the hub) gives a file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def remote_files(siblings: Iterable[Any]) -> dict[str, RemoteFile]:
    """The hub's `RepoSibling`s (from `model_info(..., files_metadata=True)`) by file name."""
    files = {}
    for sibling in siblings:
        lfs = getattr(sibling, "lfs", None)
        files[sibling.rfilename] = RemoteFile(
            sibling.rfilename,
            sha256=lfs.sha256 if lfs is not None else None,
            git_blob=None if lfs is not None else getattr(sibling, "blob_id", None),
        )
    return files


def verify_files(
    folder: Path,
    names: Iterable[str],
    *,
    pinned: Mapping[str, str] | None = None,
    locked: LockedModel | None = None,
    remote: Mapping[str, RemoteFile] | None = None,
    what: str,
) -> dict[str, str]:
    """SHA-256 of each of `names` under `folder`, each checked against the first source
    that knows it (pinned, then locked, then the hub's report). A file that fails is
    deleted and the `ChecksumMismatch` names it; a pinned or locked file that is absent
    fails too."""
    pinned, remote = pinned or {}, remote or {}
    names = sorted(set(names) | set(pinned) | (set(locked.files) if locked else set()))
    digests = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ChecksumMismatch(f"{what}: {name} was expected but not downloaded")
        actual = sha256_of(path)
        expected, against = _expected(name, pinned, locked)
        if expected is None and name in remote:
            expected, against = _remote_expectation(path, remote[name], actual)
        if expected is not None and actual != expected:
            _discard(path)
            raise ChecksumMismatch(
                f"{what}: {name} has SHA-256 {actual}, but {against} says {expected}; "
                "the file was deleted, so a new download fetches it again"
            )
        digests[name] = actual
    return digests


def _expected(
    name: str, pinned: Mapping[str, str], locked: LockedModel | None
) -> tuple[str | None, str]:
    if name in pinned:
        return pinned[name], "the digest pinned in ai/models.py"
    if locked is not None and name in locked.files:
        return locked.files[name], f"the lock file (revision {locked.revision})"
    return None, ""


def _remote_expectation(path: Path, remote: RemoteFile, actual: str) -> tuple[str | None, str]:
    if remote.sha256 is not None:
        return remote.sha256, "the Hugging Face Hub"
    if remote.git_blob is not None and git_blob_id(path) != remote.git_blob:
        # Report in SHA-256 terms like every other mismatch; the blob id is what differed.
        return f"(a file whose git blob id is {remote.git_blob})", "the Hugging Face Hub"
    return None, ""


def _discard(path: Path) -> None:
    """Deletes a bad file, and the cache blob behind it when it is a symlink into one."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)
