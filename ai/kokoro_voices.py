"""Which languages Kokoro speaks, and with which voices. Pure data: no model imports.

Voice names follow Kokoro's convention: first letter the language, second the
gender (f/m). Every name was checked against Kokoro v1.0's 54 voices (the
voices file and kokoro-js 1.2.1 ship the same set). Languages absent here are
spoken by SeamlessM4T's own vocoder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KokoroLanguage:
    kokoro_lang: str
    """The language code kokoro-onnx takes (espeak-style, or a misaki G2P's)."""
    female: tuple[str, ...]
    male: tuple[str, ...]
    g2p: str = "espeak"
    """"espeak" (bundled with kokoro-onnx) or "misaki" where espeak garbles the language."""


KOKORO_LANGUAGES: dict[str, KokoroLanguage] = {
    "eng": KokoroLanguage(
        "en-us",
        # Best-rated first: casting hands voices out in this order.
        ("af_heart", "af_bella", "af_nicole", "af_sarah", "af_sky", "af_nova", "af_aoede",
         "af_kore", "af_alloy", "af_jessica", "af_river"),
        ("am_michael", "am_adam", "am_fenrir", "am_puck", "am_echo", "am_eric", "am_liam",
         "am_onyx", "am_santa"),
    ),
    "spa": KokoroLanguage("es", ("ef_dora",), ("em_alex", "em_santa")),
    "fra": KokoroLanguage("fr-fr", ("ff_siwis",), ()),
    "ita": KokoroLanguage("it", ("if_sara",), ("im_nicola",)),
    "por": KokoroLanguage("pt-br", ("pf_dora",), ("pm_alex", "pm_santa")),
    "hin": KokoroLanguage("hi", ("hf_alpha", "hf_beta"), ("hm_omega", "hm_psi")),
    "jpn": KokoroLanguage(
        "ja", ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro"), ("jm_kumo",), "misaki"
    ),
    "cmn": KokoroLanguage(
        "zh",
        ("zf_xiaobei", "zf_xiaoni", "zf_xiaoxiao", "zf_xiaoyi"),
        ("zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang"),
        "misaki",
    ),
}

BRITISH_ENGLISH = KokoroLanguage(
    "en-gb",
    ("bf_emma", "bf_isabella", "bf_alice", "bf_lily"),
    ("bm_george", "bm_lewis", "bm_daniel", "bm_fable"),
)
"""SeamlessM4T has one English; operators who prefer British voices select this table."""
