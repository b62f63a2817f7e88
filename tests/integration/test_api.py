"""The HTTP contract on both stacks: auth, tenants, paging, errors, operations."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _envelope(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


def test_missing_and_unknown_key_are_401(stack: Stack) -> None:
    import httpx

    bare = httpx.get(f"{stack.base_url}/v1/jobs")
    _envelope(bare, 401, "unauthorized")
    with stack.client("sq-not-a-real-key") as client:
        _envelope(client.get("/v1/models"), 401, "unauthorized")


def test_revoked_key_is_401(stack: Stack) -> None:
    key = stack.make_key(name="short-lived")
    with stack.client(key["key"]) as client:
        assert client.get("/v1/models").status_code == 200
    with stack.client() as admin:
        assert admin.delete(f"/v1/keys/{key['id']}").json()["deleted"] is True
    with stack.client(key["key"]) as client:
        _envelope(client.get("/v1/models"), 401, "unauthorized")


def test_key_is_shown_once_and_stored_hashed(stack: Stack) -> None:
    key = stack.make_key(name="shown-once", team="acme", budget_usd=5, rpm_limit=60)
    assert key["key"].startswith("sq-")
    assert key["webhook_secret"].startswith("whsec_")
    assert {
        "id",
        "key",
        "name",
        "team",
        "budget_usd",
        "rpm_limit",
        "webhook_secret",
        "created_at",
    } <= set(key)
    with stack.client() as admin:
        listed = admin.get("/v1/keys").json()["data"]
    mine = next(k for k in listed if k["id"] == key["id"])
    assert "key" not in mine and "webhook_secret" not in mine
    assert key["key"] not in str(listed)


def test_non_admin_key_cannot_manage_keys(stack: Stack) -> None:
    key = stack.make_key(name="plain")
    with stack.client(key["key"]) as client:
        _envelope(client.post("/v1/keys", json={"name": "x"}), 403, "forbidden")
        _envelope(client.get("/v1/keys"), 403, "forbidden")


def test_unknown_model_is_404_model_not_found(stack: Stack) -> None:
    with stack.client() as client:
        error = _envelope(
            client.post("/v1/jobs/speech", json={"model": "no-such-model", "input": "hi"}),
            404,
            "model_not_found",
        )
        assert error["param"] == "model"
        files = {"file": ("a.wav", b"RIFF", "audio/wav")}
        _envelope(
            client.post("/v1/jobs/transcriptions", data={"model": "nope"}, files=files),
            404,
            "model_not_found",
        )
        # A speech model on the transcription route is a 400, not a 404.
        _envelope(
            client.post("/v1/jobs/speech", json={"model": "whisper-1", "input": "hi"}),
            400,
            "invalid_request",
        )


def test_bad_input_is_400_in_the_envelope(stack: Stack) -> None:
    with stack.client() as client:
        _envelope(client.post("/v1/jobs/speech", json={"model": "tts-1"}), 400, "invalid_request")
        _envelope(
            client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "   "}),
            400,
            "invalid_request",
        )
        error = _envelope(
            client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "a", "speed": 9}),
            400,
            "invalid_request",
        )
        assert error["param"] == "speed"
        _envelope(
            client.post(
                "/v1/jobs/speech",
                json={"model": "tts-1", "input": "a", "response_format": "ogg"},
            ),
            400,
            "invalid_request",
        )
        _envelope(
            client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "x" * 100_001}),
            400,
            "input_too_long",
        )
        _envelope(
            client.post(
                "/v1/jobs/speech",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            400,
            "invalid_request",
        )
        _envelope(client.get("/v1/jobs", params={"limit": 0}), 400, "invalid_request")


def test_uploads_are_recognised_by_content(stack: Stack) -> None:
    with stack.client() as client:
        not_audio = {"file": ("speech.mp3", b"this is plain text, not audio" * 10, "audio/mpeg")}
        _envelope(
            client.post("/v1/jobs/transcriptions", data={"model": "whisper-1"}, files=not_audio),
            400,
            "invalid_audio",
        )
        _envelope(
            client.post("/v1/jobs/transcriptions", data={"model": "whisper-1"}),
            400,
            "invalid_request",
        )


def test_framework_errors_use_the_envelope(stack: Stack) -> None:
    with stack.client() as client:
        _envelope(client.get("/v1/nowhere"), 404, "not_found")
        _envelope(client.delete("/v1/models"), 405, "method_not_allowed")
        _envelope(client.get("/v1/jobs/job_missing"), 404, "not_found")


def test_tenant_isolation(stack: Stack) -> None:
    alice = stack.make_key(name="alice")
    bob = stack.make_key(name="bob")
    with stack.client(alice["key"]) as client:
        job = client.post(
            "/v1/jobs/speech", json={"model": "tts-1", "input": "Alice's words."}
        ).json()
        stack.wait_for_job(client, job["id"])
        assert client.get(f"/v1/jobs/{job['id']}/content").status_code == 200
        alice_usage = client.get("/v1/usage").json()
    assert alice_usage["total"]["requests"] == 1
    with stack.client(bob["key"]) as client:
        for method, path in [
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/content"),
            ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ]:
            _envelope(client.request(method, path), 404, "not_found")
        assert job["id"] not in str(client.get("/v1/jobs").json())
        assert client.get("/v1/usage").json()["total"]["requests"] == 0
    with stack.client() as admin:
        assert admin.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_team_keys_share_their_jobs(stack: Stack) -> None:
    first = stack.make_key(name="t1", team="blue")
    second = stack.make_key(name="t2", team="blue")
    with stack.client(first["key"]) as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Team."}).json()
    with stack.client(second["key"]) as client:
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_list_paging_newest_first(stack: Stack) -> None:
    key = stack.make_key(name="pager")
    with stack.client(key["key"]) as client:
        ids = [
            client.post("/v1/jobs/speech", json={"model": "tts-1", "input": f"Job {i}."}).json()[
                "id"
            ]
            for i in range(5)
        ]
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            params = {"limit": 2, **({"after": after} if after else {})}
            page = client.get("/v1/jobs", params=params).json()
            assert page["object"] == "list"
            seen += [job["id"] for job in page["data"]]
            pages += 1
            if not page["has_more"]:
                assert page["next_after"] is None
                break
            after = page["next_after"]
            assert after == page["data"][-1]["id"]
        assert seen == list(reversed(ids))
        assert pages == 3
        speech_only = client.get("/v1/jobs", params={"type": "transcription"}).json()
        assert speech_only["data"] == []
        for job_id in ids:
            stack.wait_for_job(client, job_id)
        succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
        assert {j["id"] for j in succeeded["data"]} == set(ids)


def test_wait_returns_when_the_job_ends(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Wait."}).json()
        waited = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
        assert waited["status"] == "succeeded"
        _envelope(client.get(f"/v1/jobs/{job['id']}", params={"wait": 61}), 400, "invalid_request")


def test_models_lists_builtin_aliases(stack: Stack) -> None:
    with stack.client() as client:
        models = client.get("/v1/models").json()
    ids = {m["id"]: m for m in models["data"]}
    assert models["object"] == "list"
    assert ids["tts-1"]["mode"] == "audio_speech"
    assert ids["whisper-1"]["mode"] == "audio_transcription"
    assert ids["openai-tts"]["owned_by"] == "openai"
    assert all(m["object"] == "model" for m in models["data"])


def test_usage_groups(stack: Stack) -> None:
    key = stack.make_key(name="usage")
    with stack.client(key["key"]) as client:
        for model in ("tts-1", "openai-tts"):
            job = client.post(
                "/v1/jobs/speech", json={"model": model, "input": "Count me.", "user": "u1"}
            ).json()
            stack.wait_for_job(client, job["id"])
        by_model = client.get("/v1/usage", params={"group_by": "model"}).json()
        by_user = client.get("/v1/usage", params={"group_by": "user"}).json()
        by_day = client.get("/v1/usage", params={"group_by": "day"}).json()
        _envelope(client.get("/v1/usage", params={"group_by": "color"}), 400, "invalid_request")
    groups = {row["group"]: row for row in by_model["data"]}
    assert groups["tts-1"]["requests"] == 1 and groups["tts-1"]["cost_usd"] == 0
    assert groups["openai-tts"]["cost_usd"] == pytest.approx(len("Count me.") * 0.000015)
    assert by_model["total"]["characters"] == 2 * len("Count me.")
    assert by_user["data"] == [{**by_user["data"][0], "group": "u1", "requests": 2}]
    assert len(by_day["data"]) == 1


def test_operations_routes(stack: Stack) -> None:
    import httpx

    assert httpx.get(f"{stack.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.base_url}/readyz").json()
    assert ready["status"] == "ok"
    assert set(ready["checks"]) == {"database", "broker", "storage"}
    metrics = httpx.get(f"{stack.base_url}/metrics")
    assert metrics.status_code == 200
    assert "speechq_http_requests_total" in metrics.text


def test_every_route_hides_another_tenants_objects(stack: Stack) -> None:
    """Walk every operation in the OpenAPI schema with Bob's key against Alice's objects."""
    import httpx

    alice = stack.make_key(name="alice-walk")
    bob = stack.make_key(name="bob-walk")
    secret_text = "Alice's private sentence."
    with stack.client(alice["key"]) as client:
        job = client.post("/v1/jobs/speech", json={"model": "tts-1", "input": secret_text}).json()
        stack.wait_for_job(client, job["id"])
        book = client.post(
            "/v1/audiobooks",
            json={"title": "Alice's", "model": "tts-1", "text": secret_text},
        ).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/audiobooks/{book['id']}", params={"wait": 10}).json()[
            "status"
        ] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
    schema = httpx.get(f"{stack.base_url}/openapi.json").json()
    ids = {"job_id": job["id"], "key_id": alice["id"], "book_id": book["id"], "index": 0}
    walked = 0
    with stack.client(bob["key"]) as client:
        for path, operations in schema["paths"].items():
            for method in operations:
                if not path.startswith("/v1/") or path.startswith("/v1/audio/"):
                    continue
                if "{" not in path and method != "get":
                    continue  # creates something of Bob's own; nothing of Alice's to reach
                url = path.format(**ids)
                response = client.request(method.upper(), url)
                walked += 1
                assert secret_text not in response.text, (method, path)
                assert alice["key"] not in response.text and alice["webhook_secret"] not in (
                    response.text
                )
                if "{" in path:
                    expected = 403 if path.startswith("/v1/keys") else 404
                    assert response.status_code == expected, (method, path, response.text)
                else:
                    assert job["id"] not in response.text, (method, path)
                    assert book["id"] not in response.text, (method, path)
    assert walked >= 14


def test_per_model_character_limit_and_metadata_ranges(stack: Stack) -> None:
    with stack.client() as client:
        error = _envelope(
            client.post("/v1/jobs/speech", json={"model": "short-tts", "input": "x" * 21}),
            400,
            "input_too_long",
        )
        assert "at most 20" in error["message"]
        assert (
            client.post("/v1/jobs/speech", json={"model": "short-tts", "input": "x" * 20})
        ).status_code == 202
        too_many = {f"k{i}": "v" for i in range(17)}
        _envelope(
            client.post(
                "/v1/jobs/speech", json={"model": "tts-1", "input": "hi", "metadata": too_many}
            ),
            400,
            "invalid_request",
        )
        files = {"file": ("a.wav", b"RIFF", "audio/wav")}
        error = _envelope(
            client.post(
                "/v1/jobs/transcriptions",
                data={"model": "whisper-1", "metadata": '{"k": 1}'},
                files=files,
            ),
            400,
            "invalid_request",
        )
        assert error["param"] == "metadata"
