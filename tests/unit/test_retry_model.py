"""The retry model holds by construction: every activity call in workflow code names a
bounded policy, and every exception class an activity can meet is classified."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import pytest
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from activities.errors import DETERMINISTIC_TYPES, classify
from activities.payloads import DATA_CONVERTER, LabelDatasetInput
from workflows import retry

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ACTIVITY_CALLS = {"execute_activity", "execute_activity_method", "execute_local_activity"}


def activity_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ACTIVITY_CALLS
            ):
                calls.append((f"{path.name}:{node.lineno}", node))
    return calls


def test_every_activity_call_names_a_bounded_policy() -> None:
    calls = activity_calls()
    assert len(calls) >= 8  # prepare, ingest, chunk, open_reviews, snapshot x2, finish, ...
    named = {name for name in dir(retry) if not name.startswith("_")}
    for where, call in calls:
        policy = next((k.value for k in call.keywords if k.arg == "retry_policy"), None)
        assert isinstance(policy, ast.Name), (
            f"{where}: no retry_policy (Temporal's default is unbounded)"
        )
        assert policy.id in named, f"{where}: {policy.id} is not a policy of workflows/retry.py"
    for bounded in retry.ALL:
        assert bounded.maximum_attempts and 0 < bounded.maximum_attempts <= 100
        assert set(DETERMINISTIC_TYPES) <= set(bounded.non_retryable_error_types or [])


def test_deterministic_failures_are_classified_non_retryable() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError
    from sqlalchemy import exc as sa

    class PgDataError(Exception):
        def __str__(self) -> str:
            return 'invalid byte sequence for encoding "UTF8": 0x00'

    cases: list[tuple[BaseException, str | None]] = [
        (sa.DataError("INSERT ...", None, PgDataError()), "CatalogRefused"),
        (sa.IntegrityError("INSERT ...", None, Exception("duplicate key")), "CatalogRefused"),
        (sa.OperationalError("SELECT 1", None, Exception("connection refused")), None),
        (sa.InterfaceError("SELECT 1", None, Exception("closed")), None),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "BadData"),
        (RecursionError("maximum recursion depth exceeded"), "BadData"),
        (csv.Error("field larger than field limit"), "BadData"),
        (PermissionError(13, "Permission denied", "/x"), "SourceUnreadable"),
        (FileNotFoundError(2, "No such file", "/x"), "SourceNotFound"),
        (ValueError("bad"), "InternalError"),
        (ConnectionResetError(104, "reset"), None),
        (TimeoutError(), None),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), None),
        (
            ClientError(
                {"Error": {"Code": "InvalidArgument"}, "ResponseMetadata": {"HTTPStatusCode": 400}},  # type: ignore[typeddict-item]
                "PutObject",
            ),
            "StorageRefused",
        ),
        (
            ClientError(
                {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},  # type: ignore[typeddict-item]
                "PutObject",
            ),
            None,
        ),
    ]
    for err, kind in cases:
        got = classify(err)
        if kind is None:
            assert got is None, f"{err!r} should retry"
        else:
            assert got is not None and got.type == kind and got.non_retryable, repr(err)
    refused = classify(cases[0][0])
    assert refused is not None and "0x00" in refused.message and "INSERT" not in refused.message


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"dataset": "d", "source": "/s.jsonl"}, "task"),
        ({"dataset": "d", "source": "/s.jsonl", "task": "t", "chunk_size": "big"}, "chunk_size"),
        ({"dataset": "../d", "source": "/s.jsonl", "task": "t"}, "dataset name"),
        ({"dataset": "d", "source": "/s.jsonl", "task": "t", "chunk_size": 10**9}, "chunk_size"),
    ],
)
def test_an_input_that_does_not_decode_is_bad_input(value: dict[str, object], field: str) -> None:
    payloads = DataConverter.default.payload_converter.to_payloads([value])
    with pytest.raises(ApplicationError) as info:
        DATA_CONVERTER.payload_converter.from_payloads(payloads, [LabelDatasetInput])
    assert info.value.type == "BadInput" and info.value.non_retryable
    assert field in info.value.message
