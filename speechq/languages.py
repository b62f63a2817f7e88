"""The languages a transcription may name: Whisper's language codes.

A transcription's `language` is OpenAI's field: "the language of the input audio in
ISO-639-1 format (e.g. en)". The table is Whisper's own (`LANGUAGES` in
openai/whisper's `whisper/tokenizer.py`, the codes faster-whisper accepts): ISO-639-1
codes, plus `haw` (Hawaiian) and `yue` (Cantonese) from ISO 639-3, and `jw`, Whisper's
code for Javanese (ISO-639-1 `jv`). A code matches in any case and is stored lower case.
Names ("english") and region subtags ("en-US") are refused at submit: the local Whisper
takes only the bare code (and OpenAI documents only that), so such a job would otherwise
be accepted and then fail in the worker.
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "UnknownLanguage", "parse_language"]

LANGUAGES: dict[str, str] = {
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "as": "Assamese",
    "az": "Azerbaijani",
    "ba": "Bashkir",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bo": "Tibetan",
    "br": "Breton",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fo": "Faroese",
    "fr": "French",
    "gl": "Galician",
    "gu": "Gujarati",
    "ha": "Hausa",
    "haw": "Hawaiian",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "ht": "Haitian Creole",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "jw": "Javanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "ko": "Korean",
    "la": "Latin",
    "lb": "Luxembourgish",
    "ln": "Lingala",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mg": "Malagasy",
    "mi": "Maori",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "mt": "Maltese",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "nn": "Norwegian Nynorsk",
    "no": "Norwegian",
    "oc": "Occitan",
    "pa": "Punjabi",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sa": "Sanskrit",
    "sd": "Sindhi",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sn": "Shona",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "su": "Sundanese",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "tg": "Tajik",
    "th": "Thai",
    "tk": "Turkmen",
    "tl": "Tagalog",
    "tr": "Turkish",
    "tt": "Tatar",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "yi": "Yiddish",
    "yo": "Yoruba",
    "yue": "Cantonese",
    "zh": "Chinese",
}


class UnknownLanguage(ValueError):
    """Not a language code Whisper knows; the message says what to send instead."""


def parse_language(value: str) -> str:
    """The code as stored (lower case); UnknownLanguage if Whisper does not know it."""
    code = value.strip().lower()
    if code in LANGUAGES:
        return code
    primary = code.replace("_", "-").split("-", 1)[0]
    hint = (
        f" Send '{primary}', without the region or script part."
        if primary != code and primary in LANGUAGES
        else ""
    )
    raise UnknownLanguage(
        f"'language' must be an ISO-639-1 code of a language Whisper knows, such as 'en', "
        f"'de' or 'zh'; '{value}' is not one.{hint} Leave it out to have the language "
        f"detected. Accepted codes: {', '.join(LANGUAGES)}."
    )
