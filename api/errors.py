"""One error envelope for every error, ours and the framework's:
`{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ApiError",
    "UnhandledErrors",
    "error_response",
    "install_error_handlers",
    "unhandled_response",
    "validation_error",
]

log = logging.getLogger(__name__)

RETRY_AFTER_BUSY_S = 2

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    416: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}

_FRAMEWORK_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "file_too_large",
    415: "unsupported_format",
    416: "range_not_satisfiable",
}


class ApiError(Exception):
    """Raised at the edge (routes, deps); rendered in one place."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status_code, "api_error" if status_code >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.code, exc.message, param=exc.param, headers=exc.headers
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _FRAMEWORK_CODES.get(
        exc.status_code, "error" if exc.status_code < 500 else "internal_error"
    )
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = "No such route. See /docs for the API."
    return error_response(exc.status_code, code, message, headers=exc.headers)


def validation_error(errors: Sequence[Any]) -> ApiError:
    """400 invalid_request naming the first failed field, from pydantic's `errors()` (the
    framework's request validation, or a model validated by hand)."""
    first = errors[0] if errors else {}
    loc = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    param = ".".join(loc) or None
    # pydantic prefixes the message of a ValueError raised by a validator; a person needs
    # only the message.
    what = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    message = f"Invalid value for '{param}': {what}" if param else f"Invalid request: {what}"
    return ApiError(400, "invalid_request", message, param=param)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = validation_error(exc.errors())
    return error_response(error.status_code, error.code, error.message, param=error.param)


def _is_overloaded(exc: Exception) -> bool:
    """The database is there but has no room now: the pool is exhausted, or SQLite's write
    lock stayed taken past its busy timeout. The client may simply try again."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def unhandled_response(exc: Exception) -> JSONResponse:
    if _is_overloaded(exc):
        log.warning("database busy: %s", type(exc).__name__)
        return error_response(
            503,
            "service_unavailable",
            "The server is busy; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_BUSY_S)},
        )
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "The server failed on this request.")


class UnhandledErrors:
    """Any exception a route or middleware lets out becomes an answer in the envelope (503
    if the database is only busy, else 500), returned like any other: the metrics see it
    and the connection stays open. (Starlette's own handler re-raises after answering,
    which hides the 500 from the middlewares around it and closes the connection.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:
                raise  # part of an answer went out: only cutting the connection is honest
            await unhandled_response(exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
