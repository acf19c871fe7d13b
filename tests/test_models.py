"""Model resolution, the offline start-up error, and the pinned test assets."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ai.models import (
    ASR,
    JA_DICTIONARY,
    KOKORO_MODEL,
    KOKORO_SHA256,
    KOKORO_VOICES,
    MODEL_SPECS,
    MT,
    SEAMLESS,
    SPEAKER,
    WHISPER_SHA256,
    AssetError,
    MissingModels,
    ModelSettings,
    TestAssets,
    add_model_arguments,
    resolve_all,
    sha256_of,
    verify_sha256,
)
from ai.warmup import warm_up

if TYPE_CHECKING:
    from ai.translator import SeamlessTranslator
    from ai.tts import KokoroTTS

REPO = Path(__file__).resolve().parents[1]
REQUIRED = [spec for spec in MODEL_SPECS if spec.required and "seamless" in spec.engines]
"""What the default engine needs."""


def offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BABBLEFISH_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), XDG_CACHE_HOME=str(home / "cache"))
    return env


def test_offline_start_with_nothing_lists_every_missing_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ai.models", "check"],
        capture_output=True, text=True, cwd=REPO, env=offline_env(tmp_path), timeout=120,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    for spec in REQUIRED:
        assert spec.title in done.stderr
        assert spec.source in done.stderr
        assert spec.flag in done.stderr and spec.env in done.stderr
    assert "--download-models" in done.stderr


def test_the_cascade_engine_needs_whisper_and_nllb_not_seamless(tmp_path: Path) -> None:
    with pytest.raises(MissingModels) as raised:
        resolve_all(ModelSettings(models_dir=tmp_path), engine="cascade")

    message = str(raised.value)
    assert "--asr-model" in message and "--mt-model" in message
    assert "Systran/faster-whisper-small" in message
    assert "facebook/nllb-200-distilled-600M" in message
    assert "--seamless-model" not in message


def test_an_asr_size_or_a_local_folder_picks_the_whisper_model(
    tmp_path: Path, test_assets: TestAssets, tiny_nllb_dir: Path
) -> None:
    paths = {KOKORO_MODEL.key: str(test_assets.kokoro_model),
             KOKORO_VOICES.key: str(test_assets.kokoro_voices), SPEAKER.key: str(tmp_path)}
    local = resolve_all(
        ModelSettings(paths={**paths, ASR.key: str(test_assets.whisper_base),
                             MT.key: str(tiny_nllb_dir)}), engine="cascade",
    )
    assert local.asr == test_assets.whisper_base and local.mt == tiny_nllb_dir
    assert local.seamless is None

    with pytest.raises(MissingModels) as raised:
        resolve_all(ModelSettings(models_dir=tmp_path, paths={**paths, ASR.key: "base"}),
                    engine="cascade")
    assert "faster-whisper-base" in str(raised.value)


def test_an_empty_models_dir_raises_one_error_naming_all(tmp_path: Path) -> None:
    with pytest.raises(MissingModels) as raised:
        resolve_all(ModelSettings(models_dir=tmp_path))

    assert len(raised.value.problems) == len(REQUIRED)
    assert str(tmp_path / "kokoro-v1.0.int8.onnx") in str(raised.value)


def test_local_copies_are_used_as_given(
    tmp_path: Path, test_assets: TestAssets, wespeaker_dir: Path
) -> None:
    seamless = tmp_path / "seamless"
    seamless.mkdir()
    settings = ModelSettings(paths={
        SEAMLESS.key: str(seamless),
        SPEAKER.key: str(wespeaker_dir),
        KOKORO_MODEL.key: str(test_assets.kokoro_model),
        KOKORO_VOICES.key: str(test_assets.kokoro_voices),
        JA_DICTIONARY.key: str(test_assets.ja_dictionary),
    })

    resolved = resolve_all(settings)

    assert resolved.seamless == seamless
    assert resolved.speaker == wespeaker_dir
    assert resolved.kokoro_model == test_assets.kokoro_model
    assert resolved.kokoro_voices == test_assets.kokoro_voices
    assert resolved.ja_dictionary == test_assets.ja_dictionary


def test_files_in_the_models_dir_are_found(tmp_path: Path, test_assets: TestAssets) -> None:
    for spec in (SEAMLESS, SPEAKER):
        (tmp_path / spec.local_name).mkdir()
        (tmp_path / spec.local_name / "config.json").write_text("{}")
    (tmp_path / KOKORO_MODEL.local_name).symlink_to(test_assets.kokoro_model.resolve())
    (tmp_path / KOKORO_VOICES.local_name).symlink_to(test_assets.kokoro_voices.resolve())

    resolved = resolve_all(ModelSettings(models_dir=tmp_path))

    assert resolved.seamless == tmp_path / SEAMLESS.local_name
    assert resolved.kokoro_model == tmp_path / KOKORO_MODEL.local_name


def test_a_local_path_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(MissingModels) as raised:
        resolve_all(ModelSettings(models_dir=tmp_path, paths={KOKORO_MODEL.key: str(missing)}))

    assert f"{missing} does not exist" in str(raised.value)


def test_flags_win_over_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(["--kokoro-model", "/flag/model.onnx", "--models-dir", "/flag/dir"])
    environ = {
        KOKORO_MODEL.env: "/env/model.onnx",
        KOKORO_VOICES.env: "/env/voices.bin",
        "BABBLEFISH_MODELS_DIR": "/env/dir",
    }

    settings = ModelSettings.from_args(args, environ)

    assert settings.paths[KOKORO_MODEL.key] == "/flag/model.onnx"
    assert settings.paths[KOKORO_VOICES.key] == "/env/voices.bin"
    assert settings.models_dir == Path("/flag/dir")


@pytest.mark.slow
def test_test_assets_are_the_pinned_files(test_assets: TestAssets) -> None:
    assert sha256_of(test_assets.kokoro_model) == KOKORO_SHA256
    assert sha256_of(test_assets.whisper_base / "model.bin") == WHISPER_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (test_assets.whisper_base / name).stat().st_size > 0
    import numpy as np

    voices = np.load(test_assets.kokoro_voices)
    assert len(voices.files) == 54
    assert voices["af_heart"].shape == (510, 1, 256)


def test_a_file_that_is_not_the_pinned_one_is_refused_and_removed(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")

    with pytest.raises(AssetError, match="SHA-256"):
        verify_sha256(fake, KOKORO_SHA256, "Kokoro model")
    assert not fake.exists()


@pytest.mark.slow
async def test_warm_up_runs_every_engine_once(
    wespeaker_dir: Path, kokoro_tts: KokoroTTS, seamless_translator: SeamlessTranslator
) -> None:
    from ai.voiceprint import PyannoteEmbedder

    embedder = PyannoteEmbedder(wespeaker_dir)
    try:
        took = await warm_up(embedder=embedder, translator=seamless_translator, tts=kokoro_tts)
    finally:
        embedder.close()

    spoken = {f"tts:{lang}" for lang in kokoro_tts.languages}
    assert set(took) == {"voiceprint", "translator"} | spoken
    assert "tts:jpn" in took and "tts:cmn" in took
