"""Provider errors. The router decides what to do from the class alone.

ProviderError
├── RetryableError            try the same deployment again, then cool it down
│   ├── RateLimited           429; carries `retry_after_s`
│   ├── ProviderTimeout       the call or the connection timed out
│   └── ProviderUnavailable   5xx, connection refused, undecodable answer
└── PermanentError            do not retry this deployment
    ├── AuthenticationFailed  401/403: next deployment, then the fallback model
    ├── UnsupportedFeature    404/unknown model, or cannot do this: next deployment
    └── InvalidInput          400/413/415/422 about the input itself: fail the job
"""

from __future__ import annotations

__all__ = [
    "ProviderError",
    "RetryableError",
    "RateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "PermanentError",
    "AuthenticationFailed",
    "UnsupportedFeature",
    "InvalidInput",
]


class ProviderError(Exception):
    """Any failure of a provider call."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class RetryableError(ProviderError):
    """A failure that may pass if the same call is made again."""


class RateLimited(RetryableError):
    """The provider asked us to slow down (HTTP 429)."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_s = retry_after_s


class ProviderTimeout(RetryableError):
    """The call timed out."""


class ProviderUnavailable(RetryableError):
    """The provider failed on its side or could not be reached."""


class PermanentError(ProviderError):
    """A failure that the same call will hit again."""


class AuthenticationFailed(PermanentError):
    """The deployment's credentials were refused."""


class UnsupportedFeature(PermanentError):
    """The deployment cannot serve this kind of request."""


class InvalidInput(PermanentError):
    """The provider refused the input itself; no other deployment will do better."""
