"""Opening a local labeling source on a worker: only a regular file under the workers' source
roots. Reading and checking its records is `formats.sources`; an s3:// source is downloaded by
the ingest activity (`activities/jobs.py`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO, ClassVar

from activities import ids
from formats.sources import SourceError


class SourceAccessError(SourceError):
    """A local source the worker may not or cannot open."""

    kind: ClassVar[str]  # the error type a job fails with


class SourceNotFound(SourceAccessError):
    kind = ids.SOURCE_NOT_FOUND


class SourceForbidden(SourceAccessError):
    kind = ids.SOURCE_FORBIDDEN


class SourceUnreadable(SourceAccessError):
    kind = ids.SOURCE_UNREADABLE


def open_local(source: str, roots: Sequence[Path]) -> IO[bytes]:
    """Open a local source for reading, if it is a regular file under one of `roots`.

    The roots are the workers' allow-list (`LABELFABRIC_SOURCE_ROOTS`): a workflow input is
    written by whoever can reach Temporal, so without it a raw start could make a worker read
    any file it can (a key, a credentials file) into the catalog. Links are resolved before
    the check; a FIFO or device is refused without blocking on it.
    """
    path = Path(source)
    if not path.is_absolute():
        raise SourceForbidden(f"source {source!r} must be an absolute path on the workers")
    real = path.resolve()
    allowed = [Path(r).resolve() for r in roots]
    if not any(real.is_relative_to(root) for root in allowed):
        raise SourceForbidden(
            f"source {source} is outside the workers' source roots "
            f"({', '.join(map(str, allowed)) or 'none'}); put it under one, or add its "
            "folder to LABELFABRIC_SOURCE_ROOTS on the workers"
        )
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise SourceNotFound(f"source not found: {source}") from err
    except PermissionError as err:
        raise SourceUnreadable(f"source {source} is not readable by the worker") from err
    except OSError as err:
        raise SourceNotFound(f"source {source} cannot be opened: {err.strerror}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceForbidden(f"source {source} is not a regular file")
    return os.fdopen(fd, "rb")
