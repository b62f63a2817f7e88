"""Guardrails: checks on speech input (and transcripts) that can block or mask text.

Configured by the config file's top-level `guardrails:` list (see docs/guardrails.md):
`denylist` (words and regexes), `pii` (e-mail, phone, card, US SSN, IBAN) and `http` (a
moderation service). Each entry blocks the text, masks it or lets it through; entries run
in config order, each on the text the one before returned.

Exceptions::

    GuardrailViolation            a guardrail refused the text: 400 `guardrail_violation`
    └── GuardrailUnavailable      an `http` guardrail with `on_error: block` got no answer

A bad `guardrails:` entry raises `speechq.registry.ConfigError`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import httpx

from speechq.registry import ConfigError, _resolve_env

__all__ = [
    "INPUT",
    "OUTPUT",
    "STAGES",
    "PII_ENTITIES",
    "GuardrailViolation",
    "GuardrailUnavailable",
    "GuardrailResult",
    "Inspection",
    "Guardrail",
    "DenylistGuardrail",
    "PiiGuardrail",
    "HttpGuardrail",
    "Guardrails",
    "parse_guardrails",
]

log = logging.getLogger(__name__)

INPUT = "input"
OUTPUT = "output"
STAGES = (INPUT, OUTPUT)
BLOCK = "block"
MASK = "mask"
ALLOW = "allow"

PII_ENTITIES = ("email", "phone", "credit_card", "us_ssn", "iban")
PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CARD]",
    "us_ssn": "[SSN]",
    "iban": "[IBAN]",
    "denylist": "[REDACTED]",
}
_DESCRIPTIONS = {
    "email": "an e-mail address",
    "phone": "a phone number",
    "credit_card": "a card number",
    "us_ssn": "a US social security number",
    "iban": "an IBAN",
}


class GuardrailViolation(Exception):
    """A guardrail refused the text; render as 400 `guardrail_violation` with `param`."""

    code = "guardrail_violation"

    def __init__(self, guardrail_name: str, param: str, message: str) -> None:
        super().__init__(message)
        self.guardrail_name = guardrail_name
        self.param = param
        self.message = message


class GuardrailUnavailable(GuardrailViolation):
    """An `http` guardrail with `on_error: block` could not get a usable answer."""


@dataclass(frozen=True)
class GuardrailResult:
    """What `Guardrails.check` let through.

    `text` is the text to use from now on (and to bill); `ran` names the guardrails that
    looked at it, `masked` those that changed it, `failed_open` the `http` guardrails whose
    service failed while `on_error: allow`; `entities` counts masked findings by kind
    (`email`, `credit_card`, ..., `denylist`), never their values.
    """

    text: str
    ran: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    failed_open: tuple[str, ...] = ()
    entities: Mapping[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.masked)


@dataclass(frozen=True)
class Inspection:
    """One guardrail's answer: the text to pass on, and what it masked."""

    text: str
    entities: Mapping[str, int] = field(default_factory=dict)
    failed_open: bool = False


class Guardrail(ABC):
    """One configured guardrail. Subclasses implement `inspect`, which returns the text
    to pass on or raises `GuardrailViolation`; selection is the same for every kind."""

    type: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        *,
        default_on: bool = True,
        models: Iterable[str] | None = None,
        apply_to: Iterable[str] = (INPUT,),
    ) -> None:
        self.name = name
        self.default_on = default_on
        self.models = frozenset(models) if models is not None else None
        self.apply_to = frozenset(apply_to)

    def applies(self, *, model: str, selected: Iterable[str] = (), stage: str = INPUT) -> bool:
        """True if this guardrail runs for `model` at `stage` with these opted-in names."""
        if stage not in self.apply_to:
            return False
        if self.models is not None and model not in self.models:
            return False
        return self.default_on or self.name in set(selected)

    @abstractmethod
    def inspect(self, text: str, *, model: str, param: str, stage: str) -> Inspection:
        """What this guardrail finds in `text`: allow, mask (new text) or block."""

    def close(self) -> None:  # noqa: B027 - optional hook, most guardrails hold nothing
        """Release what the guardrail holds (an owned HTTP client)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _blocked(guardrail: str, param: str, stage: str, why: str, advice: str) -> GuardrailViolation:
    if stage == OUTPUT:
        message = (
            f"The transcript was blocked by guardrail '{guardrail}': {why}. "
            "The transcript cannot be returned."
        )
    else:
        message = f"The '{param}' field was blocked by guardrail '{guardrail}': {why}. {advice}"
    return GuardrailViolation(guardrail, param, message)


class _Span(NamedTuple):
    start: int
    end: int
    entity: str
    hint: str = ""  # safe to show: the last four digits of a card, nothing else


def _merge(spans: Iterable[_Span]) -> list[_Span]:
    """Non-overlapping spans, left to right; at one start the longest wins, then the
    entity listed first in PII_ENTITIES (spans it overlaps are dropped)."""
    rank = {name: i for i, name in enumerate((*PII_ENTITIES, "denylist"))}
    kept: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, s.start - s.end, rank.get(s.entity, 99))):
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def _replace(text: str, spans: Sequence[_Span]) -> str:
    out: list[str] = []
    position = 0
    for span in spans:
        out.append(text[position : span.start])
        out.append(PLACEHOLDERS[span.entity])
        position = span.end
    out.append(text[position:])
    return "".join(out)


# --- denylist -----------------------------------------------------------------------------


def _is_word_char(ch: str) -> bool:
    # Python's \w leaves out combining marks (U+0301, Devanagari vowel signs, ...); a word
    # followed by one is not a whole word.
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


class _FoldedText:
    """`text.casefold()` with a map back to the original positions (ß folds to ss)."""

    def __init__(self, text: str) -> None:
        folded = text.casefold()
        self.index: list[int] | None = None
        if len(folded) != len(text):  # some character folded to several
            parts: list[str] = []
            index: list[int] = []
            for position, ch in enumerate(text):
                piece = ch.casefold()
                parts.append(piece)
                index.extend([position] * len(piece))
            folded = "".join(parts)
            self.index = index
        self.folded = folded

    def original(self, start: int, end: int) -> tuple[int, int]:
        if self.index is None:
            return start, end
        return self.index[start], self.index[end - 1] + 1


def _fold_word(word: str) -> str:
    return unicodedata.normalize("NFC", word).casefold()


class DenylistGuardrail(Guardrail):
    """Denied words (whole words, any case, Unicode) and regexes (case-insensitive)."""

    type = "denylist"

    def __init__(
        self,
        name: str,
        *,
        words: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
        mode: str = BLOCK,
        **selection: Any,
    ) -> None:
        super().__init__(name, **selection)
        self.mode = mode
        folded = sorted({_fold_word(w).strip() for w in words} - {""}, key=len, reverse=True)
        alternatives = [r"\s+".join(re.escape(part) for part in w.split()) for w in folded]
        self._words = (
            re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)") if folded else None
        )
        self._patterns = tuple(
            p if isinstance(p, re.Pattern) else re.compile(p, re.IGNORECASE) for p in patterns
        )

    def find(self, text: str) -> list[_Span]:
        """Denied words and pattern matches in `text` (expected in NFC)."""
        spans: list[_Span] = []
        if self._words is not None:
            folded = _FoldedText(text)
            for match in self._words.finditer(folded.folded):
                before = folded.folded[match.start() - 1] if match.start() else ""
                after = folded.folded[match.end()] if match.end() < len(folded.folded) else ""
                if (before and _is_word_char(before)) or (after and _is_word_char(after)):
                    continue
                spans.append(_Span(*folded.original(match.start(), match.end()), "denylist", "w"))
        for pattern in self._patterns:
            spans.extend(
                _Span(m.start(), m.end(), "denylist", "p")
                for m in pattern.finditer(text)
                if m.end() > m.start()
            )
        return _merge(spans)

    def inspect(self, text: str, *, model: str, param: str, stage: str) -> Inspection:
        normalized = unicodedata.normalize("NFC", text)
        spans = self.find(normalized)
        if not spans:
            return Inspection(text)
        if self.mode == MASK:
            return Inspection(_replace(normalized, spans), {"denylist": len(spans)})
        first = spans[0]
        what = "a denied word or phrase" if first.hint == "w" else "text matching a denied pattern"
        more = f" (and {len(spans) - 1} more)" if len(spans) > 1 else ""
        raise _blocked(
            self.name,
            param,
            stage,
            f"it contains {what} at character {first.start + 1}{more}",
            "Remove or rephrase it and try again.",
        )


# --- PII ----------------------------------------------------------------------------------

# Local part, @, dot-separated labels, an alphabetic TLD. The lookbehind anchors a match at
# the start of a run of local-part characters, which keeps the scan linear.
_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]+@(?:[^\W_][\w-]*\.)+[^\W\d_]{2,}")

_SEP = r"[ .\-/\u00a0]"
# "+" or "00", a country code and digit groups; "(0)" and "(20)" style groups allowed.
_PHONE_INTL = re.compile(
    r"(?<![\w+])(?P<prefix>\+|00)(?P<body>[1-9]\d*"
    r"(?:(?:[ .\-/\u00a0]|[ \u00a0]?\(\d{1,4}\)[ \u00a0]?)\d+)*)(?!\w)"
)
# NANP: optional +1/1, area code and exchange that do not start with 0 or 1, 3-3-4.
_PHONE_NANP = re.compile(
    r"(?<![\w+])(?:\+?1[ .\-\u00a0]?)?(?:\([2-9]\d{2}\)[ \u00a0]?|[2-9]\d{2}[ .\-\u00a0])"
    r"[2-9]\d{2}[ .\-\u00a0]\d{4}(?!\w)"
)
# European national format: trunk 0, an area code, then groups with one kind of separator.
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+])(?:0[1-9]\d{0,4}|\(0[1-9]\d{0,4}\))(?P<sep>[ .\-/\u00a0])\d{2,8}"
    r"(?:(?P=sep)\d{2,8}){0,4}(?!\w)"
)
_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*(?!\d)")
_DIGIT_GROUP = re.compile(r"\d+")
_SSN = re.compile(
    r"(?<![\w-])(?!000|666|9)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}(?![\w-])"
)
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")

# IBAN lengths by country, from SWIFT's IBAN registry.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip


class _LuhnSums:
    """Prefix sums that answer "is digits[a:b] Luhn-valid?" in constant time."""

    def __init__(self, digits: str) -> None:
        # plain[p][k] / doubled[p][k]: the sum over indexes < k of parity p of each digit,
        # as is or Luhn-doubled. In digits[a:b] the digits at indexes of b's parity double.
        self.plain = ([0], [0])
        self.doubled = ([0], [0])
        for k, ch in enumerate(digits):
            value = int(ch)
            twice = value * 2 - 9 if value > 4 else value * 2
            for parity in (0, 1):
                hit = k % 2 == parity
                self.plain[parity].append(self.plain[parity][-1] + (value if hit else 0))
                self.doubled[parity].append(self.doubled[parity][-1] + (twice if hit else 0))

    def valid(self, a: int, b: int) -> bool:
        p = b % 2
        total = (
            self.doubled[p][b] - self.doubled[p][a] + self.plain[1 - p][b] - self.plain[1 - p][a]
        )
        return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _find_emails(text: str) -> Iterable[_Span]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        yield _Span(match.start(), match.end(), "email")


def _find_phones(text: str) -> Iterable[_Span]:
    for match in _PHONE_INTL.finditer(text):
        body = match["body"].replace("(0)", "")
        digits = sum(ch.isdigit() for ch in body)
        has_separator = any(not ch.isdigit() for ch in body)
        # "00" is also how order numbers start: ask for a separator there.
        if 8 <= digits <= 15 and (match["prefix"] == "+" or has_separator):
            yield _Span(match.start(), match.end(), "phone")
    for match in _PHONE_NANP.finditer(text):
        yield _Span(match.start(), match.end(), "phone")
    for match in _PHONE_NATIONAL.finditer(text):
        if 9 <= sum(ch.isdigit() for ch in match[0]) <= 12:
            yield _Span(match.start(), match.end(), "phone")


def _find_cards(text: str) -> Iterable[_Span]:
    """Luhn-valid 13-19 digit numbers, written whole or in groups split by one space or
    dash; windows of whole groups are tried, never a slice of a group."""
    for run in _DIGIT_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        digits = "".join(text[start:end] for start, end in groups)
        offsets = [0]
        for start, end in groups:
            offsets.append(offsets[-1] + end - start)
        luhn = _LuhnSums(digits)
        i = 0
        while i < len(groups):
            best = None  # the longest valid window starting at group i
            for j in range(i, len(groups)):
                length = offsets[j + 1] - offsets[i]
                if length > 19:
                    break
                if length >= 13 and luhn.valid(offsets[i], offsets[j + 1]):
                    best = j
            if best is None:
                i += 1
                continue
            last4 = digits[offsets[best + 1] - 4 : offsets[best + 1]]
            yield _Span(groups[i][0], groups[best][1], "credit_card", last4)
            i = best + 1


def _find_ssns(text: str) -> Iterable[_Span]:
    for match in _SSN.finditer(text):
        yield _Span(match.start(), match.end(), "us_ssn")


def _find_ibans(text: str) -> Iterable[_Span]:
    for match in _IBAN_START.finditer(text):
        country = match[0][:2].upper()
        length = _IBAN_LENGTHS.get(country)
        if length is None:
            continue
        chars = [match[0].upper()]
        need = length - 4
        position = match.end()
        while need and position < len(text):
            ch = text[position]
            if ch.isascii() and ch.isalnum():
                chars.append(ch.upper())
                need -= 1
                position += 1
            elif (
                ch == " "
                and text[position + 1 : position + 2].isascii()
                and (text[position + 1 : position + 2].isalnum())
            ):
                position += 1
            else:
                break
        if need:
            continue
        if position < len(text) and text[position].isascii() and text[position].isalnum():
            continue  # part of a longer token
        if _iban_valid("".join(chars)):
            yield _Span(match.start(), position, "iban")


_FINDERS: dict[str, Callable[[str], Iterable[_Span]]] = {
    "email": _find_emails,
    "phone": _find_phones,
    "credit_card": _find_cards,
    "us_ssn": _find_ssns,
    "iban": _find_ibans,
}


def _describe(span: _Span) -> str:
    what = _DESCRIPTIONS[span.entity]
    if span.entity == "credit_card":
        what += f" ending in {span.hint}"
    return f"{what} at character {span.start + 1}"


class PiiGuardrail(Guardrail):
    """Personal data: e-mail, phone, card (Luhn), US SSN, IBAN (mod 97)."""

    type = "pii"

    def __init__(
        self,
        name: str,
        *,
        entities: Iterable[str] = PII_ENTITIES,
        mode: str = BLOCK,
        **selection: Any,
    ) -> None:
        super().__init__(name, **selection)
        self.entities = tuple(e for e in PII_ENTITIES if e in set(entities))
        self.mode = mode

    def find(self, text: str) -> list[_Span]:
        spans: list[_Span] = []
        for entity in self.entities:
            spans.extend(_FINDERS[entity](text))
        return _merge(spans)

    def mask(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with every finding replaced by its placeholder. Masking runs again on its
        own output until nothing is found, so a finding hidden behind an overlapping one is
        caught too; each round removes digits or an @, so it ends."""
        counts: Counter[str] = Counter()
        while spans := self.find(text):
            text = _replace(text, spans)
            counts.update(span.entity for span in spans)
        return text, counts

    def inspect(self, text: str, *, model: str, param: str, stage: str) -> Inspection:
        if self.mode == MASK:
            masked, counts = self.mask(text)
            return Inspection(masked, dict(counts))
        spans = self.find(text)
        if not spans:
            return Inspection(text)
        listed = ", ".join(_describe(span) for span in spans[:3])
        more = f" (and {len(spans) - 3} more)" if len(spans) > 3 else ""
        raise _blocked(
            self.name,
            param,
            stage,
            f"it contains personal data: {listed}{more}",
            "Remove it and try again.",
        )


# --- HTTP ---------------------------------------------------------------------------------


class HttpGuardrail(Guardrail):
    """Asks a moderation service: POST {"text", "model", "param", "stage"}, answer
    {"action": "allow" | "deny" | "rewrite", "text"?, "reason"?}."""

    type = "http"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        api_key: str | None = None,
        timeout_seconds: float = 2.0,
        on_error: str = BLOCK,
        client: httpx.Client | None = None,
        **selection: Any,
    ) -> None:
        super().__init__(name, **selection)
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.on_error = on_error
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client()

    def inspect(self, text: str, *, model: str, param: str, stage: str) -> Inspection:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        payload = {"text": text, "model": model, "param": param, "stage": stage}
        try:
            response = self._client.post(
                self.url, json=payload, headers=headers, timeout=self.timeout_seconds
            )
        except httpx.TimeoutException:
            return self._failed(
                text,
                f"the check service did not answer within {self.timeout_seconds:g} s",
                param,
                stage,
            )
        except httpx.HTTPError as exc:
            return self._failed(
                text, f"the check service could not be reached ({type(exc).__name__})", param, stage
            )
        if not response.is_success:
            return self._failed(
                text, f"the check service answered HTTP {response.status_code}", param, stage
            )
        try:
            answer = response.json()
        except ValueError:
            return self._failed(text, "the check service did not answer with JSON", param, stage)
        action = answer.get("action") if isinstance(answer, dict) else None
        if action == "allow":
            return Inspection(text)
        if action == "rewrite" and isinstance(answer.get("text"), str):
            return Inspection(answer["text"])
        if action == "deny":
            reason = answer.get("reason")
            reason = reason.strip()[:300] if isinstance(reason, str) and reason.strip() else ""
            raise _blocked(
                self.name,
                param,
                stage,
                reason.rstrip(".") or "the moderation service denied it",
                "Change the text and try again.",
            )
        return self._failed(
            text,
            "the check service gave an answer that is not allow, deny or rewrite",
            param,
            stage,
        )

    def _failed(self, text: str, what: str, param: str, stage: str) -> Inspection:
        # Never log the text, the answer body or the key: only what went wrong.
        if self.on_error == ALLOW:
            log.warning("guardrail %r failed open: %s", self.name, what)
            return Inspection(text, failed_open=True)
        log.warning("guardrail %r failed closed: %s", self.name, what)
        subject = "The transcript" if stage == OUTPUT else f"The '{param}' field"
        raise GuardrailUnavailable(
            self.name,
            param,
            f"{subject} could not be checked by guardrail '{self.name}': {what}, and this "
            "guardrail refuses what it cannot check. Try again later.",
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"<HttpGuardrail {self.name!r} url={self.url!r}>"


# --- the set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guardrails:
    """The configured guardrails, in config order. Immutable and thread-safe."""

    entries: tuple[Guardrail, ...] = ()
    owned_clients: tuple[httpx.Client, ...] = field(default=(), repr=False)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(g.name for g in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Guardrail | None:
        return next((g for g in self.entries if g.name == name), None)

    def unknown_names(self, names: Iterable[str]) -> tuple[str, ...]:
        """The names in `names` no guardrail has (to refuse a key's bad `guardrails`)."""
        known = self.names
        return tuple(n for n in names if n not in known)

    def active(
        self, *, model: str, selected: Sequence[str] = (), stage: str = INPUT
    ) -> tuple[str, ...]:
        """The names `check` would run, in order."""
        chosen = set(selected)
        return tuple(
            g.name for g in self.entries if g.applies(model=model, selected=chosen, stage=stage)
        )

    def check(
        self,
        text: str,
        *,
        model: str,
        param: str = "input",
        selected: Sequence[str] = (),
        stage: str = INPUT,
    ) -> GuardrailResult:
        """Run the guardrails that apply; return the text to use or raise
        `GuardrailViolation`. `model` is the canonical model name; `selected` adds
        guardrails that are not `default_on` (a key's or a model's `guardrails`)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        chosen = set(selected)
        if unknown := self.unknown_names(sorted(chosen)):
            log.warning("unknown guardrails selected, ignored: %s", ", ".join(unknown))
        ran: list[str] = []
        masked: list[str] = []
        failed_open: list[str] = []
        counts: Counter[str] = Counter()
        for guardrail in self.entries:
            if not guardrail.applies(model=model, selected=chosen, stage=stage):
                continue
            ran.append(guardrail.name)
            outcome = guardrail.inspect(text, model=model, param=param, stage=stage)
            if outcome.failed_open:
                failed_open.append(guardrail.name)
                continue
            if outcome.text != text:
                masked.append(guardrail.name)
                text = outcome.text
            counts.update(outcome.entities)
        return GuardrailResult(text, tuple(ran), tuple(masked), tuple(failed_open), dict(counts))

    def close(self) -> None:
        for guardrail in self.entries:
            guardrail.close()
        for client in self.owned_clients:
            client.close()

    def __enter__(self) -> Guardrails:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- config -------------------------------------------------------------------------------

_COMMON_KEYS = {"guardrail_name", "type", "mode", "default_on", "models", "apply_to"}
_TYPE_KEYS = {
    "denylist": {"words", "patterns"},
    "pii": {"entities"},
    "http": {"url", "api_key", "timeout", "on_error"},
}
_MODES = {"denylist": (BLOCK, MASK), "pii": (BLOCK, MASK), "http": ()}


def _string_list(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of non-empty strings")
    return value


def _parse_entry(
    entry: Any,
    where: str,
    client: Callable[[], httpx.Client],
    resolve_model: Callable[[str], str | None] | None,
) -> Guardrail:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping with `guardrail_name` and `type`")
    options = dict(entry)
    nested = options.pop("litellm_params", options.pop("params", None))
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ConfigError(f"{where}: `litellm_params` must be a mapping")
        options = {**nested, **options}
    name = options.get("guardrail_name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a `guardrail_name`")
    where = f"{where} ({name!r})"
    kind = options.get("type")
    if kind not in _TYPE_KEYS:
        raise ConfigError(
            f"{where}: unknown type {kind!r} (known: {', '.join(sorted(_TYPE_KEYS))})"
        )
    unknown = set(options) - _COMMON_KEYS - _TYPE_KEYS[kind]
    if unknown:
        allowed = ", ".join(sorted(_COMMON_KEYS | _TYPE_KEYS[kind]))
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} for type {kind} "
            f"(allowed: {allowed})"
        )

    selection: dict[str, Any] = {}
    default_on = options.get("default_on", True)
    if not isinstance(default_on, bool):
        raise ConfigError(f"{where}: `default_on` must be true or false")
    selection["default_on"] = default_on
    if "models" in options:
        models = _string_list(options["models"], where, "models")
        if not models:
            raise ConfigError(f"{where}: `models` is empty; leave it out to mean every model")
        if resolve_model is not None:
            resolved = []
            for model in models:
                canonical = resolve_model(model)
                if canonical is None:
                    raise ConfigError(f"{where}: `models` names unknown model {model!r}")
                resolved.append(canonical)
            models = resolved
        selection["models"] = models
    apply_to = options.get("apply_to", [INPUT])
    if (
        not isinstance(apply_to, list)
        or not apply_to
        or any(stage not in STAGES for stage in apply_to)
    ):
        raise ConfigError(f"{where}: `apply_to` must be [input], [output] or [input, output]")
    selection["apply_to"] = apply_to

    modes = _MODES[kind]
    if "mode" in options and (not modes or options["mode"] not in modes):
        if not modes:
            raise ConfigError(f"{where}: type {kind} has no `mode` (see `on_error`)")
        hint = ""
        if options["mode"] in ("pre_call", "post_call", "during_call", "logging_only"):
            hint = "; LiteLLM's pre_call/post_call are `apply_to: [input]`/`[output]` here"
        raise ConfigError(
            f"{where}: `mode` must be {' or '.join(modes)}, not {options['mode']!r}{hint}"
        )
    mode = options.get("mode", BLOCK)

    if kind == "denylist":
        words = _string_list(options.get("words", []), where, "words")
        sources = _string_list(options.get("patterns", []), where, "patterns")
        if not words and not sources:
            raise ConfigError(f"{where}: a denylist needs `words` or `patterns`")
        patterns = []
        for source in sources:
            try:
                patterns.append(re.compile(source, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(
                    f"{where}: pattern {source!r} is not a valid regex: {exc}"
                ) from exc
        return DenylistGuardrail(name, words=words, patterns=patterns, mode=mode, **selection)

    if kind == "pii":
        entities = _string_list(options.get("entities", list(PII_ENTITIES)), where, "entities")
        unknown_entities = sorted(set(entities) - set(PII_ENTITIES))
        if unknown_entities or not entities:
            raise ConfigError(
                f"{where}: unknown entities {', '.join(unknown_entities) or '(none given)'} "
                f"(known: {', '.join(PII_ENTITIES)})"
            )
        return PiiGuardrail(name, entities=entities, mode=mode, **selection)

    url = options.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}: an http guardrail needs a `url`")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{where}: `url` {url!r} is not a URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{where}: `url` must be an http:// or https:// URL, not {url!r}")
    api_key = _resolve_env(options.get("api_key"), where)
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise ConfigError(f"{where}: `api_key` must be a non-empty string")
    timeout = options.get("timeout", 2.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: `timeout` must be a positive number of seconds")
    on_error = options.get("on_error", BLOCK)
    if on_error not in (ALLOW, BLOCK):
        raise ConfigError(f"{where}: `on_error` must be allow (fail-open) or block (fail-closed)")
    return HttpGuardrail(
        name,
        url=url,
        api_key=api_key,
        timeout_seconds=float(timeout),
        on_error=on_error,
        client=client(),
        **selection,
    )


def parse_guardrails(
    raw: list[Any] | None,
    *,
    http_client: httpx.Client | None = None,
    resolve_model: Callable[[str], str | None] | None = None,
) -> Guardrails:
    """Build `Guardrails` from the config's top-level `guardrails:` list (None: none).

    `http_client` is used by every `http` guardrail (the caller closes it); without one a
    client is made and `Guardrails.close()` closes it. `resolve_model` (for example
    `Registry.resolve`) turns `models:` names into canonical ones and refuses unknown ones.
    """
    if raw is None:
        return Guardrails()
    if not isinstance(raw, list):
        raise ConfigError("`guardrails` must be a list of guardrail entries")
    owned: list[httpx.Client] = []

    def client() -> httpx.Client:
        if http_client is not None:
            return http_client
        if not owned:
            owned.append(httpx.Client())
        return owned[0]

    entries: list[Guardrail] = []
    try:
        for position, entry in enumerate(raw):
            guardrail = _parse_entry(entry, f"guardrails[{position}]", client, resolve_model)
            if any(g.name == guardrail.name for g in entries):
                raise ConfigError(
                    f"guardrails[{position}]: guardrail_name {guardrail.name!r} is used twice"
                )
            entries.append(guardrail)
    except ConfigError:
        for made in owned:
            made.close()
        raise
    return Guardrails(tuple(entries), tuple(owned))
