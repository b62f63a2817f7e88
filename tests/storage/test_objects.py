"""Object store behaviour, the same tests on the local folder and on S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib
import io
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from botocore.client import BaseClient

from storage.objects import (
    CHUNK_SIZE,
    InvalidRangeError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreUnavailableError,
    S3ObjectStore,
    create_s3_client,
    open_object_store,
    tenant_key,
)

MIB = 1024 * 1024


@dataclass
class Backend:
    name: str
    store: ObjectStore
    # Everything physically stored, bypassing the store: files (temp files included) or
    # S3 objects plus `upload:<key>` for each pending multipart upload.
    list_everything: Callable[[], list[str]]


def _local_backend(root: Path) -> Backend:
    def list_everything() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    return Backend("local", LocalObjectStore(root), list_everything)


def _s3_backend(client: BaseClient, endpoint_url: str, bucket: str) -> Backend:
    def list_everything() -> list[str]:
        objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        names = [item["Key"] for item in objects] + [f"upload:{u['Key']}" for u in uploads]
        return sorted(names)

    store = S3ObjectStore(bucket, prefix="pfx", endpoint_url=endpoint_url, region_name="us-east-1")
    return Backend("s3", store, list_everything)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path / "objects")
    return _s3_backend(
        request.getfixturevalue("s3_client"),
        request.getfixturevalue("s3_server"),
        request.getfixturevalue("s3_bucket"),
    )


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


@pytest.fixture
def s3_backend(s3_client: BaseClient, s3_server: str, s3_bucket: str) -> Backend:
    return _s3_backend(s3_client, s3_server, s3_bucket)


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChunkOnlyReader(io.RawIOBase):
    """A non-seekable upload source that fails if anyone reads it whole."""

    def __init__(self, data: bytes, max_read: int = 16 * MIB) -> None:
        self._source = io.BytesIO(data)
        self._max_read = max_read

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert 0 <= size <= self._max_read, f"read({size}) would load the whole file"
        return self._source.read(size)


# -- put / get / size / exists / delete ---------------------------------------------------


def test_put_bytes_and_get_bytes(store: ObjectStore) -> None:
    assert store.put_bytes("a/b/c.txt", b"hello") == 5
    assert store.get_bytes("a/b/c.txt") == b"hello"
    assert store.size("a/b/c.txt") == 5
    assert store.exists("a/b/c.txt")
    assert not store.exists("a/b")


def test_put_bytes_overwrites(store: ObjectStore) -> None:
    store.put_bytes("k", b"first version")
    store.put_bytes("k", b"second")
    assert store.get_bytes("k") == b"second"


def test_put_bytes_empty_object(store: ObjectStore) -> None:
    assert store.put_bytes("empty", b"") == 0
    assert store.get_bytes("empty") == b""
    assert store.size("empty") == 0


def test_put_file_streams_in_chunks(store: ObjectStore) -> None:
    data = random_bytes(10 * MIB + 123)
    assert store.put_file("upload.bin", ChunkOnlyReader(data)) == len(data)
    assert store.size("upload.bin") == len(data)
    assert sha256_of(store.open_stream("upload.bin")) == hashlib.sha256(data).hexdigest()


def test_read_missing_object_raises_not_found(store: ObjectStore, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("missing")
    with pytest.raises(ObjectNotFoundError):
        store.open_stream("missing")
    with pytest.raises(ObjectNotFoundError):
        store.size("missing")
    with pytest.raises(ObjectNotFoundError):
        store.download_to("missing", target)
    assert not store.exists("missing")
    assert not target.exists()


def test_delete_object(backend: Backend) -> None:
    backend.store.put_bytes("x/y", b"1")
    backend.store.delete("x/y")
    assert not backend.store.exists("x/y")
    assert backend.list_everything() == []


def test_delete_missing_object_is_noop(store: ObjectStore) -> None:
    store.delete("never/existed")


def test_delete_prefix_removes_only_matching_keys(store: ObjectStore) -> None:
    keys = ["tenants/t1/a", "tenants/t1/b/c", "tenants/t10/a", "tenants/t2/a", "other"]
    for key in keys:
        store.put_bytes(key, key.encode())

    assert store.delete_prefix(tenant_key("t1")) == 2
    assert [key for key in keys if store.exists(key)] == ["tenants/t10/a", "tenants/t2/a", "other"]
    # A plain string prefix, as in S3: `tenants/t` matches t10 and t2.
    assert store.delete_prefix("tenants/t") == 2
    assert store.delete_prefix("nothing/here/") == 0
    assert store.exists("other")


@pytest.mark.parametrize("prefix", ["", "/", "/abs", "../x/", "a/../b", "a\\b/"])
def test_delete_prefix_rejects_bad_prefix(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)


@pytest.mark.parametrize(
    "key", ["", "/abs", "../x", "a/../b", "a/./b", "a\\b", "a//b", "a/", "x.speechq-tmp"]
)
def test_bad_key_is_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.open_writer(key)


# -- ranged streams -----------------------------------------------------------------------

STREAM_DATA = random_bytes(200_000, seed=1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 0),
        (10, 19),
        (65_536, 131_071),
        (199_999, None),
        (199_999, 199_999),
        (150_000, 10**9),  # end past the object is clamped
        (0, 199_999),
    ],
)
def test_open_stream_range(store: ObjectStore, start: int, end: int | None) -> None:
    store.put_bytes("audio.bin", STREAM_DATA)
    expected = STREAM_DATA[start : None if end is None else end + 1]

    with store.open_stream("audio.bin", start, end) as stream:
        chunks = list(stream)

    assert b"".join(chunks) == expected
    assert stream.length == len(expected)
    assert stream.total_size == len(STREAM_DATA)
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)


def test_open_stream_uses_64_kib_chunks(store: ObjectStore) -> None:
    store.put_bytes("audio.bin", STREAM_DATA)
    sizes = [len(chunk) for chunk in store.open_stream("audio.bin")]
    assert sizes == [CHUNK_SIZE] * 3 + [len(STREAM_DATA) - 3 * CHUNK_SIZE]


@pytest.mark.parametrize("start", [200_000, 250_000])
def test_open_stream_start_past_end_is_invalid_range(store: ObjectStore, start: int) -> None:
    store.put_bytes("audio.bin", STREAM_DATA)
    with pytest.raises(InvalidRangeError):
        store.open_stream("audio.bin", start)
    with pytest.raises(InvalidRangeError):
        store.open_stream("audio.bin", start, start + 10)


def test_open_stream_empty_object(store: ObjectStore) -> None:
    store.put_bytes("empty", b"")
    stream = store.open_stream("empty")
    assert list(stream) == []
    assert (stream.length, stream.total_size) == (0, 0)
    with pytest.raises(InvalidRangeError):
        store.open_stream("empty", 0, 5)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4)])
def test_open_stream_rejects_bad_arguments(store: ObjectStore, start: int, end: int | None) -> None:
    store.put_bytes("audio.bin", STREAM_DATA)
    with pytest.raises(ValueError) as excinfo:
        store.open_stream("audio.bin", start, end)
    assert not isinstance(excinfo.value, InvalidRangeError)


def test_open_stream_closed_early(store: ObjectStore) -> None:
    store.put_bytes("audio.bin", STREAM_DATA)
    with store.open_stream("audio.bin") as stream:
        assert len(next(stream)) == CHUNK_SIZE
    with pytest.raises(StopIteration):
        next(stream)


# -- streaming writer ---------------------------------------------------------------------


def test_writer_streams_20_mib(backend: Backend) -> None:
    chunk_data = [random_bytes(MIB, seed=i) for i in range(20)]
    with backend.store.open_writer("big/audio.wav") as writer:
        for chunk in chunk_data:
            writer.write(chunk)
        assert writer.bytes_written == 20 * MIB

    expected = hashlib.sha256(b"".join(chunk_data)).hexdigest()
    assert backend.store.size("big/audio.wav") == 20 * MIB
    assert sha256_of(backend.store.open_stream("big/audio.wav")) == expected
    # No temp file, no pending multipart upload: just the object.
    assert len(backend.list_everything()) == 1


def test_writer_abort_leaves_nothing(backend: Backend) -> None:
    with backend.store.open_writer("upload.bin") as writer:
        for i in range(10):  # past one 8 MiB part, so S3 has a multipart upload open
            writer.write(random_bytes(MIB, seed=i))
        writer.abort()
        with pytest.raises(ValueError):
            writer.write(b"more")

    assert not backend.store.exists("upload.bin")
    assert backend.list_everything() == []


def test_writer_exception_leaves_nothing(backend: Backend) -> None:
    with pytest.raises(RuntimeError, match="client went away"):
        with backend.store.open_writer("upload.bin") as writer:
            for i in range(10):
                writer.write(random_bytes(MIB, seed=i))
            raise RuntimeError("client went away")

    assert not backend.store.exists("upload.bin")
    assert backend.list_everything() == []


def test_writer_abort_keeps_previous_object(store: ObjectStore) -> None:
    store.put_bytes("k", b"old")
    with store.open_writer("k") as writer:
        writer.write(b"new, too large")
        writer.abort()
    assert store.get_bytes("k") == b"old"


def test_writer_enforces_size_limit_midway(backend: Backend) -> None:
    # The API's upload pattern: stream, and abort as soon as the limit is crossed.
    limit = 3 * MIB
    with backend.store.open_writer("upload.bin") as writer:
        for i in range(10):
            if writer.bytes_written + MIB > limit:
                writer.abort()
                break
            writer.write(random_bytes(MIB, seed=i))
    assert writer.bytes_written == limit
    assert backend.list_everything() == []


def test_writer_empty_object(store: ObjectStore) -> None:
    with store.open_writer("empty"):
        pass
    assert store.get_bytes("empty") == b""


# -- download, presigned URLs, check ------------------------------------------------------


def test_download_to(store: ObjectStore, tmp_path: Path) -> None:
    data = random_bytes(300_000)
    store.put_bytes("a/b.bin", data)
    target = tmp_path / "downloads" / "b.bin"
    store.download_to("a/b.bin", target)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_presigned_url(backend: Backend) -> None:
    data = random_bytes(100_000)
    backend.store.put_bytes("share/me.mp3", data)
    url = backend.store.presigned_url("share/me.mp3", expires_s=600)
    if backend.name == "local":
        assert url is None
        return
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data


def test_check_passes(store: ObjectStore) -> None:
    store.check()


def test_check_fails_when_local_root_is_gone(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (tmp_path / "objects").rmdir()
    with pytest.raises(ObjectStoreUnavailableError):
        store.check()


def test_check_fails_when_bucket_is_missing(s3_server: str) -> None:
    store = S3ObjectStore("no-such-bucket", endpoint_url=s3_server, region_name="us-east-1")
    with pytest.raises(ObjectStoreUnavailableError):
        store.check()


@pytest.mark.timeout(15)
def test_check_fails_against_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = create_s3_client(
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name="us-east-1",
        connect_timeout_s=0.5,
        max_attempts=1,
    )
    store = S3ObjectStore("bucket", client=client)
    with pytest.raises(ObjectStoreUnavailableError):
        store.check()
    with pytest.raises(ObjectStoreUnavailableError):
        store.get_bytes("k")


# -- S3 specifics -------------------------------------------------------------------------


def test_s3_keys_live_under_prefix(s3_backend: Backend) -> None:
    s3_backend.store.put_bytes("a/b", b"1")
    assert s3_backend.list_everything() == ["pfx/a/b"]


def test_s3_writer_uses_multipart_upload(
    s3_backend: Backend, s3_client: BaseClient, s3_bucket: str
) -> None:
    with s3_backend.store.open_writer("big.wav") as writer:
        for i in range(9):
            writer.write(random_bytes(MIB, seed=i))
        # One 8 MiB part is up; the object is not visible yet.
        assert s3_backend.list_everything() == ["upload:pfx/big.wav"]
        assert not s3_backend.store.exists("big.wav")
        for i in range(9, 20):
            writer.write(random_bytes(MIB, seed=i))

    head = s3_client.head_object(Bucket=s3_bucket, Key="pfx/big.wav")
    assert head["ContentLength"] == 20 * MIB
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB
    assert s3_backend.list_everything() == ["pfx/big.wav"]


def test_s3_writer_small_object_is_single_put(
    s3_backend: Backend, s3_client: BaseClient, s3_bucket: str
) -> None:
    data = random_bytes(3 * MIB)
    with s3_backend.store.open_writer("small.wav") as writer:
        writer.write(data)
        assert s3_backend.list_everything() == []

    head = s3_client.head_object(Bucket=s3_bucket, Key="pfx/small.wav")
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()


def test_s3_put_file_large_uses_multipart(
    s3_backend: Backend, s3_client: BaseClient, s3_bucket: str
) -> None:
    data = random_bytes(10 * MIB)
    assert s3_backend.store.put_file("big.bin", io.BytesIO(data)) == len(data)
    head = s3_client.head_object(Bucket=s3_bucket, Key="pfx/big.bin")
    assert head["ETag"].strip('"').endswith("-2")
    assert s3_backend.store.get_bytes("big.bin") == data


def test_s3_presigned_url_rejects_bad_expiry(s3_backend: Backend) -> None:
    with pytest.raises(ValueError):
        s3_backend.store.presigned_url("k", expires_s=0)


# -- local specifics ----------------------------------------------------------------------


def test_local_writer_uses_temp_file_in_target_dir(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with store.open_writer("a/b/file.bin") as writer:
        writer.write(b"partial")
        (temp,) = (tmp_path / "a" / "b").iterdir()
        assert temp.name.startswith(".file.bin.")
        assert not (tmp_path / "a" / "b" / "file.bin").exists()
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["file.bin"]


def test_local_delete_prefix_prunes_dirs_and_spares_writers(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("tenants/t1/jobs/j1/out.mp3", b"1")
    store.put_bytes("tenants/t1/jobs/j2/out.mp3", b"2")
    with store.open_writer("tenants/t1/uploads/u1") as writer:
        writer.write(b"in flight")
        assert store.delete_prefix(tenant_key("t1")) == 2
    assert not (tmp_path / "tenants" / "t1" / "jobs").exists()
    assert store.get_bytes("tenants/t1/uploads/u1") == b"in flight"


# -- tenant keys and URLs -----------------------------------------------------------------


def test_tenant_key_layout() -> None:
    assert tenant_key("t1", "jobs", "j1", "audio.mp3") == "tenants/t1/jobs/j1/audio.mp3"
    assert tenant_key("team_42") == "tenants/team_42/"


@pytest.mark.parametrize(
    "parts",
    [
        ("",),
        ("..",),
        (".",),
        ("a/b",),
        ("a\\b",),
        ("t1", ""),
        ("t1", ".."),
        ("t1", "../t2"),
        ("t1", "jobs/../../t2"),
        ("t1", "x\ny"),
    ],
)
def test_tenant_key_rejects_bad_parts(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        tenant_key(*parts)


def test_open_object_store_file_url(tmp_path: Path) -> None:
    store = open_object_store(f"file://{tmp_path}/blobs")
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path.resolve() / "blobs"
    localhost = open_object_store(f"file://localhost{tmp_path}/blobs")
    assert isinstance(localhost, LocalObjectStore)
    assert localhost.root == store.root


def test_open_object_store_s3_url(s3_server: str, s3_bucket: str) -> None:
    store = open_object_store(
        f"s3://{s3_bucket}/speechq/prod/", endpoint_url=s3_server, region_name="us-east-1"
    )
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix) == (s3_bucket, "speechq/prod")
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"

    bare = open_object_store(f"s3://{s3_bucket}", endpoint_url=s3_server)
    assert isinstance(bare, S3ObjectStore)
    assert bare.prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/abs/path",
        "relative/path",
        "file://relative/path",
        "file:relative",
        "s3://",
        "s3:///prefix",
        "s3://bucket/a/../b",
        "s3://bucket/p?versionId=1",
        "http://example.com/bucket",
        "gs://bucket/prefix",
    ],
)
def test_open_object_store_rejects_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        open_object_store(url)
