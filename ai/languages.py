"""Every language BabbleFish knows, keyed by SeamlessM4T's three-letter codes.

The table holds what SeamlessM4T v2 can do with each language, and the code
each other engine uses for it: Whisper's ISO 639-1 code (the cascade engine's
ears) and NLLB-200's Flores-200 code (its text translator). Whether Kokoro can
speak it is a fact of the TTS engine (`ai.tts.KOKORO_LANGUAGES`) and is merged
in by whoever reports capabilities, so this module stays pure data.
`tests/test_languages.py` checks these codes against each engine's own list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Language:
    code: str
    name: str
    speech_in: bool = True
    text_out: bool = True
    seamless_speech_out: bool = False
    whisper: str | None = None
    """Whisper's code, where Whisper hears it; None where it does not."""
    flores: str | None = None
    """NLLB-200's Flores-200 code (language_Script)."""


_SPEECH_OUT = {
    "arb", "ben", "cat", "ces", "cmn", "cym", "dan", "deu", "eng", "est", "fin",
    "fra", "hin", "ind", "ita", "jpn", "kor", "mlt", "nld", "pes", "pol", "por",
    "ron", "rus", "slk", "spa", "swe", "swh", "tel", "tgl", "tha", "tur", "ukr",
    "urd", "uzn", "vie",
}

_TEXT_LANGUAGES = {
    "afr": "Afrikaans", "amh": "Amharic", "arb": "Arabic", "ary": "Moroccan Arabic",
    "arz": "Egyptian Arabic", "asm": "Assamese", "azj": "Azerbaijani", "bel": "Belarusian",
    "ben": "Bengali", "bos": "Bosnian", "bul": "Bulgarian", "cat": "Catalan",
    "ceb": "Cebuano", "ces": "Czech", "ckb": "Central Kurdish", "cmn": "Chinese (Mandarin)",
    "cmn_Hant": "Chinese (Traditional)", "cym": "Welsh", "dan": "Danish", "deu": "German",
    "ell": "Greek", "eng": "English", "est": "Estonian", "eus": "Basque", "fin": "Finnish",
    "fra": "French", "fuv": "Nigerian Fulfulde", "gaz": "Oromo", "gle": "Irish",
    "glg": "Galician", "guj": "Gujarati", "heb": "Hebrew", "hin": "Hindi", "hrv": "Croatian",
    "hun": "Hungarian", "hye": "Armenian", "ibo": "Igbo", "ind": "Indonesian",
    "isl": "Icelandic", "ita": "Italian", "jav": "Javanese", "jpn": "Japanese",
    "kan": "Kannada", "kat": "Georgian", "kaz": "Kazakh", "khk": "Mongolian", "khm": "Khmer",
    "kir": "Kyrgyz", "kor": "Korean", "lao": "Lao", "lit": "Lithuanian", "lug": "Ganda",
    "luo": "Luo", "lvs": "Latvian", "mai": "Maithili", "mal": "Malayalam", "mar": "Marathi",
    "mkd": "Macedonian", "mlt": "Maltese", "mni": "Manipuri", "mya": "Burmese",
    "nld": "Dutch", "nno": "Norwegian Nynorsk", "nob": "Norwegian Bokmål", "npi": "Nepali",
    "nya": "Nyanja", "ory": "Odia", "pan": "Punjabi", "pbt": "Pashto", "pes": "Persian",
    "pol": "Polish", "por": "Portuguese", "ron": "Romanian", "rus": "Russian",
    "slk": "Slovak", "slv": "Slovenian", "sna": "Shona", "snd": "Sindhi", "som": "Somali",
    "spa": "Spanish", "srp": "Serbian", "swe": "Swedish", "swh": "Swahili", "tam": "Tamil",
    "tel": "Telugu", "tgk": "Tajik", "tgl": "Tagalog", "tha": "Thai", "tur": "Turkish",
    "ukr": "Ukrainian", "urd": "Urdu", "uzn": "Uzbek", "vie": "Vietnamese", "yor": "Yoruba",
    "yue": "Cantonese", "zlm": "Malay", "zul": "Zulu",
}

# Heard and transcribed into another language, but never written or spoken.
_SPEECH_IN_ONLY = {
    "ast": "Asturian", "kam": "Kamba", "kea": "Kabuverdianu", "lin": "Lingala",
    "ltz": "Luxembourgish", "oci": "Occitan", "xho": "Xhosa",
}

# Whisper names a macrolanguage or the standard variety: Standard Arabic is "ar",
# Mandarin "zh", Iranian Persian "fa". Where Whisper has one code for several of
# ours (Arabic dialects, the two Chinese scripts), only the standard one gets it,
# so a detected Whisper code maps back to exactly one language.
_WHISPER = {
    "afr": "af", "amh": "am", "arb": "ar", "asm": "as", "azj": "az", "bel": "be",
    "ben": "bn", "bos": "bs", "bul": "bg", "cat": "ca", "ces": "cs", "cmn": "zh",
    "cym": "cy", "dan": "da", "deu": "de", "ell": "el", "eng": "en", "est": "et",
    "eus": "eu", "fin": "fi", "fra": "fr", "glg": "gl", "guj": "gu", "heb": "he",
    "hin": "hi", "hrv": "hr", "hun": "hu", "hye": "hy", "ind": "id", "isl": "is",
    "ita": "it", "jav": "jw", "jpn": "ja", "kan": "kn", "kat": "ka", "kaz": "kk",
    "khk": "mn", "khm": "km", "kor": "ko", "lao": "lo", "lit": "lt", "lvs": "lv",
    "mal": "ml", "mar": "mr", "mkd": "mk", "mlt": "mt", "mya": "my", "nld": "nl",
    "nno": "nn", "nob": "no", "npi": "ne", "pan": "pa", "pbt": "ps", "pes": "fa",
    "pol": "pl", "por": "pt", "ron": "ro", "rus": "ru", "slk": "sk", "slv": "sl",
    "sna": "sn", "snd": "sd", "som": "so", "spa": "es", "srp": "sr", "swe": "sv",
    "swh": "sw", "tam": "ta", "tel": "te", "tgk": "tg", "tgl": "tl", "tha": "th",
    "tur": "tr", "ukr": "uk", "urd": "ur", "uzn": "uz", "vie": "vi", "yor": "yo",
    "yue": "yue", "zlm": "ms", "lin": "ln", "ltz": "lb", "oci": "oc",
}

# Flores-200 is our code plus its script, except where NLLB names a language differently.
_FLORES_SCRIPT = {
    "amh": "Ethi", "arb": "Arab", "ary": "Arab", "arz": "Arab", "asm": "Beng",
    "bel": "Cyrl", "ben": "Beng", "bul": "Cyrl", "ckb": "Arab", "ell": "Grek",
    "guj": "Gujr", "heb": "Hebr", "hin": "Deva", "hye": "Armn", "jpn": "Jpan",
    "kan": "Knda", "kat": "Geor", "kaz": "Cyrl", "khk": "Cyrl", "khm": "Khmr",
    "kir": "Cyrl", "kor": "Hang", "lao": "Laoo", "mai": "Deva", "mal": "Mlym",
    "mar": "Deva", "mkd": "Cyrl", "mni": "Beng", "mya": "Mymr", "npi": "Deva",
    "ory": "Orya", "pan": "Guru", "pbt": "Arab", "pes": "Arab", "rus": "Cyrl",
    "snd": "Arab", "srp": "Cyrl", "tam": "Taml", "tel": "Telu", "tgk": "Cyrl",
    "tha": "Thai", "ukr": "Cyrl", "urd": "Arab", "yue": "Hant",
}
_FLORES_RENAMED = {"cmn": "zho_Hans", "cmn_Hant": "zho_Hant", "zlm": "zsm_Latn"}


def _flores(code: str) -> str:
    return _FLORES_RENAMED.get(code) or f"{code}_{_FLORES_SCRIPT.get(code, 'Latn')}"


def _language(code: str, name: str, **can: bool) -> Language:
    return Language(code, name, whisper=_WHISPER.get(code), flores=_flores(code), **can)


LANGUAGES: dict[str, Language] = {
    **{
        code: _language(code, name, seamless_speech_out=code in _SPEECH_OUT)
        for code, name in _TEXT_LANGUAGES.items()
    },
    **{code: _language(code, name, text_out=False) for code, name in _SPEECH_IN_ONLY.items()},
}

BY_WHISPER: dict[str, str] = {
    lang.whisper: code for code, lang in LANGUAGES.items() if lang.whisper is not None
}
"""Whisper's code -> ours."""


def is_known(code: str) -> bool:
    return code in LANGUAGES


def listenable(code: str) -> bool:
    """A listener can pick it: we can at least caption in it."""
    lang = LANGUAGES.get(code)
    return lang is not None and lang.text_out
