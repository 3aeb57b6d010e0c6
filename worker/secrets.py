"""The embedded stack's credentials: made once by `labelfabric up`, kept private in the state dir.

`{home}/secrets.json` (mode 0600, in a 0700 state dir) holds the S3 access key and secret
SeaweedFS is started with (anonymous access is then refused), the PostgreSQL owner's
password (scram-sha-256; used only to migrate and grant), the app role's password (what
workers, the CLI and the review page connect as: it may append audit events, never change
them), the codec server's bearer token and the key that signs the review page's cookies.
The payload and reviewer-identity key rings are files of their own (worker/codec.py,
worker/identity.py). Servers named by `LABELFABRIC_DATABASE_URL` /
`LABELFABRIC_S3_ENDPOINT_URL` bring their own credentials; this file is then not used for them.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

FILE = "secrets.json"
APP_ROLE = "labelfabric_app"
KEYS = (
    "s3_access_key",
    "s3_secret_key",
    "postgres_password",
    "app_password",
    "codec_token",  # bearer token of the codec server (`labelfabric codec serve`)
    "session_secret",  # signs the review page's session cookies
)


def read(home: Path) -> dict[str, str]:
    """The stack's credentials, or {} when `up` has not made them (or they are unreadable)."""
    try:
        raw = json.loads((home / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(raw[k]) for k in KEYS if isinstance(raw, dict) and k in raw}


def ensure(home: Path) -> dict[str, str]:
    """Create the credentials once (missing keys only); the file is written 0600."""
    private_dir(home)
    have = read(home)
    if all(k in have for k in KEYS):
        return have
    made = {
        "s3_access_key": "LF" + secrets.token_hex(9).upper(),
        "s3_secret_key": secrets.token_urlsafe(30),
        "postgres_password": secrets.token_urlsafe(24),
        "app_password": secrets.token_urlsafe(24),
        "codec_token": secrets.token_urlsafe(32),
        "session_secret": secrets.token_urlsafe(32),
    }
    values = made | have
    path = home / FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.replace(tmp, path)
    return values


def private_dir(path: Path) -> Path:
    """`path` as a directory nobody else can list or write (made if missing).

    Search (x) bits others already have are kept: as root, PostgreSQL's own user must pass
    through the state dir to its data dir, which it owns (see worker/stack.py)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod((mode | 0o700) & ~0o066)
    return path
