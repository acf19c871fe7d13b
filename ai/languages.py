"""Every language BabbleFish knows, keyed by SeamlessM4T's three-letter codes.

The table holds what SeamlessM4T v2 can do with each language. Whether Kokoro
can speak it is a fact of the TTS engine (`ai.tts.KOKORO_LANGUAGES`) and is
merged in by whoever reports capabilities, so this module stays pure data.
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

LANGUAGES: dict[str, Language] = {
    **{
        code: Language(code, name, seamless_speech_out=code in _SPEECH_OUT)
        for code, name in _TEXT_LANGUAGES.items()
    },
    **{code: Language(code, name, text_out=False) for code, name in _SPEECH_IN_ONLY.items()},
}


def is_known(code: str) -> bool:
    return code in LANGUAGES


def listenable(code: str) -> bool:
    """A listener can pick it: we can at least caption in it."""
    lang = LANGUAGES.get(code)
    return lang is not None and lang.text_out
