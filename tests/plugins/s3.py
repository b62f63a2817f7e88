"""S3 for tests: moto in server mode over real HTTP, as boto3 meets MinIO or AWS.

Load with `pytest_plugins = ["tests.plugins.s3"]`. Fixtures:

- `s3_server` (session): the endpoint URL, e.g. `http://127.0.0.1:40123`.
- `s3_client` (session): a boto3 S3 client pointed at it.
- `s3_bucket` (function): a fresh, uniquely named, empty bucket; emptied and deleted after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from botocore.client import BaseClient
from moto.server import ThreadedMotoServer

from storage.objects import create_s3_client

__all__ = ["s3_bucket", "s3_client", "s3_server"]

_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Anything that would make boto3 look past the dummy credentials (a profile, a token,
# the developer's own ~/.aws files, a global endpoint override).
_UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto S3 server on a free 127.0.0.1 port, with dummy credentials."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in _DUMMY_AWS_ENV.items():
            env.setenv(name, value)
        for name in _UNSET_AWS_ENV:
            env.delenv(name, raising=False)
        missing = tmp_path_factory.mktemp("aws") / "missing"
        env.setenv("AWS_CONFIG_FILE", str(missing))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))

        # Port 0: the OS picks a free port, so parallel sessions never collide.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: str) -> BaseClient:
    """A boto3 S3 client for `s3_server`, for assertions that bypass the object store."""
    return create_s3_client(endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client: BaseClient) -> Iterator[str]:
    """Name of a fresh, empty bucket; emptied and deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    # moto keeps objects in memory for the whole session; free them.
    uploads = s3_client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    for upload in uploads:
        s3_client.abort_multipart_upload(
            Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)
