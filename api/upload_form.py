"""Parse a multipart upload with a size limit enforced while it streams in.

Starlette's parser spools a file part to disk and only then lets us look at its size; this
subclass counts the bytes of each file part as they arrive and stops reading the request
at the first byte past the limit, so a 200 MB upload to a 25 MB model is refused after
25 MB, memory stays flat (the spool moves to disk past 1 MB) and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from api.errors import ApiError
from speechq.text_checks import forbidden_character

__all__ = ["FileTooLarge", "parse_limited_form", "file_too_large_error"]

FIELD_LIMIT_BYTES = 64 * 1024
# Room for the other fields and multipart framing when judging Content-Length.
FRAMING_SLACK_BYTES = 256 * 1024


class FileTooLarge(Exception):
    def __init__(self, passed_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"upload passed {limit_bytes} bytes")
        self.passed_bytes = passed_bytes
        self.limit_bytes = limit_bytes


def file_too_large_error(passed_bytes: int, limit_bytes: int, param: str = "file") -> ApiError:
    # LiteLLM's wording, which its users' clients may match on.
    return ApiError(
        413,
        "file_too_large",
        "File size is too large. Please check your file size. "
        f"Passed file size: {passed_bytes / 1_000_000:.2f} MB. "
        f"Max file size: {limit_bytes / 1_000_000:g} MB",
        param=param,
    )


class _LimitedParser(MultiPartParser):
    def __init__(self, request: Request, limit_for: Callable[[str | None], int]) -> None:
        super().__init__(
            request.headers,
            request.stream(),
            max_files=1,
            max_fields=32,
            max_part_size=FIELD_LIMIT_BYTES,
        )
        self.limit_for = limit_for
        self.model: str | None = None
        self.file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self.file_bytes += end - start
            limit = self.limit_for(self.model)
            if self.file_bytes > limit:
                raise FileTooLarge(self.file_bytes, limit)
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        super().on_part_end()
        if self._current_part.file is None and self._current_part.field_name == "model":
            self.model = self._current_part.data.decode("utf-8", "replace")


async def parse_limited_form(request: Request, limit_for: Callable[[str | None], int]) -> FormData:
    """`limit_for(model)` gives the byte limit for the model named so far (None: not yet
    seen, so the largest any model allows); the caller checks the final model again."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        # No file in such a form: fine for a transcription by `url`.
        form = await request.form(max_files=0, max_fields=32)
        _check_fields(form)
        return form
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            400,
            "invalid_request",
            "Send the audio as multipart/form-data with a 'file' field (or a 'url' field).",
            param="file",
        )
    declared = request.headers.get("content-length")
    loosest = limit_for(None)
    if declared and declared.isdigit() and int(declared) > loosest + FRAMING_SLACK_BYTES:
        raise file_too_large_error(int(declared), loosest)
    parser = _LimitedParser(request, limit_for)
    try:
        form = await parser.parse()
    except FileTooLarge as exc:
        raise file_too_large_error(exc.passed_bytes, exc.limit_bytes) from None
    except MultiPartException as exc:
        if exc.message.startswith("Part exceeded maximum size"):
            raise ApiError(
                413,
                "request_too_large",
                f"A form field is larger than {FIELD_LIMIT_BYTES // 1024} KB; only the file "
                "part may be larger.",
            ) from None
        raise ApiError(400, "invalid_request", f"Malformed multipart body: {exc.message}") from None
    _check_fields(form)
    return form


def _check_fields(form: FormData) -> None:
    for name, value in form.multi_items():
        if isinstance(value, str) and (problem := forbidden_character(value)) is not None:
            raise ApiError(
                400, "invalid_request", f"'{name}' holds {problem}; remove it.", param=name
            )
