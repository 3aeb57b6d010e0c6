"""S3 client construction, the versioned snapshot bucket, and reading objects in clear.

Temporal owns retries, so the client's own retries are kept small: an unreachable endpoint
surfaces within seconds as an error that names the endpoint, and the activity's retry policy
decides what happens next. An ``https://`` endpoint is verified against the system's roots,
or the CA bundle the target names (``LABELFABRIC_S3_CA_BUNDLE``; boto3's ``AWS_CA_BUNDLE``
works too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from formats import sealed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


@dataclass(frozen=True, kw_only=True)
class S3Target:
    endpoint_url: str
    bucket: str
    region: str = "us-east-1"
    access_key: str | None = None  # None: boto3's own chain (AWS_* variables, files)
    secret_key: str | None = None
    ca_bundle: str | None = None  # PEM file of the CAs an https endpoint is checked against


def make_s3_client(target: S3Target) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        verify=target.ca_bundle,  # None: verified against the default roots
        config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )


def ensure_versioned_bucket(client: S3Client, bucket: str) -> None:
    """Create the bucket if needed and switch versioning on. Safe to call any number of times."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket)
    status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def put_once(
    s3: S3Client,
    bucket: str,
    key: str,
    body: Any,
    *,
    writer: str,
    sha: str,
    content_type: str = "application/octet-stream",
    metadata: Mapping[str, str] | None = None,
) -> tuple[str | None, Any]:
    """Put a new object version unless `writer` already put this content (`sha`) at `key`.

    Returns (the existing version id, None) or (None, the put response). Idempotent for
    retries: the metadata names the writer and the content's sha256 (of the plaintext, for a
    sealed body), plus any `metadata` given.
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    else:
        meta = head.get("Metadata", {})
        found = head.get("VersionId")
        same = meta.get("labelfabric-job") == writer and meta.get("content-sha256") == sha
        if same and found and found != "null":  # no version id: versioning off, put to say so
            return found, None
    resp = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=content_type,
        Metadata={**(metadata or {}), "labelfabric-job": writer, "content-sha256": sha},
    )
    return None, resp


def read_plain(
    s3: S3Client,
    bucket: str,
    key: str,
    version_id: str,
    dst: sealed.Sink,
    keys: Mapping[str, bytes],
) -> str | None:
    """Stream an object version into `dst` in clear: a sealed one (formats/sealed.py) opened
    with `keys`, one stored in clear as is. Returns the key id it was sealed with, or None."""
    body = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"]
    try:
        return sealed.unseal(cast(IO[bytes], body), dst, keys)
    finally:
        body.close()
