"""Object store: audio, uploads and audiobook files, on a local folder or any S3 API.

Both backends implement `ObjectStore` and behave the same way: the same key rules, the
same range semantics, the same errors. Keys are `/`-separated relative paths; per-tenant
keys come from `tenant_key()`.

Errors (key validation and bad arguments raise plain `ValueError`):

    ObjectStoreError
     ├── ObjectNotFoundError          (also a LookupError)
     ├── InvalidRangeError            (also a ValueError)
     └── ObjectStoreUnavailableError
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_PART_SIZE",
    "InvalidRangeError",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreUnavailableError",
    "ObjectStream",
    "ObjectWriter",
    "S3ObjectStore",
    "create_s3_client",
    "open_object_store",
    "tenant_key",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# S3 rejects non-final multipart parts below 5 MiB.
_MIN_PART_SIZE = 5 * 1024 * 1024
_MAX_KEY_BYTES = 1024  # S3's limit; enforced locally too so both backends agree.
# Suffix of in-flight local writer files; reserved so a key can never collide with one.
_TEMP_SUFFIX = ".speechq-tmp"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ObjectStoreError(Exception):
    """Base class for every object store failure."""


class ObjectNotFoundError(ObjectStoreError, LookupError):
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key!r}")
        self.key = key


class InvalidRangeError(ObjectStoreError, ValueError):
    """The requested byte range starts at or beyond the end of the object (HTTP 416)."""


class ObjectStoreUnavailableError(ObjectStoreError):
    """The store cannot be reached or is not usable (network, missing bucket or root)."""


def _validate_segment(segment: str, what: str = "key segment") -> None:
    if not segment:
        raise ValueError(f"{what} must not be empty")
    if segment in (".", ".."):
        raise ValueError(f"{what} must not be {segment!r}")
    if "/" in segment or "\\" in segment:
        raise ValueError(f"{what} must not contain a slash or backslash: {segment!r}")
    if _CONTROL_CHARS.search(segment):
        raise ValueError(f"{what} must not contain control characters: {segment!r}")


def _validate_key(key: str) -> list[str]:
    """Check a key and return its segments."""
    if not key:
        raise ValueError("object key must not be empty")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative: {key!r}")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {_MAX_KEY_BYTES} bytes")
    segments = key.split("/")
    for segment in segments:
        _validate_segment(segment)
    if segments[-1].endswith(_TEMP_SUFFIX):
        raise ValueError(f"object key must not end with {_TEMP_SUFFIX!r}")
    return segments


def _validate_prefix(prefix: str) -> None:
    # An empty prefix would wipe the whole store; nothing in speechq needs that.
    if not prefix:
        raise ValueError("prefix must not be empty")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if not body or body.startswith("/"):
        raise ValueError(f"prefix must be relative and non-empty: {prefix!r}")
    for segment in body.split("/"):
        _validate_segment(segment, "prefix segment")


def _validate_range(start: int, end: int | None) -> None:
    if start < 0:
        raise ValueError(f"range start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"range end ({end}) must be >= start ({start})")


def tenant_key(tenant: str, *parts: str) -> str:
    """`tenants/{tenant}/{part}/...`; with no parts, the tenant's prefix (ending in `/`).

    Each part is one path segment: slashes, backslashes, `.` and `..` are rejected so a
    caller-supplied value can never reach another tenant's keys.
    """
    _validate_segment(tenant, "tenant")
    for part in parts:
        _validate_segment(part, "key part")
    if not parts:
        return f"tenants/{tenant}/"
    return "/".join(("tenants", tenant, *parts))


class ObjectStream(Iterator[bytes]):
    """Chunks (at most `CHUNK_SIZE` bytes each) of one object or byte range.

    `length` is the number of bytes the stream yields, `total_size` the whole object's
    size (for `Content-Range`). Closes its source when exhausted, on error or on `close()`.
    """

    def __init__(
        self,
        chunks: Generator[bytes, None, None],
        on_close: Callable[[], None],
        *,
        length: int,
        total_size: int,
    ) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._closed = False
        self.length = length
        self.total_size = total_size

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks.close()
            self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ObjectWriter(ABC):
    """Writes one object chunk by chunk; the object appears only on `close()`.

    Used as a context manager: a clean exit commits, an exception aborts. `abort()`
    discards everything written (an older object under the key is left untouched); a
    later `close()` is then a no-op, so a caller may abort inside the `with` block.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._bytes_written = 0
        self._state = "open"

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    def write(self, chunk: bytes) -> None:
        if self._state != "open":
            raise ValueError(f"writer for {self.key!r} is {self._state}")
        if chunk:
            self._write(chunk)
            self._bytes_written += len(chunk)

    def close(self) -> None:
        if self._state != "open":
            return
        try:
            self._commit()
        except BaseException:
            self._abort_quietly()
            raise
        self._state = "closed"

    def abort(self) -> None:
        if self._state == "open":
            self._state = "aborted"
            self._abort()

    def _abort_quietly(self) -> None:
        # Never let a failed cleanup hide the error that caused it.
        try:
            self.abort()
        except Exception:
            logger.warning("could not clean up aborted write of %r", self.key, exc_info=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort_quietly()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


class ObjectStore(ABC):
    """Where job audio and uploads live. Keys are relative `/`-separated paths."""

    @abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """Start streaming a new object; see `ObjectWriter`."""

    def put_file(self, key: str, fileobj: BinaryIO) -> int:
        """Store everything read from `fileobj` (in chunks); return the bytes written."""
        with self.open_writer(key) as writer:
            while chunk := fileobj.read(CHUNK_SIZE):
                writer.write(chunk)
        return writer.bytes_written

    def put_bytes(self, key: str, data: bytes) -> int:
        return self.put_file(key, io.BytesIO(data))

    @abstractmethod
    def open_stream(self, key: str, start: int = 0, end: int | None = None) -> ObjectStream:
        """Stream bytes `start..end` (inclusive, like HTTP Range; `end` past the object is
        clamped). Raises `ObjectNotFoundError` / `InvalidRangeError` before returning."""

    def get_bytes(self, key: str) -> bytes:
        with self.open_stream(key) as stream:
            return b"".join(stream)

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a plain string prefix, as
        in S3: `a/b` also matches `a/bc`); return how many were deleted."""

    @abstractmethod
    def download_to(self, key: str, path: Path) -> None:
        """Copy an object to a local file; `path` appears only once complete."""

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A time-limited GET URL, or None if the backend cannot serve one."""

    @abstractmethod
    def check(self) -> None:
        """Raise `ObjectStoreUnavailableError` unless the store is usable."""


# -- local filesystem ---------------------------------------------------------------------


def _is_temp_name(name: str) -> bool:
    return name.endswith(_TEMP_SUFFIX)


def _make_private_dirs(directory: Path) -> None:
    """`directory` and its missing parents, each 0700 whatever the umask (the store may be
    used as a library): audio and transcripts are for their tenant only."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir():
                raise


def _make_temp_file(directory: Path, name: str) -> tuple[int, Path]:
    # Same directory as the target so `os.replace` is an atomic rename. mkstemp makes the
    # file 0600 whatever the umask, and the rename keeps that mode for the object.
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=_TEMP_SUFFIX)
    return fd, Path(temp)


class _LocalWriter(ObjectWriter):
    def __init__(self, key: str, path: Path) -> None:
        super().__init__(key)
        _make_private_dirs(path.parent)
        fd, self._temp = _make_temp_file(path.parent, path.name)
        self._path = path
        self._file = os.fdopen(fd, "wb")

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self) -> None:
        self._file.flush()
        # Flush to disk before the rename, so a crash cannot leave a complete-looking
        # but empty object.
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._path)

    def _abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)


def _read_file_chunks(file: BinaryIO, length: int) -> Generator[bytes, None, None]:
    remaining = length
    while remaining > 0:
        chunk = file.read(min(CHUNK_SIZE, remaining))
        if not chunk:
            raise ObjectStoreError("object shrank while it was being read")
        remaining -= len(chunk)
        yield chunk


class LocalObjectStore(ObjectStore):
    """Objects as files under `root` (the embedded default): files 0600, and the folders
    it makes 0700. An existing `root` keeps its mode."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        _make_private_dirs(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_validate_key(key))

    def open_writer(self, key: str) -> ObjectWriter:
        return _LocalWriter(key, self._path(key))

    def open_stream(self, key: str, start: int = 0, end: int | None = None) -> ObjectStream:
        _validate_range(start, end)
        path = self._path(key)
        try:
            file = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        try:
            total = os.fstat(file.fileno()).st_size
            # Same rule as S3: only "the whole object" may start at its end (empty object).
            if start >= total and not (start == 0 and end is None):
                raise InvalidRangeError(f"range start {start} is beyond {key!r} ({total} bytes)")
            last = total - 1 if end is None else min(end, total - 1)
            length = max(0, last - start + 1)
            file.seek(start)
        except BaseException:
            file.close()
            raise
        return ObjectStream(
            _read_file_chunks(file, length), file.close, length=length, total_size=total
        )

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return path.stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.is_dir():
            path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        _validate_prefix(prefix)
        directory, _, name_start = prefix.rpartition("/")
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not base.is_dir():
            return 0
        deleted = 0
        for entry in base.iterdir():
            if not entry.name.startswith(name_start):
                continue
            if entry.is_dir() and not entry.is_symlink():
                deleted += self._delete_tree(entry)
            elif not _is_temp_name(entry.name):
                entry.unlink(missing_ok=True)
                deleted += 1
        self._prune_empty_dirs(base)
        return deleted

    def _delete_tree(self, directory: Path) -> int:
        deleted = 0
        for dirpath, _dirnames, filenames in os.walk(directory, topdown=False):
            for filename in filenames:
                # In-flight writers' temp files are left alone; they clean up after
                # themselves.
                if not _is_temp_name(filename):
                    Path(dirpath, filename).unlink(missing_ok=True)
                    deleted += 1
            self._try_rmdir(Path(dirpath))
        return deleted

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and self._try_rmdir(directory):
            directory = directory.parent

    @staticmethod
    def _try_rmdir(directory: Path) -> bool:
        try:
            directory.rmdir()
        except OSError:  # not empty, or already gone
            return False
        return True

    def download_to(self, key: str, path: Path) -> None:
        source = self._path(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            source_file = source.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        fd, temp = _make_temp_file(path.parent, path.name)
        try:
            with source_file, os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source_file, target, CHUNK_SIZE)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        self._path(key)  # still reject bad keys, as S3 does
        return None

    def check(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreUnavailableError(f"object store root {self.root} is not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreUnavailableError(f"object store root {self.root} is not writable")


# -- S3 -----------------------------------------------------------------------------------


def create_s3_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    max_attempts: int = 5,
) -> BaseClient:
    """A boto3 S3 client tuned for AWS and S3-compatible servers (MinIO, R2, moto)."""
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "max_attempts": max_attempts},
        signature_version="s3v4",
        # Custom endpoints (MinIO, moto, an IP address) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # botocore >= 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible servers reject; send them only where the API requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A fresh Session per client: the default session is not safe to share across threads.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)


def _client_error_code(exc: ClientError) -> tuple[str, int]:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


@contextmanager
def _translate_s3_errors(key: str) -> Iterator[None]:
    """Map boto3/botocore exceptions to the `ObjectStoreError` tree, once, here."""
    try:
        yield
    except ClientError as exc:
        code, status = _client_error_code(exc)
        if code == "NoSuchBucket":
            raise ObjectStoreUnavailableError(f"S3 bucket does not exist ({key!r})") from exc
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            raise ObjectNotFoundError(key) from exc
        if code == "InvalidRange" or status == 416:
            raise InvalidRangeError(f"range not satisfiable for {key!r}") from exc
        if status >= 500:
            raise ObjectStoreUnavailableError(f"S3 error {code} for {key!r}") from exc
        raise ObjectStoreError(f"S3 error {code or status} for {key!r}") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise ObjectStoreUnavailableError(f"S3 unreachable ({key!r}): {exc}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise ObjectStoreError(f"S3 failure for {key!r}: {exc}") from exc


def _total_size(content_range: str | None, length: int) -> int:
    # "bytes 0-9/100" -> 100; absent when no Range was sent.
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return length


class _CountingReader:
    """Counts what s3transfer reads. Exposing only `read()` makes s3transfer take its
    non-seekable path, which reads part-sized chunks sequentially (bounded memory)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data


class _S3Writer(ObjectWriter):
    """Buffers up to one part; the first full part starts a multipart upload. An object
    smaller than one part goes as a single `put_object`."""

    def __init__(
        self, key: str, client: BaseClient, bucket: str, full_key: str, part_size: int
    ) -> None:
        super().__init__(key)
        self._client = client
        self._bucket = bucket
        self._full_key = full_key
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _write(self, chunk: bytes) -> None:
        self._buffer += chunk
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._upload_part(part)

    def _upload_part(self, data: bytes) -> None:
        with _translate_s3_errors(self.key):
            if self._upload_id is None:
                response = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._full_key
                )
                self._upload_id = response["UploadId"]
            number = len(self._parts) + 1
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._full_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    def _commit(self) -> None:
        if self._upload_id is None:
            with _translate_s3_errors(self.key):
                self._client.put_object(
                    Bucket=self._bucket, Key=self._full_key, Body=bytes(self._buffer)
                )
            self._buffer.clear()
            return
        if self._buffer:  # the last part may be smaller than the minimum
            self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        with _translate_s3_errors(self.key):
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._full_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def _abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            with _translate_s3_errors(self.key):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._full_key, UploadId=self._upload_id
                )


def _iter_body(body: Any, key: str) -> Generator[bytes, None, None]:
    with _translate_s3_errors(key):
        yield from body.iter_chunks(CHUNK_SIZE)


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket (AWS, MinIO, R2, ...), keys joined under `prefix`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: BaseClient | None = None,
        *,
        part_size_bytes: int = DEFAULT_PART_SIZE,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            _validate_key(prefix)
        if part_size_bytes < _MIN_PART_SIZE:
            raise ValueError(f"part_size_bytes must be >= {_MIN_PART_SIZE}")
        self.bucket = bucket
        self.prefix = prefix
        self._part_size = part_size_bytes
        self._client = client or create_s3_client(
            endpoint_url=endpoint_url, region_name=region_name
        )
        self._transfer_config = TransferConfig(
            multipart_threshold=part_size_bytes,
            multipart_chunksize=part_size_bytes,
            max_concurrency=4,
        )
        # s3transfer's knob, not in boto3's constructor: caps the memory a non-seekable
        # upload (every `put_file`) may hold at four parts.
        self._transfer_config.max_in_memory_upload_chunks = 4

    def _full_key(self, key: str) -> str:
        _validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def open_writer(self, key: str) -> ObjectWriter:
        return _S3Writer(key, self._client, self.bucket, self._full_key(key), self._part_size)

    def put_file(self, key: str, fileobj: BinaryIO) -> int:
        full_key = self._full_key(key)
        reader = _CountingReader(fileobj)
        with _translate_s3_errors(key):
            self._client.upload_fileobj(reader, self.bucket, full_key, Config=self._transfer_config)
        return reader.bytes_read

    def put_bytes(self, key: str, data: bytes) -> int:
        full_key = self._full_key(key)
        with _translate_s3_errors(key):
            self._client.put_object(Bucket=self.bucket, Key=full_key, Body=data)
        return len(data)

    def open_stream(self, key: str, start: int = 0, end: int | None = None) -> ObjectStream:
        _validate_range(start, end)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full_key(key)}
        # No Range header for the whole object: S3 answers 416 to `bytes=0-` when empty.
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _translate_s3_errors(key):
            response = self._client.get_object(**request)
        body = response["Body"]
        length = int(response["ContentLength"])
        return ObjectStream(
            _iter_body(body, key),
            body.close,
            length=length,
            total_size=_total_size(response.get("ContentRange"), length),
        )

    def _head(self, key: str) -> dict[str, Any]:
        with _translate_s3_errors(key):
            return self._client.head_object(Bucket=self.bucket, Key=self._full_key(key))

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with _translate_s3_errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full_key(key))

    def delete_prefix(self, prefix: str) -> int:
        _validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        deleted = 0
        paginator = self._client.get_paginator("list_objects_v2")
        with _translate_s3_errors(prefix):
            # Pages hold at most 1,000 keys, which is also delete_objects' limit.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not objects:
                    continue
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
                if errors := response.get("Errors"):
                    raise ObjectStoreError(
                        f"could not delete {len(errors)} objects under {prefix!r}: "
                        f"{errors[0].get('Code')}"
                    )
                deleted += len(objects)
        return deleted

    def download_to(self, key: str, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _translate_s3_errors(key):
            # s3transfer writes to a temporary name and renames it when complete.
            self._client.download_file(
                self.bucket, self._full_key(key), str(path), Config=self._transfer_config
            )

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        # SigV4 presigned URLs are valid for at most seven days.
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise ValueError(f"expires_s must be between 1 and 604800, got {expires_s}")
        with _translate_s3_errors(key):
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._full_key(key)},
                ExpiresIn=expires_s,
            )

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreUnavailableError(
                f"S3 bucket {self.bucket!r} is not reachable: {exc}"
            ) from exc


# -- factory ------------------------------------------------------------------------------


def open_object_store(
    storage_url: str, *, endpoint_url: str | None = None, region_name: str | None = None
) -> ObjectStore:
    """`file:///abs/path` -> `LocalObjectStore`; `s3://bucket/prefix` -> `S3ObjectStore`.

    A file URL's path is taken literally (not percent-decoded), as settings builds it.
    """
    if storage_url.startswith("file://"):
        rest = storage_url.removeprefix("file://")
        if rest.startswith("localhost/"):
            rest = rest.removeprefix("localhost")
        if not rest.startswith("/"):
            raise ValueError(
                f"storage URL {storage_url!r} must name an absolute path: file:///abs/path"
            )
        return LocalObjectStore(Path(rest))
    if storage_url.startswith("s3://"):
        bucket, _, prefix = storage_url.removeprefix("s3://").partition("/")
        if not bucket or any(char in storage_url for char in "?#"):
            raise ValueError(f"storage URL {storage_url!r} must look like s3://bucket/prefix")
        return S3ObjectStore(bucket, prefix, endpoint_url=endpoint_url, region_name=region_name)
    raise ValueError(
        f"unsupported storage URL {storage_url!r}: use file:///abs/path or s3://bucket/prefix"
    )
