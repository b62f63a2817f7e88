"""Guardrails: denylist, PII, the HTTP guardrail against a real local server, selection and
config errors, and a property that masking leaves no card number or e-mail behind."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechq.guardrails import (
    Guardrails,
    GuardrailUnavailable,
    GuardrailViolation,
    HttpGuardrail,
    parse_guardrails,
)
from speechq.registry import ConfigError, parse_config

MODEL = "tts"


def denylist(**options: Any) -> Guardrails:
    return parse_guardrails([{"guardrail_name": "no-profanity", "type": "denylist", **options}])


def pii(mode: str = "mask", **options: Any) -> Guardrails:
    return parse_guardrails([{"guardrail_name": "pii", "type": "pii", "mode": mode, **options}])


def blocked(guardrails: Guardrails, text: str, **kwargs: Any) -> GuardrailViolation:
    with pytest.raises(GuardrailViolation) as caught:
        guardrails.check(text, model=MODEL, **kwargs)
    return caught.value


def passes(guardrails: Guardrails, text: str, **kwargs: Any) -> bool:
    result = guardrails.check(text, model=MODEL, **kwargs)
    return result.text == text and not result.masked


def masked(text: str, **options: Any) -> str:
    return pii("mask", **options).check(text, model=MODEL).text


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


# --- denylist -----------------------------------------------------------------------------


def test_denylist_blocks_whole_words_in_any_case() -> None:
    guard = denylist(words=["darn", "heck"])
    for text in ["Darn it.", "oh HECK!", "well, darn", "(heck)", "darn-it"]:
        violation = blocked(guard, text)
        assert violation.guardrail_name == "no-profanity"
        assert violation.param == "input"
        assert violation.code == "guardrail_violation"
    for text in ["darning socks", "undarned", "darn_it", "check", "Heckler", ""]:
        assert passes(guard, text)


def test_denylist_block_message_names_guardrail_and_position_not_the_word() -> None:
    violation = blocked(denylist(words=["darn"]), "Well, DARN it and darn it", param="prompt")
    assert violation.param == "prompt"
    assert violation.message == (
        "The 'prompt' field was blocked by guardrail 'no-profanity': it contains a denied word "
        "or phrase at character 7 (and 1 more). Remove or rephrase it and try again."
    )
    assert "darn" not in violation.message.lower()
    assert str(violation) == violation.message


def test_denylist_is_unicode_aware() -> None:
    guard = denylist(words=["ärger", "блин", "strasse", "नमस", "ΟΔΟΣ"])
    for text in ["So ein ÄRGER!", "Ну, Блин.", "Die Straße", "नमस", "η οδος"]:
        blocked(guard, text)
    # Longer words, and a word followed by a combining mark (Devanagari virama), are others.
    for text in ["Ärgernis", "блинчики", "Strassenbahn", "नमस्ते"]:
        assert passes(guard, text)
    # A decomposed é is the same letter as a composed one.
    blocked(denylist(words=["café"]), "un cafe\u0301 noir")
    assert passes(denylist(words=["cafe"]), "un café noir")


def test_denylist_phrase_matches_any_whitespace() -> None:
    guard = denylist(words=["kill yourself"])
    blocked(guard, "just KILL\n   yourself")
    assert passes(guard, "kill yourselves")


def test_denylist_patterns_are_case_insensitive_regexes() -> None:
    guard = denylist(patterns=[r"\bkill\s+\w+", r"(?-i:ACME-\d+)"])
    blocked(guard, "I will KILL   bob")
    blocked(guard, "see ACME-42")
    assert passes(guard, "skill set; kill")
    assert passes(guard, "see acme-42")
    violation = blocked(guard, "x kill bob")
    assert "text matching a denied pattern at character 3" in violation.message


def test_denylist_ignores_empty_matches_of_a_pattern() -> None:
    assert passes(denylist(patterns=["x*"]), "nothing here")
    blocked(denylist(patterns=["x*"]), "a xx b")


def test_denylist_mask_replaces_each_match() -> None:
    guard = denylist(words=["darn", "heck", "strasse"], patterns=[r"\bkill\s+\w+"], mode="mask")
    result = guard.check("Darn! Kill Bob, heck, Straße, darning", model=MODEL)
    assert result.text == "[REDACTED]! [REDACTED], [REDACTED], [REDACTED], darning"
    assert result.masked == ("no-profanity",)
    assert result.entities == {"denylist": 4}
    assert result.changed


# --- PII: detection -----------------------------------------------------------------------

EMAILS = [
    "john.doe@example.com",
    "j.doe+tts@mail.example.co.uk",
    "first_last%x@sub-domain.example.org",
    "jörg@bücher.de",
    "UPPER@EXAMPLE.COM",
]
NOT_EMAILS = ["@handle", "user@localhost", "a@b", "foo@bar.c", "me at example dot com", "x@.com"]

PHONES = [
    "+14155552671",
    "+1 415-555-2671",
    "+1 (415) 555-2671",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "1-415-555-2671",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+49 30 1234567",
    "+33 6 12 34 56 78",
    "0044 20 7946 0958",
    "020 7946 0958",
    "030 1234567",
    "(030) 1234567",
    "030/1234567",
    "0171 1234567",
    "06 12 34 56 78",
    "06-12345678",
]
NOT_PHONES = [
    "in 2023",
    "from 1999 to 2023",
    "code 12345",
    "order 123456789",
    "order #4821-7730",
    "ref 2023-000123",
    "order 00123456789",
    "on 01.02.2023",
    "on 2023-10-05",
    "123-456-7890",
    "555-2671",
    "+2023",
    "3+4155552671",
    "v1.2.3",
    "4155552671",
    "1 234 567",
]

CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5500 0000 0000 0004",
    "378282246310005",
    "3782 822463 10005",
    "4222222222222",
    "6011 0009 9013 9424",
    with_check_digit("622202000000000000"),  # 19 digits
]
NOT_CARDS = [
    "4111 1111 1111 1112",  # Luhn fails
    "4111111111111112",
    "4111 1111 1111",  # 12 digits
    "1234567812345678",
    "order 9780306406157",  # an ISBN-13, Luhn fails
    "id 41111111111111110000000",  # Luhn-valid prefix inside a longer number
    "4111  1111 1111 1111",  # two spaces: not one number
]

SSNS = ["123-45-6789", "123 45 6789", "078-05-1120", "899-99-9999"]
NOT_SSNS = [
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "999-12-3456",
    "123-00-4567",
    "123-45-0000",
    "123-45-67890",
    "1234-56-7890",
    "123-45 6789",
    "123456789",
]

IBANS = [
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "de89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NO93 8601 1117 947",
    "CH9300762011623852957",
]
NOT_IBANS = [
    "DE89 3704 0044 0532 0130 01",  # mod 97 fails
    "GB82 WEST 1234 5698 7654 33",
    "DE89 3704 0044 0532 0130",  # too short for DE
    "DE89370400440532013000X",  # part of a longer token
    "XX89 3704 0044 0532 0130 00",  # no such country
]


@pytest.mark.parametrize(
    ("entity", "positives", "negatives"),
    [
        ("email", EMAILS, NOT_EMAILS),
        ("phone", PHONES, NOT_PHONES),
        ("credit_card", CARDS, NOT_CARDS),
        ("us_ssn", SSNS, NOT_SSNS),
        ("iban", IBANS, NOT_IBANS),
    ],
)
def test_pii_finds_each_entity_and_not_its_near_misses(
    entity: str, positives: list[str], negatives: list[str]
) -> None:
    placeholder = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CARD]"}.get(
        entity, f"[{entity.removeprefix('us_').upper()}]"
    )
    for value in positives:
        assert masked(f"see {value}, thanks", entities=[entity]) == f"see {placeholder}, thanks"
    for value in negatives:
        text = f"see {value}, thanks"
        assert masked(text, entities=[entity]) == text, value


def test_pii_negatives_are_left_alone_by_every_detector() -> None:
    for value in [*NOT_PHONES, *NOT_SSNS, "in 2023, order 123456789, ticket 4821-7730"]:
        assert masked(f"see {value}.") == f"see {value}.", value


def test_pii_mask_output_is_exact() -> None:
    text = (
        "Mail john.doe@example.com or call +1 (415) 555-2671. Card 4111-1111-1111-1111, "
        "SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00. Order 123456789 in 2023."
    )
    result = pii("mask").check(text, model=MODEL)
    assert result.text == (
        "Mail [EMAIL] or call [PHONE]. Card [CARD], SSN [SSN], IBAN [IBAN]. "
        "Order 123456789 in 2023."
    )
    assert result.masked == ("pii",)
    assert result.entities == {"email": 1, "phone": 1, "credit_card": 1, "us_ssn": 1, "iban": 1}
    # Billing counts the characters of the masked text.
    assert len(result.text) < len(text)


def test_pii_mask_catches_findings_hidden_behind_another() -> None:
    # After "a@b.cc" the rest ".d@e.ff" is an address too.
    assert masked("a@b.cc.d@e.ff") == "[EMAIL][EMAIL]"
    # The IBAN's digits are not masked separately as a phone number or a card.
    assert masked("IBAN DE89 3704 0044 0532 0130 00") == "IBAN [IBAN]"


def test_pii_only_configured_entities_run() -> None:
    text = "a@b.com 4111 1111 1111 1111"
    assert masked(text, entities=["credit_card"]) == "a@b.com [CARD]"
    assert masked(text, entities=["email"]) == "[EMAIL] 4111 1111 1111 1111"


def test_pii_block_message_never_echoes_the_value() -> None:
    text = "Pay 4111 1111 1111 1111, mail john@example.com, SSN 123-45-6789, call 415-555-2671"
    violation = blocked(pii("block"), text)
    assert violation.guardrail_name == "pii"
    assert violation.message == (
        "The 'input' field was blocked by guardrail 'pii': it contains personal data: a card "
        "number ending in 1111 at character 5, an e-mail address at character 31, a US social "
        "security number at character 53 (and 1 more). Remove it and try again."
    )
    for secret in ["4111 1111", "john@example.com", "123-45", "6789", "555-2671"]:
        assert secret not in violation.message


def test_pii_block_on_output_names_the_transcript() -> None:
    guard = parse_guardrails(
        [{"guardrail_name": "pii", "type": "pii", "mode": "block", "apply_to": ["output"]}]
    )
    violation = blocked(guard, "my IBAN is DE89370400440532013000", stage="output", param="file")
    assert violation.param == "file"
    assert violation.message == (
        "The transcript was blocked by guardrail 'pii': it contains personal data: an IBAN at "
        "character 12. The transcript cannot be returned."
    )


def test_pii_leaves_long_adversarial_input_alone() -> None:
    # Inputs that make naive patterns backtrack; the suite's timeout catches a slowdown.
    guard = pii("mask")
    for text in ["1 " * 50_000, "a" * 100_000 + "@", "x@" + "a." * 50_000, "+1 " * 30_000]:
        result = guard.check(text, model=MODEL)
        assert result.text == text
        assert result.entities == {}


# --- PII: property ------------------------------------------------------------------------

CARD_WINDOW = re.compile(r"\d+(?:[ -]\d+)*")
EMAIL_LOOKING = re.compile(
    r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}"
)


def luhn_card_left(text: str) -> str | None:
    """Any Luhn-valid 13-19 digit number made of whole digit groups (single space or dash
    between groups, no digit right before or after)."""
    for start in range(len(text)):
        if not text[start].isdigit() or (start and text[start - 1].isdigit()):
            continue
        for end in range(start + 1, min(len(text), start + 40) + 1):
            if not text[end - 1].isdigit() or (end < len(text) and text[end].isdigit()):
                continue
            if CARD_WINDOW.fullmatch(text[start:end]):
                digits = re.sub(r"\D", "", text[start:end])
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    return text[start:end]
    return None


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    body = draw(st.text("0123456789", min_size=12, max_size=18))
    digits = with_check_digit(body)
    out = []
    for i, ch in enumerate(digits):
        if i and draw(st.booleans()):
            out.append(draw(st.sampled_from([" ", "-"])))
        out.append(ch)
    return "".join(out)


emails = st.from_regex(
    r"[A-Za-z0-9._%+-]{1,8}@([A-Za-z0-9]([A-Za-z0-9-]{0,4}[A-Za-z0-9])?\.){1,3}[A-Za-z]{2,5}",
    fullmatch=True,
)
noise = st.text(alphabet="ab0123456789 -.@_+()é[]", max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(card_numbers(), emails, noise), max_size=8).map("".join))
def test_masking_never_leaves_a_card_number_or_an_email(text: str) -> None:
    out = masked(text)
    assert luhn_card_left(out) is None, (text, out)
    assert EMAIL_LOOKING.search(out) is None, (text, out)


# --- selection ----------------------------------------------------------------------------


def selection_config() -> Guardrails:
    return parse_guardrails(
        [
            {"guardrail_name": "always", "type": "denylist", "words": ["alpha"]},
            {
                "guardrail_name": "opt-in",
                "type": "denylist",
                "words": ["beta"],
                "default_on": False,
            },
            {
                "guardrail_name": "tts-only",
                "type": "denylist",
                "words": ["gamma"],
                "models": ["tts"],
            },
            {
                "guardrail_name": "transcripts",
                "type": "denylist",
                "words": ["delta"],
                "apply_to": ["output"],
            },
            {
                "guardrail_name": "both",
                "type": "denylist",
                "words": ["epsilon"],
                "apply_to": ["input", "output"],
            },
        ]
    )


def test_selection_default_on_models_and_stage() -> None:
    guard = selection_config()
    assert guard.active(model="tts") == ("always", "tts-only", "both")
    assert guard.active(model="other") == ("always", "both")
    assert guard.active(model="tts", selected=["opt-in"]) == (
        "always",
        "opt-in",
        "tts-only",
        "both",
    )
    assert guard.active(model="stt", stage="output") == ("transcripts", "both")

    assert guard.check("beta", model="tts").text == "beta"
    assert blocked(guard, "beta", selected=["opt-in"]).guardrail_name == "opt-in"
    assert blocked(guard, "gamma").guardrail_name == "tts-only"
    assert guard.check("gamma", model="other").ran == ("always", "both")
    assert guard.check("delta", model="tts").text == "delta"
    assert blocked(guard, "delta", stage="output").guardrail_name == "transcripts"
    assert blocked(guard, "alpha").guardrail_name == "always"
    assert guard.check("alpha", model="tts", stage="output").ran == ("transcripts", "both")
    assert blocked(guard, "epsilon", stage="output").guardrail_name == "both"


def test_selection_of_a_guardrail_limited_to_other_models_does_not_run() -> None:
    guard = parse_guardrails(
        [
            {
                "guardrail_name": "x",
                "type": "denylist",
                "words": ["x"],
                "default_on": False,
                "models": ["tts"],
            }
        ]
    )
    assert guard.active(model="other", selected=["x"]) == ()
    assert guard.active(model="tts", selected=["x"]) == ("x",)


def test_selection_unknown_names_are_reported_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    guard = selection_config()
    assert guard.unknown_names(["opt-in", "nope"]) == ("nope",)
    with caplog.at_level(logging.WARNING, logger="speechq.guardrails"):
        assert guard.check("hello", model="tts", selected=["nope"]).text == "hello"
    assert "nope" in caplog.text
    with pytest.raises(ValueError, match="stage"):
        guard.check("hello", model="tts", stage="during")


def test_guardrails_run_in_order_on_the_text_before_them() -> None:
    guard = parse_guardrails(
        [
            {"guardrail_name": "pii", "type": "pii", "mode": "mask"},
            # [EMAIL] is what the denylist sees, not the address.
            {"guardrail_name": "no-mail", "type": "denylist", "words": ["example"]},
        ]
    )
    result = guard.check("write to bob@example.com", model=MODEL)
    assert result.text == "write to [EMAIL]"
    assert result.ran == ("pii", "no-mail")
    assert result.masked == ("pii",)
    assert parse_guardrails(None).check("anything", model=MODEL).ran == ()


def test_models_are_resolved_to_canonical_names() -> None:
    registry = parse_config(
        {
            "model_list": [{"model_name": "tts", "litellm_params": {"model": "openai/tts-1"}}],
            "router_settings": {"model_group_alias": {"tts-1": "tts"}},
        }
    )
    entry = {"guardrail_name": "x", "type": "pii", "models": ["tts-1"]}
    guard = parse_guardrails([entry], resolve_model=registry.resolve)
    assert guard.active(model="tts") == ("x",)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        parse_guardrails([{**entry, "models": ["nope"]}], resolve_model=registry.resolve)


# --- HTTP guardrail -----------------------------------------------------------------------


class ModerationHandler(BaseHTTPRequestHandler):
    """/allow, /deny, /deny-silent, /rewrite, /rewrite-no-text, /slow, /500, /bad-json,
    /list, /weird; records each request on the server."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        answers: dict[str, tuple[int, bytes]] = {
            "/allow": (200, b'{"action": "allow"}'),
            "/deny": (200, b'{"action": "deny", "reason": "It asks for violence."}'),
            "/deny-silent": (200, b'{"action": "deny"}'),
            "/rewrite": (
                200,
                json.dumps({"action": "rewrite", "text": body["text"].upper()}).encode(),
            ),
            "/rewrite-no-text": (200, b'{"action": "rewrite"}'),
            "/500": (500, b'{"action": "allow"}'),
            "/bad-json": (200, b"<html>oops</html>"),
            "/list": (200, b'["allow"]'),
            "/weird": (200, b'{"action": "maybe"}'),
        }
        if self.path == "/slow":
            time.sleep(1.0)
            answers["/slow"] = (200, b'{"action": "allow"}')
        status, payload = answers[self.path]
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def moderation() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModerationHandler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as made:
        yield made


def base_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def http_guard(
    server: ThreadingHTTPServer, client: httpx.Client, path: str, **options: Any
) -> Guardrails:
    entry = {
        "guardrail_name": "moderation",
        "type": "http",
        "url": base_url(server) + path,
        **options,
    }
    return parse_guardrails([entry], http_client=client)


def test_http_allow_sends_the_text_and_the_bearer_key(
    moderation: ThreadingHTTPServer, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODERATION_KEY", "sk-mod-secret")
    guard = http_guard(moderation, client, "/allow", api_key="os.environ/MODERATION_KEY")
    result = guard.check("hello there", model="tts", param="input")
    assert result.text == "hello there"
    assert result.ran == ("moderation",)
    assert moderation.requests[-1] == {  # type: ignore[attr-defined]
        "path": "/allow",
        "auth": "Bearer sk-mod-secret",
        "body": {"text": "hello there", "model": "tts", "param": "input", "stage": "input"},
    }
    assert "sk-mod-secret" not in repr(guard)


def test_http_without_key_sends_no_authorization(
    moderation: ThreadingHTTPServer, client: httpx.Client
) -> None:
    http_guard(moderation, client, "/allow").check("hi", model="tts")
    assert moderation.requests[-1]["auth"] is None  # type: ignore[attr-defined]


def test_http_deny_carries_the_reason(
    moderation: ThreadingHTTPServer, client: httpx.Client
) -> None:
    violation = blocked(http_guard(moderation, client, "/deny"), "something bad")
    assert not isinstance(violation, GuardrailUnavailable)
    assert violation.message == (
        "The 'input' field was blocked by guardrail 'moderation': It asks for violence. "
        "Change the text and try again."
    )
    silent = blocked(http_guard(moderation, client, "/deny-silent"), "something bad")
    assert "the moderation service denied it" in silent.message


def test_http_rewrite_replaces_the_text(
    moderation: ThreadingHTTPServer, client: httpx.Client
) -> None:
    result = http_guard(moderation, client, "/rewrite").check("quiet please", model="tts")
    assert result.text == "QUIET PLEASE"
    assert result.masked == ("moderation",)


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/slow", "did not answer within 0.2 s"),
        ("/500", "answered HTTP 500"),
        ("/bad-json", "did not answer with JSON"),
        ("/list", "not allow, deny or rewrite"),
        ("/weird", "not allow, deny or rewrite"),
        ("/rewrite-no-text", "not allow, deny or rewrite"),
    ],
)
def test_http_failure_follows_on_error(
    moderation: ThreadingHTTPServer,
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
    what: str,
) -> None:
    monkeypatch.setenv("MODERATION_KEY", "sk-mod-secret")
    options = {"timeout": 0.2, "api_key": "os.environ/MODERATION_KEY"}
    with caplog.at_level(logging.WARNING, logger="speechq.guardrails"):
        open_guard = http_guard(moderation, client, path, on_error="allow", **options)
        result = open_guard.check("the text", model="tts")
        assert result.text == "the text"
        assert result.failed_open == ("moderation",)

        closed_guard = http_guard(moderation, client, path, on_error="block", **options)
        with pytest.raises(GuardrailUnavailable) as caught:
            closed_guard.check("the text", model="tts")
    assert caught.value.guardrail_name == "moderation"
    assert caught.value.param == "input"
    assert what in caught.value.message
    assert "could not be checked by guardrail 'moderation'" in caught.value.message
    assert "sk-mod-secret" not in caught.value.message
    assert "sk-mod-secret" not in caplog.text
    assert "the text" not in caplog.text


def test_http_connection_refused_follows_on_error(client: httpx.Client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = {"guardrail_name": "m", "type": "http", "url": f"http://127.0.0.1:{port}/check"}
    with pytest.raises(GuardrailUnavailable, match="could not be reached"):
        parse_guardrails([entry], http_client=client).check("x", model="tts")
    fail_open = parse_guardrails([{**entry, "on_error": "allow"}], http_client=client)
    assert fail_open.check("x", model="tts").failed_open == ("m",)


def test_http_default_on_error_is_fail_closed() -> None:
    (guard,) = parse_guardrails(
        [{"guardrail_name": "m", "type": "http", "url": "http://127.0.0.1:9/x"}]
    ).entries
    assert isinstance(guard, HttpGuardrail)
    assert guard.on_error == "block"
    assert guard.timeout_seconds == 2.0


def test_guardrails_close_only_the_client_they_made(client: httpx.Client) -> None:
    entry = {"guardrail_name": "m", "type": "http", "url": "http://127.0.0.1:9/x"}
    with parse_guardrails([entry], http_client=client):
        pass
    assert not client.is_closed
    owned = parse_guardrails([entry, {**entry, "guardrail_name": "n"}])
    (made,) = owned.owned_clients
    owned.close()
    assert made.is_closed


# --- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"guardrail_name": "x"}, "must be a list"),
        (["x"], r"guardrails\[0\] must be a mapping"),
        ([{"type": "pii"}], r"guardrails\[0\] needs a `guardrail_name`"),
        ([{"guardrail_name": "x", "type": "denylst"}], "unknown type 'denylst'"),
        ([{"guardrail_name": "x", "type": "pii", "entitites": ["email"]}], "unknown key"),
        ([{"guardrail_name": "x", "type": "denylist"}], "needs `words` or `patterns`"),
        ([{"guardrail_name": "x", "type": "denylist", "words": "darn"}], "list of non-empty"),
        (
            [{"guardrail_name": "x", "type": "denylist", "patterns": ["(unclosed"]}],
            r"pattern '\(unclosed' is not a valid regex",
        ),
        ([{"guardrail_name": "x", "type": "pii", "mode": "redact"}], "must be block or mask"),
        ([{"guardrail_name": "x", "type": "pii", "mode": "pre_call"}], "apply_to"),
        ([{"guardrail_name": "x", "type": "pii", "entities": ["dna"]}], "unknown entities dna"),
        ([{"guardrail_name": "x", "type": "pii", "entities": []}], "unknown entities"),
        ([{"guardrail_name": "x", "type": "pii", "default_on": "yes"}], "`default_on`"),
        ([{"guardrail_name": "x", "type": "pii", "models": []}], "`models` is empty"),
        ([{"guardrail_name": "x", "type": "pii", "apply_to": ["during"]}], "`apply_to`"),
        ([{"guardrail_name": "x", "type": "pii", "apply_to": "input"}], "`apply_to`"),
        ([{"guardrail_name": "x", "type": "http"}], "needs a `url`"),
        ([{"guardrail_name": "x", "type": "http", "url": "ftp://h/x"}], "http:// or https://"),
        (
            [{"guardrail_name": "x", "type": "http", "url": "http://h", "mode": "block"}],
            "no `mode`",
        ),
        ([{"guardrail_name": "x", "type": "http", "url": "http://h", "timeout": 0}], "`timeout`"),
        (
            [{"guardrail_name": "x", "type": "http", "url": "http://h", "on_error": "retry"}],
            "`on_error`",
        ),
        (
            [
                {
                    "guardrail_name": "x",
                    "type": "http",
                    "url": "http://h",
                    "api_key": "os.environ/NOPE_UNSET",
                }
            ],
            "NOPE_UNSET is referenced by the config but unset",
        ),
        (
            [{"guardrail_name": "x", "type": "pii"}, {"guardrail_name": "x", "type": "pii"}],
            r"guardrails\[1\]: guardrail_name 'x' is used twice",
        ),
    ],
)
def test_parse_guardrails_refuses_bad_entries(
    raw: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_UNSET", raising=False)
    with pytest.raises(ConfigError, match=message):
        parse_guardrails(raw)


def test_parse_guardrails_accepts_litellm_params_nesting() -> None:
    guard = parse_guardrails(
        [
            {
                "guardrail_name": "pii",
                "litellm_params": {"type": "pii", "mode": "mask", "entities": ["email"]},
            }
        ]
    )
    assert guard.check("a@b.com", model=MODEL).text == "[EMAIL]"
    assert parse_guardrails([]).entries == ()
    assert parse_guardrails(None).names == frozenset()
