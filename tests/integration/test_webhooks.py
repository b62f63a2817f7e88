"""Webhooks on both stacks: one signed event per terminal state (verified with the
`standardwebhooks` package), retries on the schedule with a stable webhook-id, 410 and
Retry-After honoured, redirects not followed, redelivery, tenant scoping, and the SSRF
check at submit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from standardwebhooks import Webhook

from speechq.settings import Settings
from storage.models import utcnow
from storage.webhook_models import WebhookDelivery
from tests.integration.conftest import Stack
from worker.celery_app import create_celery
from worker.webhooks import master_webhook_secret, requeue_due_deliveries

pytestmark = pytest.mark.integration

FINAL = {"delivered", "failed", "gone"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers from `script`
    (status, headers), the last entry repeating."""

    script: list[tuple[int, dict[str, str]]]
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._cond:
                    receiver.received.append(Received(dict(self.headers.items()), body))
                    index = min(len(receiver.received), len(receiver.script)) - 1
                    receiver._cond.notify_all()
                status, headers = receiver.script[index]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.received) >= count, timeout_s)
            assert ok, f"{len(self.received)} of {count} webhook requests arrived"
            return list(self.received)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(*script: tuple[int, dict[str, str]]) -> Receiver:
        receiver = Receiver(list(script) or [(200, {})]).start()
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def _speech(client: httpx.Client, url: str, model: str = "local-tts") -> dict[str, Any]:
    response = client.post(
        "/v1/jobs/speech", json={"model": model, "input": "Webhook test.", "webhook_url": url}
    )
    assert response.status_code == 202, response.text
    return response.json()


def _deliveries(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.text
    listed = response.json()
    assert listed["object"] == "list"
    return listed["data"]  # type: ignore[no-any-return]


def _wait_delivery(
    client: httpx.Client, job_id: str, until: Any = None, timeout_s: float = 60
) -> dict[str, Any]:
    """The job's one delivery once `until(delivery)` holds (default: a final status)."""
    until = until or (lambda d: d["status"] in FINAL)
    deadline = time.monotonic() + timeout_s
    while True:
        data = _deliveries(client, job_id)
        if data and until(data[0]):
            assert len(data) == 1, data
            return data[0]
        assert time.monotonic() < deadline, f"delivery not there in {timeout_s}s: {data}"
        time.sleep(0.2)


def _verify(secret: str, received: Received) -> dict[str, Any]:
    return Webhook(secret).verify(received.body, received.headers)  # type: ignore[no-any-return]


def test_succeeded_job_webhook_is_signed_and_equals_the_job(
    stack: Stack, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    key = stack.make_key(name="hooks")
    with stack.client(key["key"]) as client:
        job = _speech(client, receiver.url)
        done = stack.wait_for_job(client, job["id"])
        [received] = receiver.wait_for(1)
        delivery = _wait_delivery(client, job["id"])
        now = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    event = _verify(key["webhook_secret"], received)
    assert event["type"] == "job.succeeded"
    assert event["timestamp"].endswith("Z")
    assert event["data"] == now
    assert received.headers["webhook-id"] == delivery["id"]
    assert delivery["id"].startswith("msg_")
    assert delivery["status"] == "delivered"
    assert delivery["type"] == "job.succeeded"
    assert delivery["url"] == receiver.url
    assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
    assert len(receiver.received) == 1  # delivered once
    # Another key's secret does not verify it.
    with pytest.raises(Exception, match="signature"):
        _verify(stack.make_key(name="other")["webhook_secret"], received)


def test_failed_job_webhook_signed_with_the_master_secret(
    stack: Stack, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    with stack.client() as client:  # the master key
        job = _speech(client, receiver.url, model="broken-tts")
        done = stack.wait_for_job(client, job["id"])
        [received] = receiver.wait_for(1)
        _wait_delivery(client, job["id"])
        now = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "failed"
    event = _verify(master_webhook_secret(stack.master_key), received)
    assert event["type"] == "job.failed"
    assert event["data"] == now
    assert event["data"]["error"]["code"] == "provider_error"


def test_canceled_job_webhook(stack: Stack, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    key = stack.make_key(name="cancel-hooks")
    with stack.client(key["key"]) as client:
        job = _speech(client, receiver.url, model="slow-tts")
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        [received] = receiver.wait_for(1)
        delivery = _wait_delivery(client, job["id"])
        now = client.get(f"/v1/jobs/{job['id']}").json()
    event = _verify(key["webhook_secret"], received)
    assert event["type"] == "job.canceled" == delivery["type"]
    assert event["data"] == now
    assert now["status"] == "canceled"


def test_retried_until_delivered_with_the_same_webhook_id(
    stack: Stack, receiver_factory: Any
) -> None:
    receiver = receiver_factory((500, {}), (500, {}), (500, {}), (200, {}))
    key = stack.make_key(name="retry-hooks")
    with stack.client(key["key"]) as client:
        job = _speech(client, receiver.url)
        received = receiver.wait_for(4)
        delivery = _wait_delivery(client, job["id"])
    assert delivery["status"] == "delivered"
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert received[0].headers["webhook-id"] == delivery["id"]
    assert len({r.body for r in received}) == 1  # the same event each time
    for one in received:
        _verify(key["webhook_secret"], one)
    attempts = delivery["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, 500, 500, 200]
    assert "500" in attempts[0]["error"]
    assert len(receiver.received) == 4


def test_410_stops_retrying(stack: Stack, receiver_factory: Any) -> None:
    receiver = receiver_factory((410, {}))
    with stack.client() as client:
        job = _speech(client, receiver.url)
        delivery = _wait_delivery(client, job["id"])
    assert delivery["status"] == "gone"
    assert [a["status_code"] for a in delivery["attempts"]] == [410]
    assert delivery["next_attempt_at"] is None
    assert len(receiver.received) == 1


def test_retry_after_longer_than_the_schedule_is_honoured(
    stack: Stack, receiver_factory: Any
) -> None:
    receiver = receiver_factory((503, {"Retry-After": "120"}))
    with stack.client() as client:
        job = _speech(client, receiver.url)
        delivery = _wait_delivery(client, job["id"], until=lambda d: d["attempts"])
    assert delivery["status"] == "pending"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 503
    # The schedule says 1 s; the receiver asked for 120.
    assert delivery["next_attempt_at"] - attempt["created_at"] >= 119


def test_redirect_is_not_followed(stack: Stack, receiver_factory: Any) -> None:
    target = receiver_factory()
    receiver = receiver_factory((302, {"Location": target.url}))
    with stack.client() as client:
        job = _speech(client, receiver.url)
        delivery = _wait_delivery(client, job["id"])
    # Every attempt of the schedule (1 + 4 retries) got the redirect, and failed.
    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [302] * 5
    assert "redirect" in delivery["attempts"][0]["error"]
    assert len(receiver.received) == 5
    assert target.received == []


def test_redeliver_sends_the_same_event_again(stack: Stack, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    key = stack.make_key(name="redeliver-hooks")
    with stack.client(key["key"]) as client:
        job = _speech(client, receiver.url)
        stack.wait_for_job(client, job["id"])
        first = _wait_delivery(client, job["id"])
        redelivered = client.post(f"/v1/jobs/{job['id']}/webhooks/redeliver")
        received = receiver.wait_for(2)
        # The listing reads the delivery, then its attempts: wait for both to show the end.
        after = _wait_delivery(
            client, job["id"], until=lambda d: len(d["attempts"]) == 2 and d["status"] in FINAL
        )
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json()["id"] == first["id"]
    assert redelivered.json()["status"] in ("pending", "delivered")
    assert after["status"] == "delivered"
    assert [a["attempt"] for a in after["attempts"]] == [1, 2]
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"] == first["id"]
    assert _verify(key["webhook_secret"], received[0]) == _verify(
        key["webhook_secret"], received[1]
    )


def test_redeliver_needs_an_ended_job_with_a_webhook_url(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "local-tts", "input": "No hook."})
        job_id = job.json()["id"]
        stack.wait_for_job(client, job_id)
        response = client.post(f"/v1/jobs/{job_id}/webhooks/redeliver")
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "webhook_url"
        assert _deliveries(client, job_id) == []


def test_redeliver_before_the_end_is_409(bare_api: Stack) -> None:
    # No worker: the job stays queued.
    with bare_api.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Queued."}).json()
        response = client.post(f"/v1/jobs/{job['id']}/webhooks/redeliver")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_finished"


def test_webhooks_are_tenant_scoped(stack: Stack, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    owner = stack.make_key(name="owner")
    stranger = stack.make_key(name="stranger")
    with stack.client(owner["key"]) as client:
        job = _speech(client, receiver.url)
        _wait_delivery(client, job["id"])
    with stack.client(stranger["key"]) as client:
        listed = client.get(f"/v1/jobs/{job['id']}/webhooks")
        redeliver = client.post(f"/v1/jobs/{job['id']}/webhooks/redeliver")
    assert listed.status_code == 404 and listed.json()["error"]["code"] == "not_found"
    assert redeliver.status_code == 404
    with stack.client() as admin:
        assert len(_deliveries(admin, job["id"])) == 1
    assert len(receiver.received) == 1


def test_sweep_republishes_a_lost_delivery(stack: Stack, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    with stack.client() as client:
        job = _speech(client, receiver.url)
        delivery = _wait_delivery(client, job["id"])
        # As if the message for a second attempt had been lost long ago.
        with stack.db_session() as session:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery["id"])
                .values(status="pending", next_attempt_at=utcnow(), message_due_at=None)
            )
            session.commit()
        settings = Settings(
            data_dir=stack.data_dir,
            database_url=stack.env.get("SPEECHQ_DATABASE_URL"),
            broker_url=stack.env.get("SPEECHQ_BROKER_URL"),
        )
        app = create_celery(settings)
        try:
            requeue_due_deliveries(settings.resolved_database_url, grace_s=0, app=app)
        finally:
            app.close()
        received = receiver.wait_for(2)
        after = _wait_delivery(client, job["id"], until=lambda d: d["status"] == "delivered")
    assert [a["attempt"] for a in after["attempts"]] == [1, 2]
    assert received[1].headers["webhook-id"] == delivery["id"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",
        "http://[::1]/hooks",
        "http://169.254.169.254/latest/meta-data",
        "ftp://example.com/hooks",
        "http://user:pw@93.184.216.34/hooks",
        "http://does-not-exist.invalid/hooks",
    ],
)
def test_invalid_webhook_url_is_refused_at_submit(bare_api: Stack, url: str) -> None:
    with bare_api.client() as client:
        speech = client.post(
            "/v1/jobs/speech", json={"model": "tts-1", "input": "Hi.", "webhook_url": url}
        )
        transcription = client.post(
            "/v1/jobs/transcriptions",
            data={"model": "whisper-1", "webhook_url": url},
            files={"file": ("a.wav", b"RIFF", "audio/wav")},
        )
    for response in (speech, transcription):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_webhook_url"
        assert error["param"] == "webhook_url"
        assert error["message"]


def test_public_webhook_url_is_accepted_at_submit(bare_api: Stack) -> None:
    url = "http://93.184.216.34/hooks"  # a public address: nothing to resolve
    with bare_api.client() as client:
        response = client.post(
            "/v1/jobs/speech", json={"model": "tts-1", "input": "Hi.", "webhook_url": url}
        )
    assert response.status_code == 202, response.text
    assert json.loads(response.text)["webhook_url"] == url


def _wait_book(client: httpx.Client, book_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        book = client.get(f"/v1/audiobooks/{book_id}", params={"wait": 10}).json()
        if book["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return book


def test_audiobook_webhooks_once_per_end_signed_with_the_key(
    stack: Stack, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    key = stack.make_key(name="book-hooks")
    chapters = [{"title": "Only", "text": "A short book for a webhook."}]
    with stack.client(key["key"]) as client:
        book = client.post(
            "/v1/audiobooks",
            json={
                "title": "Hooked",
                "model": "local-tts",
                "chapters": chapters,
                "webhook_url": receiver.url,
            },
        ).json()
        done = _wait_book(client, book["id"])
        [first] = receiver.wait_for(1)
        # A re-render ends the book again: one more event, with its own webhook-id.
        rerender = client.post(
            f"/v1/audiobooks/{book['id']}/chapters/0/rerender", json={"title": "Renamed"}
        )
        assert rerender.status_code == 200, rerender.text
        again = _wait_book(client, book["id"])
        received = receiver.wait_for(2)
        # Cancel of another book: audiobook.canceled.
        slow = client.post(
            "/v1/audiobooks",
            json={
                "title": "Slow",
                "model": "slow-tts",
                "text": "Never finished.",
                "webhook_url": receiver.url,
            },
        ).json()
        assert client.post(f"/v1/audiobooks/{slow['id']}/cancel").status_code == 200
        received = receiver.wait_for(3)
        deliveries = client.get(f"/v1/audiobooks/{book['id']}/webhooks").json()["data"]
        redelivered = client.post(f"/v1/audiobooks/{book['id']}/webhooks/redeliver")
        repeat = receiver.wait_for(4)[3]
    assert done["status"] == again["status"] == "succeeded"
    events = [_verify(key["webhook_secret"], r) for r in received]
    assert [e["type"] for e in events] == [
        "audiobook.succeeded",
        "audiobook.succeeded",
        "audiobook.canceled",
    ]
    assert events[0]["data"]["id"] == book["id"] and events[0]["data"]["object"] == "audiobook"
    assert events[0]["data"]["result"]["content_url"].endswith("/content")
    assert events[1]["data"]["chapters"][0]["title"] == "Renamed"
    assert events[2]["data"]["id"] == slow["id"]
    assert len({r.headers["webhook-id"] for r in received}) == 3
    assert first.headers["webhook-id"] == received[0].headers["webhook-id"]
    # Listed once per end; a redelivery repeats the latest end's event.
    assert [d["type"] for d in deliveries] == ["audiobook.succeeded"] * 2
    assert [d["id"] for d in deliveries] == [r.headers["webhook-id"] for r in received[:2]]
    assert redelivered.status_code == 202
    assert redelivered.json()["id"] == repeat.headers["webhook-id"] == deliveries[1]["id"]
    assert _verify(key["webhook_secret"], repeat) == events[1]
