"""Webhook signing checked by the `standardwebhooks` package, the answer of each kind of
receiver, the retry arithmetic, and one delivery through its attempts on a real database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.orm import Session
from standardwebhooks import Webhook, WebhookVerificationError

from api.schemas import job_public
from api.state import AppState
from api.submission import check_webhook_url
from speechq.apikeys import generate_webhook_secret
from speechq.settings import Settings
from storage import queries, webhook_queries
from storage.db import get_sessionmaker
from storage.migrate import upgrade
from storage.models import utcnow
from tests.net_fakes import Dialer, FakeDNS, SystemDNS
from worker import webhooks
from worker.webhooks import (
    deliver,
    encode_body,
    enqueue_job_event,
    master_webhook_secret,
    parse_retry_after,
    parse_retry_schedule,
    retry_delay_s,
    send_event,
    signed_headers,
)

PUBLIC_IP = "93.184.216.34"


def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC_IP]


# --- signing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", [generate_webhook_secret(), master_webhook_secret("sq-master-example")]
)
def test_signature_verifies_with_standardwebhooks(secret: str) -> None:
    body = encode_body({"type": "job.succeeded", "data": {"id": "job_1", "text": "héllo"}})
    headers = signed_headers(secret, "msg_1", int(datetime.now(UTC).timestamp()), body)
    assert Webhook(secret).verify(body, headers)["data"]["text"] == "héllo"
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-signature"].startswith("v1,")


def test_signature_fails_for_another_secret_or_a_changed_body() -> None:
    secret = generate_webhook_secret()
    body = encode_body({"type": "job.failed"})
    headers = signed_headers(secret, "msg_2", int(datetime.now(UTC).timestamp()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_webhook_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"failed", b"succeeded"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_3"})


def test_master_secret_is_derived_as_documented() -> None:
    derived = master_webhook_secret("sq-master-example")
    expected = hmac.new(b"sq-master-example", b"speechq-webhooks", hashlib.sha256).digest()
    assert derived == "whsec_" + base64.b64encode(expected).decode()
    assert master_webhook_secret("sq-master-other") != derived


# --- retry arithmetic -----------------------------------------------------------------


def test_parse_retry_schedule() -> None:
    assert parse_retry_schedule("5,300, 1800") == (5.0, 300.0, 1800.0)
    assert parse_retry_schedule("") == ()
    with pytest.raises(ValueError):
        parse_retry_schedule("5,-1")


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("soon", now=now) is None


def test_retry_delay_follows_the_schedule_and_longer_retry_after() -> None:
    schedule = (5.0, 300.0)
    assert retry_delay_s(schedule, 1, None) == 5.0
    assert retry_delay_s(schedule, 2, None) == 300.0
    assert retry_delay_s(schedule, 3, None) is None  # spent: failed
    assert retry_delay_s(schedule, 1, 60.0) == 60.0  # asks for longer: honoured
    assert retry_delay_s(schedule, 2, 60.0) == 300.0  # shorter: the schedule wins
    assert retry_delay_s(schedule, 1, 10**9) == webhooks.MAX_RETRY_AFTER_S


# --- one POST -------------------------------------------------------------------------


def _send(
    handler: Callable[[httpx.Request], httpx.Response],
    url: str = "https://hooks.example.com/in",
    **kw: Any,
) -> webhooks.AttemptOutcome:
    return send_event(
        url,
        b"{}",
        {"webhook-id": "msg_x"},
        allow_private=kw.pop("allow_private", False),
        resolver=kw.pop("resolver", public_resolver),
        transport=httpx.MockTransport(handler),
    )


def test_2xx_is_delivered_and_goes_to_the_checked_address() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    outcome = _send(handler)
    assert outcome.final == "delivered" and outcome.status_code == 204
    assert seen[0].url.host == PUBLIC_IP  # pinned: no second lookup
    assert seen[0].headers["host"] == "hooks.example.com"
    assert seen[0].headers["webhook-id"] == "msg_x"


def test_410_is_gone() -> None:
    outcome = _send(lambda request: httpx.Response(410))
    assert outcome.final == "gone" and outcome.status_code == 410


def test_non_2xx_is_retried_with_its_retry_after() -> None:
    outcome = _send(lambda request: httpx.Response(429, headers={"Retry-After": "30"}))
    assert outcome.final is None and outcome.status_code == 429
    assert outcome.retry_after_s == 30.0
    assert "429" in (outcome.error or "")


def test_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})

    outcome = _send(handler)
    assert outcome.final is None and outcome.status_code == 302
    assert "redirect" in (outcome.error or "")
    assert len(seen) == 1


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("x")],
)
def test_network_errors_are_retried(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    outcome = _send(handler)
    assert outcome.final is None and outcome.status_code is None
    assert outcome.error


def test_unresolvable_host_is_retried() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    outcome = _send(lambda request: httpx.Response(200), resolver=resolver)
    assert outcome.final is None and "could not be resolved" in (outcome.error or "")


def test_private_address_fails_without_sending() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    outcome = _send(handler, resolver=lambda host, port: ["10.0.0.5"])
    assert outcome.final == "failed" and "private" in (outcome.error or "")
    assert sent == []
    allowed = _send(handler, resolver=lambda host, port: ["10.0.0.5"], allow_private=True)
    assert allowed.final == "delivered"


# --- a delivery through its attempts --------------------------------------------------


class FakeCelery:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **kw: Any) -> None:
        self.sent.append({"name": name, **kw})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        data_dir=tmp_path,
        master_key="sq-master-unit",
        webhook_retry_schedule="5,900",
        webhook_allow_private=False,
    )
    upgrade(settings.resolved_database_url)
    yield settings


def _ended_job(session: Session, *, webhook_url: str | None) -> str:
    job = queries.create_job(
        session,
        type="speech",
        model="tts-1",
        tenant="admin",
        key_id=None,
        team=None,
        user=None,
        metadata={"order": "42"},
        webhook_url=webhook_url,
        request={"input": "hi"},
    )
    queries.claim_job(session, job_id=job.id, lease_seconds=60)
    queries.fail_job(session, job_id=job.id, code="provider_error", message="no")
    return job.id


def test_event_is_written_once_with_the_job_as_get_shows_it(db: Settings) -> None:
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url="https://hooks.example.com/in")
        delivery_id = enqueue_job_event(session, job_id=job_id)
        assert enqueue_job_event(session, job_id=job_id) is None  # once per event
        no_hook = _ended_job(session, webhook_url=None)
        assert enqueue_job_event(session, job_id=no_hook) is None
        session.commit()
        row = webhook_queries.get_delivery(session, delivery_id=delivery_id or "")
        assert row is not None and row.id.startswith("msg_")
        job = queries.get_job(session, job_id=job_id, tenant=None)
        assert job is not None
        expected = job_public(job, []).model_dump(mode="json")
    assert row.type == "job.failed" and row.status == "pending"
    assert row.payload["type"] == "job.failed"
    assert row.payload["data"] == expected
    assert row.payload["data"]["metadata"] == {"order": "42"}


def _responder(*statuses: int) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    return httpx.MockTransport(handler), seen


def _make_due(settings: Settings, delivery_id: str) -> None:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        row = webhook_queries.get_delivery(session, delivery_id=delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()
        session.commit()


def test_delivery_retries_then_fails_and_old_messages_send_nothing(db: Settings) -> None:
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url="https://hooks.example.com/in")
        delivery_id = enqueue_job_event(session, job_id=job_id)
        session.commit()
    assert delivery_id is not None
    transport, seen = _responder(500)
    app = FakeCelery()

    def attempt() -> str:
        return deliver(
            delivery_id,
            db,
            app=app,  # type: ignore[arg-type]
            resolver=public_resolver,
            transport=transport,
        )

    assert attempt() == "pending"
    # The next attempt is due in 5 s, published with that countdown.
    assert app.sent[-1]["countdown"] == 5.0 and app.sent[-1]["queue"] == "webhooks"
    assert attempt() == "skipped"  # a duplicate message before it is due sends nothing
    _make_due(db, delivery_id)
    assert attempt() == "pending"
    # 900 s is over MAX_COUNTDOWN_S: no message now, the sweeper publishes it when due.
    assert len(app.sent) == 1
    with get_sessionmaker(db.resolved_database_url)() as session:
        row = webhook_queries.get_delivery(session, delivery_id=delivery_id)
        assert row is not None and row.message_due_at is None
        assert webhook_queries.deliveries_to_publish(session, grace_seconds=60) == []
    _make_due(db, delivery_id)
    with get_sessionmaker(db.resolved_database_url)() as session:
        assert webhook_queries.deliveries_to_publish(session, grace_seconds=60) == [delivery_id]
    assert attempt() == "failed"  # the schedule (5, 900) is spent after 3 attempts
    assert attempt() == "skipped"
    assert len(seen) == 3
    assert len({r.headers["webhook-id"] for r in seen}) == 1
    secret = master_webhook_secret("sq-master-unit")
    Webhook(secret).verify(seen[0].content, dict(seen[0].headers))
    with get_sessionmaker(db.resolved_database_url)() as session:
        attempts = webhook_queries.attempts_for_deliveries(session, delivery_ids=[delivery_id])
    assert [(a.attempt, a.status_code) for a in attempts[delivery_id]] == [
        (1, 500),
        (2, 500),
        (3, 500),
    ]


def test_a_locked_delivery_is_not_claimed_twice(db: Settings) -> None:
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url="https://hooks.example.com/in")
        delivery_id = enqueue_job_event(session, job_id=job_id) or ""
        session.commit()
        first = webhook_queries.claim_delivery(session, delivery_id=delivery_id, lease_seconds=60)
        session.commit()
        assert first is not None and first.attempt_count == 1
        assert (
            webhook_queries.claim_delivery(session, delivery_id=delivery_id, lease_seconds=60)
            is None
        )
        # A redelivery while the attempt runs: the attempt's result no longer applies.
        webhook_queries.restart_delivery(session, delivery_id=delivery_id)
        assert not webhook_queries.finish_delivery_attempt(
            session, delivery_id=delivery_id, attempt=1, round_attempts=1, status="failed"
        )
        session.commit()
        row = webhook_queries.get_delivery(session, delivery_id=delivery_id)
        assert row is not None
        session.refresh(row)
        assert row.status == "pending" and row.locked_until is None


def test_delivered_then_redelivered_keeps_the_id(db: Settings) -> None:
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url="https://hooks.example.com/in")
        delivery_id = enqueue_job_event(session, job_id=job_id) or ""
        session.commit()
    transport, seen = _responder(200)
    kw: dict[str, Any] = {"app": FakeCelery(), "resolver": public_resolver, "transport": transport}
    assert deliver(delivery_id, db, **kw) == "delivered"
    assert deliver(delivery_id, db, **kw) == "skipped"
    with get_sessionmaker(db.resolved_database_url)() as session:
        job = queries.get_job(session, job_id=job_id, tenant=None)
        assert job is not None
        row = webhooks.redeliver_job_event(session, job=job)
        session.commit()
        assert row is not None and row.id == delivery_id and row.status == "pending"
    assert deliver(delivery_id, db, **kw) == "delivered"
    assert [r.headers["webhook-id"] for r in seen] == [delivery_id, delivery_id]
    assert seen[0].content == seen[1].content


# --- DNS rebinding, end to end: the real transport, a receiver on loopback ----------------
# The Dialer records every TCP connection httpcore opens; a "public" answer is carried to
# the receiver on 127.0.0.1, and any other outside address is refused, so nothing leaves.

REBIND_PUBLIC = "93.184.215.14"


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.received: list[tuple[str | None, bytes]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.headers.get("Host"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_send_event_public_then_loopback_answer_posts_to_the_checked_address(
    receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    resolver = FakeDNS([REBIND_PUBLIC], ["127.0.0.1"])
    url = f"http://hooks.example.com:{receiver.port}/in"

    outcome = send_event(url, b'{"a":1}', {}, allow_private=False, resolver=resolver)

    assert outcome.final == "delivered", outcome.error
    assert resolver.calls == [("hooks.example.com", receiver.port)]
    assert dialer.dialled == [(REBIND_PUBLIC, receiver.port)]  # never the 127.0.0.1 answer
    assert receiver.received == [(f"hooks.example.com:{receiver.port}", b'{"a":1}')]


def test_send_event_loopback_then_public_answer_fails_without_dialling(
    receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    resolver = FakeDNS(["127.0.0.1"], [REBIND_PUBLIC])
    url = f"http://hooks.example.com:{receiver.port}/in"

    outcome = send_event(url, b"{}", {}, allow_private=False, resolver=resolver)

    assert outcome.final == "failed" and "loopback" in (outcome.error or "")
    assert len(resolver.calls) == 1
    assert dialer.dialled == []
    assert receiver.received == []


def test_deliver_posts_to_the_address_its_own_check_approved(
    db: Settings, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url=f"http://hooks.example.com:{receiver.port}/in")
        delivery_id = enqueue_job_event(session, job_id=job_id) or ""
        session.commit()
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    resolver = FakeDNS([REBIND_PUBLIC], ["127.0.0.1"])

    status = deliver(delivery_id, db, app=FakeCelery(), resolver=resolver)  # type: ignore[arg-type]

    assert status == "delivered"
    assert len(resolver.calls) == 1
    assert dialer.dialled == [(REBIND_PUBLIC, receiver.port)]
    assert len(receiver.received) == 1


def test_submit_check_passes_then_rebound_to_loopback_the_delivery_fails_unsent(
    db: Settings, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the system resolver, as in production: public when the job is submitted,
    # loopback when the worker delivers. The worker checks again and does not send.
    lookups = FakeDNS([REBIND_PUBLIC], ["127.0.0.1"])
    SystemDNS(monkeypatch, {"hooks.example.com": lookups})
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    url = f"http://hooks.example.com:{receiver.port}/in"
    check_webhook_url(cast(AppState, SimpleNamespace(settings=db)), url)  # accepted
    with get_sessionmaker(db.resolved_database_url)() as session:
        job_id = _ended_job(session, webhook_url=url)
        delivery_id = enqueue_job_event(session, job_id=job_id) or ""
        session.commit()

    status = deliver(delivery_id, db, app=FakeCelery())  # type: ignore[arg-type]

    assert status == "failed"
    assert len(lookups.calls) == 2  # the submit check, then the delivery's own
    assert dialer.dialled == []
    assert receiver.received == []
    with get_sessionmaker(db.resolved_database_url)() as session:
        attempts = webhook_queries.attempts_for_deliveries(session, delivery_ids=[delivery_id])
    (attempt,) = attempts[delivery_id]
    assert attempt.status_code is None and "loopback" in (attempt.error or "")
