"""What every request passes before a route sees it, decided before any of its body is read:

1. a URL with a NUL (or a lone surrogate) is 400: no database stores one;
2. on `/v1` the key is checked from the headers alone, so a caller without a valid key
   never gets a byte of its body read (401);
3. a body that is not multipart (JSON, urlencoded, anything else) is read up to
   `SPEECHQ_MAX_JSON_BODY_MB` and handed on; past that it is 413 `request_too_large` at
   once, the rest never read. Multipart bodies stream to their own parsers, which cap file
   parts per model and every other field (`api/upload_form.py`).
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import PRINCIPAL_STATE, bearer_token, key_principal, master_principal
from api.errors import ApiError, error_response
from api.state import AppState
from speechq.text_checks import forbidden_character

__all__ = ["RequestGuard", "request_too_large"]

AUTHENTICATED_PREFIX = "/v1/"
_STREAMED_TYPES = (b"multipart/form-data",)


def request_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"The request body is larger than {limit_bytes / 1_000_000:g} MB. Send a book as a "
        "file upload (multipart/form-data), or split the request.",
    )


class _TooLarge(Exception):
    pass


class RequestGuard:
    """Pure ASGI, so a refused request costs no more than its headers."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = int(state.settings.max_json_body_mb * 1_000_000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_url(scope)
            if scope["path"].startswith(AUTHENTICATED_PREFIX):
                await self._authenticate(scope)
            if not _is_streamed(scope):
                receive = await self._buffered(scope, receive)
        except ApiError as exc:
            response = error_response(
                exc.status_code, exc.code, exc.message, param=exc.param, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _check_url(scope: Scope) -> None:
        query = scope.get("query_string", b"").lower()
        if forbidden_character(scope["path"]) is not None or b"%00" in query:
            raise ApiError(
                400,
                "invalid_request",
                "The URL holds a NUL character or an invalid code point; remove it.",
            )

    async def _authenticate(self, scope: Scope) -> None:
        token = bearer_token(_header(scope, b"authorization"))
        # The master key needs no database read, so no thread either.
        principal = master_principal(self.state, token) or await run_in_threadpool(
            key_principal, self.state, token
        )
        scope.setdefault("state", {})[PRINCIPAL_STATE] = principal

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole (small) body now, within the cap, and replay it to the app."""
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise request_too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the app see it as it would have.
                return _replay(b"", receive, first=message)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise request_too_large(self.max_body_bytes)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return _replay(b"".join(chunks), receive)


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    pending: Message | None = first or {"type": "http.request", "body": body, "more_body": False}

    async def replay() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replay


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _is_streamed(scope: Scope) -> bool:
    if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and not _header(
        scope, b"content-length"
    ):
        return True  # no body to read
    content_type = _header(scope, b"content-type").encode("latin-1").lower()
    return content_type.startswith(_STREAMED_TYPES)
