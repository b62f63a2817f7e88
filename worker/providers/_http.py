"""What the HTTP providers share: one call wrapper and one way to translate httpx failures.

Each provider module still has its one mapper (`map_openai_error`, `map_google_error`, ...).
The mapper passes in only what is its own: its label, how to read its error body, the
statuses (or body codes) that mean something else there, and the secrets to mask. The rest
is here, once:

    httpx.TimeoutException     -> ProviderTimeout
    other httpx transport error -> ProviderUnavailable
    HTTP 429                   -> RateLimited, with Retry-After (or what the body says)
    other HTTP status          -> the body's own verdict, else `status_errors`, else
                                  ProviderUnavailable (5xx, and what nobody documented)
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)

__all__ = [
    "MAX_DETAIL_CHARS",
    "STATUS_ERRORS",
    "ErrorDetail",
    "map_http_error",
    "parse_retry_after_s",
    "parse_timeout_s",
    "post",
    "read_error_text",
    "read_json",
    "redact",
]

# What a status means when the provider's table says nothing else about it.
STATUS_ERRORS: Mapping[int, type[ProviderError]] = MappingProxyType(
    {
        400: InvalidInput,
        401: AuthenticationFailed,
        403: AuthenticationFailed,
        404: UnsupportedFeature,  # unknown model or endpoint on this deployment
        408: ProviderTimeout,
        409: ProviderUnavailable,
        413: InvalidInput,
        415: InvalidInput,
        422: InvalidInput,
    }
)
# An error body that is not the provider's envelope is quoted up to this length.
MAX_DETAIL_CHARS = 300


@dataclass(frozen=True)
class ErrorDetail:
    """What a provider reads from an error body."""

    message: str
    # The body's own code decides over `status_errors` (a 429 is always RateLimited).
    error_class: type[ProviderError] | None = None
    # How long the body says to wait; `Retry-After` is read when it says nothing.
    retry_after_s: float | None = None


def map_http_error(
    exc: httpx.HTTPError,
    *,
    label: str,
    read_detail: Callable[[httpx.Response], str | ErrorDetail],
    status_errors: Mapping[int, type[ProviderError]] = STATUS_ERRORS,
    secrets: Iterable[str | None] = (),
) -> ProviderError:
    """Translate an httpx exception (including `HTTPStatusError`) into a provider error.

    Messages start with `label`; every secret in them becomes `***`.
    """
    secrets = tuple(secrets)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{label}: request timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        status = response.status_code
        detail = read_detail(response)
        if isinstance(detail, str):
            detail = ErrorDetail(detail)
        message = redact(f"{label} HTTP {status}: {detail.message}", secrets)
        if status == 429:
            error_class: type[ProviderError] = RateLimited
        else:
            error_class = detail.error_class or status_errors.get(status, ProviderUnavailable)
        if error_class is RateLimited:
            retry_after_s = detail.retry_after_s
            if retry_after_s is None:
                retry_after_s = parse_retry_after_s(response.headers)
            return RateLimited(message, retry_after_s=retry_after_s, status_code=status)
        return error_class(message, status_code=status)
    return ProviderUnavailable(
        redact(f"{label}: could not reach the server ({type(exc).__name__}: {exc})", secrets)
    )


def post(
    http: httpx.Client,
    url: str,
    *,
    timeout_s: float | None,
    map_error: Callable[[httpx.HTTPError], ProviderError],
    **kwargs: Any,
) -> httpx.Response:
    """POST and insist on a 2xx; any httpx failure is raised as `map_error(exc)` from it.

    `timeout_s=None` keeps the client's own timeout.
    """
    try:
        response = http.post(
            url,
            timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            **kwargs,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise map_error(exc) from exc
    return response


def parse_timeout_s(params: Mapping[str, Any]) -> float | None:
    """A deployment's `timeout` param in seconds; None leaves the client's default."""
    timeout = params.get("timeout")
    return float(timeout) if timeout is not None else None


def parse_retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    milliseconds = _parse_finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _parse_finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def read_json(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def read_error_text(response: httpx.Response) -> str:
    """An error body that is no envelope we know: its text, cut short, or the reason phrase."""
    text = response.text.strip()
    return text[:MAX_DETAIL_CHARS] if text else response.reason_phrase


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with each secret replaced by `***`.

    Servers and proxies echo keys and tokens back; they must not reach logs or job rows.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _parse_finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
