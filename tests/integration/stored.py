"""Snapshot objects as the product reads them: sealed ones opened with the stack's key ring
(formats/sealed.py), those stored in clear as they are."""

from __future__ import annotations

import io

from activities.s3 import make_s3_client, read_plain
from worker.cli.dataset_io import snapshot_keys
from worker.settings import Settings
from worker.stack import s3_target


def snapshot_bytes(settings: Settings, key: str, version_id: str) -> bytes:
    out = io.BytesIO()
    s3 = make_s3_client(s3_target(settings))
    read_plain(s3, settings.s3_bucket, key, version_id, out, snapshot_keys(settings))
    return out.getvalue()
