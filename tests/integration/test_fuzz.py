"""A fuzz harness for the boundary (hypothesis): generated records, review payloads and
dataset names through real jobs and reviews (the parsers alone: tests/unit/test_fuzz_parsers.py).

Properties: every job reaches a terminal state within a bound; every line of a source is
accounted for (items + refused + duplicates = lines); a review still closes whatever was
sent to it; the audit chain verifies afterwards. `make test` runs a bounded number of
examples; `make fuzz` sets LABELFABRIC_FUZZ_EXAMPLES for a longer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from tests.fuzzing import ANY_CHAR, LINES, NASTY_TEXT, examples
from tests.helpers import cli, signed, start_review
from worker.settings import Settings

JOB_BOUND_S = 120.0  # a job on a few dozen lines ends well within this, or it is wedged


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
            signed("alice", "positive"),
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
