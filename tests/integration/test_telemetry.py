"""OpenTelemetry: one trace runs from the client's start through the workflow and its
activities down to each agent call."""

from __future__ import annotations

import uuid
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from activities.payloads import LabelDatasetInput, LabelDatasetResult
from tests.helpers import write_jsonl
from worker.main import Runtime, make_worker
from worker.settings import Settings


async def test_job_is_traced_from_start_to_agent_calls(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        interceptors=[TracingInterceptor(provider.get_tracer("test"))],
    )
    queue = f"traced-{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"task_queue": queue})
    source = write_jsonl(tmp_path / "t.jsonl", [r["text"] for r in gold_rows[:20]])
    async with make_worker(client, settings, runtime):
        await client.execute_workflow(
            "LabelDataset",
            LabelDatasetInput(
                dataset=f"tr{uuid.uuid4().hex[:6]}", source=str(source), task="sentiment"
            ),
            id=f"label:traced:{queue}",
            task_queue=queue,
            result_type=LabelDatasetResult,
        )
    # One trace from the start through every activity to each agent call. Other workers of
    # the session may add traces of their own to the global provider: judge this job's.
    finished = exporter.get_finished_spans()
    [start] = [s for s in finished if s.name == "StartWorkflow:LabelDataset"]
    spans = [s for s in finished if s.context.trace_id == start.context.trace_id]
    names = {s.name for s in spans}
    assert {
        "StartWorkflow:LabelDataset",
        "RunWorkflow:LabelDataset",
        "RunActivity:prepare_job",
        "RunActivity:ingest",
        "RunActivity:label_chunk",
        "RunActivity:snapshot",
        "agent.predict",
    } <= names
    agents = {
        s.attributes.get("agent") for s in spans if s.name == "agent.predict" and s.attributes
    }
    assert agents == {"keywords", "tfidf_logreg"}
