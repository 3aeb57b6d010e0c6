"""A fuzz harness for the boundary (hypothesis): generated records, review payloads and
dataset names, first against the parsers alone, then through real jobs and reviews.

Properties: every job reaches a terminal state within a bound; every line of a source is
accounted for (items + refused + duplicates = lines); a review still closes whatever was
sent to it; the audit chain verifies afterwards. `make test` runs a bounded number of
examples; `make fuzz` sets LABELFABRIC_FUZZ_EXAMPLES for a longer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.payloads import (
    LabelDatasetInput,
    LabelDatasetResult,
    ReviewReceipt,
    ReviewSubmission,
    dataset_name_problem,
)
from formats.sources import Record, Refusal, SourceError, read_records
from tests.helpers import cli, start_review
from worker.settings import Settings

SCALE = int(os.environ.get("LABELFABRIC_FUZZ_EXAMPLES", "0") or 0)
JOB_BOUND_S = 120.0  # a job on a few dozen lines ends well within this, or it is wedged


def examples(default: int) -> int:
    return SCALE or default


# Any code point, surrogates and NUL included: what a hostile file or caller can carry.
ANY_CHAR = st.characters(codec=None, categories=None, min_codepoint=0, max_codepoint=0x10FFFF)
NASTY_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(["\x00", "\ud800", "a\u0000b", "\ufeff", "\r\n", '"', "\\", " "]),
)


def _json_line(text: str, extra: object) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes: valid JSON, invalid Unicode.
    return json.dumps({"text": text, "x": extra}).encode()


LINES = st.lists(
    st.one_of(
        st.builds(
            _json_line,
            NASTY_TEXT,
            st.recursive(
                st.none() | st.integers() | st.floats() | NASTY_TEXT,
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_TEXT, inner),
                max_leaves=6,
            ),
        ),
        st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")),
        st.sampled_from([b"", b"{", b"[" * 5000, b'{"text": 1e999}', b'{"text": "\\u0000"}']),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=examples(300), deadline=None)
@given(lines=LINES)
def test_every_jsonl_line_is_a_record_or_a_refusal(lines: list[bytes]) -> None:
    raw = b"\n".join(lines) + b"\n"
    out = list(read_records(io.BytesIO(raw), "jsonl", text_field="text", max_chars=10_000))
    assert sorted(r.line for r in out) == list(range(1, len(lines) + 1))
    for r in out:
        if isinstance(r, Record):
            assert "\x00" not in r.text
            r.text.encode("utf-8")  # storable
        else:
            assert "\x00" not in r.excerpt
            r.excerpt.encode("utf-8")


@settings(max_examples=examples(300), deadline=None)
@given(rows=st.lists(st.lists(NASTY_TEXT, min_size=1, max_size=3), min_size=1, max_size=20))
def test_csv_never_raises_past_its_header(rows: list[list[str]]) -> None:
    buf = io.StringIO()
    import csv

    csv.writer(buf).writerows([["text", "n"], *rows])
    raw = buf.getvalue().encode("utf-8", errors="surrogatepass")
    try:
        out = list(read_records(io.BytesIO(raw), "csv", text_field="text", max_chars=10_000))
    except SourceError:
        return
    for r in out:
        if isinstance(r, Record):
            assert "\x00" not in r.text
            r.text.encode("utf-8")
        else:
            assert isinstance(r, Refusal) and r.line >= 2


@settings(max_examples=examples(500), deadline=None)
@given(name=st.text(ANY_CHAR, max_size=80))
def test_dataset_names_are_valid_or_refused_by_name(name: str) -> None:
    problem = dataset_name_problem(name)
    if problem is None:
        assert ".." not in name and "/" not in name and ":" not in name and name.isascii()
        LabelDatasetInput(dataset=name, source="/s.jsonl", task="t")
    else:
        with pytest.raises(ValueError, match="dataset name"):
            LabelDatasetInput(dataset=name, source="/s.jsonl", task="t")


# --- through the real stack ---------------------------------------------------------------


FUZZ_SETTINGS = settings(
    max_examples=examples(6),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ_SETTINGS
@given(lines=LINES, name=st.one_of(st.just("fz"), st.text(ANY_CHAR, max_size=12)))
async def test_generated_sources_always_end_with_every_line_accounted_for(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
    lines: list[bytes],
    name: str,
) -> None:
    good = [json.dumps({"text": r["text"]}).encode() for r in gold_rows[600:605]]
    source = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    source.write_bytes(b"\n".join(good + lines) + b"\n")
    dataset = name if name != "fz" else f"fz{uuid.uuid4().hex[:6]}"
    try:
        inp = LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment")
    except ValueError:
        assert dataset_name_problem(dataset) is not None
        return
    result = await asyncio.wait_for(
        env.client.execute_workflow(
            "LabelDataset",
            inp,
            id=f"label:{dataset}:{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            result_type=LabelDatasetResult,
        ),
        JOB_BOUND_S,
    )
    assert result.items + result.quarantined + result.duplicates == len(good) + len(lines)
    assert result.counts.total == result.items


SUBMISSIONS = st.lists(
    st.builds(
        ReviewSubmission,
        reviewer=st.one_of(st.sampled_from(["alice", "bob", "mallory"]), NASTY_TEXT),
        label=st.one_of(st.sampled_from(["positive", "negative"]), NASTY_TEXT),
        # Over the note's limit, cheaply: a long run of one generated character.
        note=st.one_of(
            NASTY_TEXT, st.builds(lambda c, n: c * n, ANY_CHAR, st.integers(3990, 6000))
        ),
    ),
    max_size=12,
)


@FUZZ_SETTINGS
@given(subs=SUBMISSIONS)
async def test_a_review_closes_whatever_was_sent_to_it(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    fuzz_job: LabelDatasetResult,
    subs: list[ReviewSubmission],
) -> None:
    # Any item id: the review never reads the item's text.
    item = fuzz_job.snapshot.content_sha256
    handle = await start_review(
        env.client, stack, fuzz_job, item, ["alice", "bob"], history_limit=200
    )
    for sub in subs:
        await handle.signal("submit_review", sub)
    # Whatever was sent, a rostered reviewer can still close it (unless a signal already did).
    with contextlib.suppress(WorkflowUpdateFailedError, RPCError):  # closed by a signal
        await handle.execute_update(
            "submit_review",
            ReviewSubmission(reviewer="alice", label="positive"),
            result_type=ReviewReceipt,
        )
    final = await asyncio.wait_for(handle.result(), JOB_BOUND_S)
    assert final.state == "done" and final.label in ("positive", "negative")
    refused = [r for r in final.reviews if not r.accepted]
    assert len(refused) <= 20 and all(len(r.note) <= 4000 for r in final.reviews)


@pytest.fixture(scope="module")
async def fuzz_job(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> LabelDatasetResult:
    from tests.helpers import write_jsonl

    dataset = f"fz{uuid.uuid4().hex[:6]}"
    source = write_jsonl(
        tmp_path_factory.mktemp("fz") / "r.jsonl", [r["text"] for r in gold_rows[610:620]]
    )
    return await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )


def test_the_audit_chain_verifies_after_the_fuzzing(stack: Settings, fuzz_job: object) -> None:
    out = cli(stack, "audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "chain intact" in out.stdout
