"""Make `import torchaudio` work next to a torch build its native library does not match.

pyannote.audio pulls in a torchaudio wheel built for CUDA. Next to a CPU torch
its native extension fails to load, and because torchaudio loads it on import,
`import torchaudio` raises, and with it `import pyannote.audio` and the audio
helpers of transformers. What those libraries use from torchaudio (Kaldi
fbank, resampling, MFCC) is pure torch and needs no extension, so when the
extension fails we import torchaudio again with a stand-in for its
`_extension` module that reports "no extension", exactly as a torchaudio
built without one does.

Every engine module that imports pyannote or transformers calls
`ensure_torchaudio()` first. Where the real extension loads, nothing changes.
"""

from __future__ import annotations

import sys
import types

_EXTENSION = "torchaudio._extension"


def ensure_torchaudio() -> bool:
    """Import torchaudio; returns True if its native extension is in use.

    Raises ImportError if torchaudio cannot be imported even without it.
    """
    try:
        import torchaudio
    except OSError:
        _forget_torchaudio()
        sys.modules[_EXTENSION] = _extension_stand_in()
        import torchaudio  # noqa: F401
    return bool(sys.modules[_EXTENSION].__dict__.get("_IS_TORCHAUDIO_EXT_AVAILABLE"))


def _forget_torchaudio() -> None:
    """Drop the half-imported package so the next import starts clean."""
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]


def _extension_stand_in() -> types.ModuleType:
    """The names torchaudio's own modules import from `_extension`, as in a build without it."""

    def fail_if_no_align(func: object) -> object:
        def unavailable(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(
                "torchaudio's forced alignment needs its native extension, which does not "
                "load with this torch build"
            )

        return unavailable

    module = types.ModuleType(_EXTENSION)
    module.__dict__.update(
        _IS_TORCHAUDIO_EXT_AVAILABLE=False,
        _IS_ALIGN_AVAILABLE=False,
        fail_if_no_align=fail_if_no_align,
        _check_cuda_version=lambda: None,
    )
    return module
