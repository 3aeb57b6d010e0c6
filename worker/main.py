"""The worker process: build clients once, inject them into the activity classes, run.

Stateless: any number of workers may serve the `labeling` task queue on any machine. Start-up
migrates the catalog (idempotent, serialised by an advisory lock) and checks the snapshot
bucket, so a worker refuses to start, with the reason, rather than fail jobs later.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Worker

from activities.anchor import AuditAnchor
from activities.artifacts import ArtifactStore
from activities.drift import DriftActivities
from activities.errors import ClassifyErrors
from activities.jobs import JobActivities
from activities.labeling import LabelingActivities
from activities.learning import LearningActivities
from activities.rescore import RescoreActivities
from activities.review import ReviewActivities
from activities.s3 import ensure_versioned_bucket, make_s3_client
from activities.snapshot import SnapshotActivities
from activities.verify import VerifyActivities
from activities.watch import WatchActivities
from agents.store import TaskStore
from catalog import db
from policy_rules.store import PolicyStore
from worker import metrics, temporal_client
from worker.codec import KeyRing, KeyRingError
from worker.settings import Settings
from worker.stack import prepare_catalog, s3_target
from worker.telemetry import setup_tracing
from workflows.dataset import Dataset
from workflows.drift_check import DriftCheck
from workflows.label_dataset import LabelDataset
from workflows.retrain import Retrain
from workflows.review_frontier import ReviewFrontier
from workflows.review_item import ReviewItem
from workflows.verify_labels import VerifyLabels
from workflows.watch import WatchPrefix

log = logging.getLogger("labelfabric.worker")

WORKFLOWS: Sequence[type] = (
    LabelDataset,
    ReviewItem,
    Dataset,
    ReviewFrontier,
    VerifyLabels,
    Retrain,
    DriftCheck,
    WatchPrefix,
)


async def connect(settings: Settings) -> Client:
    """A worker's client: the product's converter and transport, traced and metered (the
    process's metrics, the SDK's among them, on `metrics_port`: worker/metrics.py)."""
    metrics.start(
        "labelfabric-worker",
        prometheus=settings.metrics_port > 0,
        host=settings.host,
        port=settings.metrics_port,
    )
    return await temporal_client.connect(settings, interceptors=[TracingInterceptor()])


@dataclass
class Runtime:
    """Everything a worker builds once at start; closed when it stops."""

    engine: AsyncEngine
    jobs: JobActivities
    labeling: LabelingActivities
    snapshots: SnapshotActivities
    reviews: ReviewActivities
    verify: VerifyActivities
    learning: LearningActivities
    rescore: RescoreActivities
    drift: DriftActivities
    watch: WatchActivities

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.jobs.prepare_job,
            self.jobs.ingest,
            self.jobs.finish_job,
            self.labeling.label_chunk,
            self.snapshots.snapshot,
            self.reviews.open_reviews,
            self.reviews.top_up_reviews,
            self.reviews.record_review,
            self.reviews.close_review,
            self.reviews.review_superseded,
            self.reviews.identity_keys,
            self.verify.verify_labels,
            self.learning.retrain_agents,
            self.rescore.rescore_backlog,
            self.drift.check_drift,
            self.watch.new_objects,
        ]

    async def close(self) -> None:
        await self.engine.dispose()


async def build_runtime(settings: Settings, client: Client) -> Runtime:
    """`client` is the Temporal the activities start review and dataset workflows on."""
    # As the owner; the app itself connects as the app role (see worker/secrets.py).
    await asyncio.to_thread(prepare_catalog, settings)
    engine = db.make_engine(settings.catalog_url)
    s3 = make_s3_client(s3_target(settings))
    await asyncio.to_thread(ensure_versioned_bucket, s3, settings.s3_bucket)
    anchor = AuditAnchor(engine=engine, s3=s3, bucket=settings.s3_bucket)
    # One reader of each kind of definition file, shared: a version is parsed once per worker.
    # Released policies, then the versions `labelfabric eval` made in the state dir.
    policies = PolicyStore(settings.policies_dir, settings.eval_policies_dir)
    tasks = TaskStore(settings.tasks_dir)
    jobs = JobActivities(
        engine=engine,
        s3=s3,
        s3_endpoint=settings.s3_url,
        tasks=tasks,
        policies=policies,
        source_roots=settings.allowed_source_roots,
        anchor=anchor,
    )
    # Promoted agent versions (retrained on reviewers' labels), fetched from S3 by version.
    artifacts = ArtifactStore(s3=s3, bucket=settings.s3_bucket, models_dir=settings.models_dir)
    labeling = LabelingActivities(
        engine=engine,
        tasks=tasks,
        policies=policies,
        models_dir=settings.models_dir,
        anchor=anchor,
        artifacts=artifacts,
    )
    learning = LearningActivities(
        engine=engine,
        s3=s3,
        bucket=settings.s3_bucket,
        tasks=tasks,
        policies=policies,
        models_dir=settings.models_dir,
        artifacts=artifacts,
        anchor=anchor,
    )
    snapshots = SnapshotActivities(
        engine=engine,
        s3=s3,
        bucket=settings.s3_bucket,
        tasks=tasks,
        policies=policies,
        anchor=anchor,
        ring=_snapshot_ring(settings),
        encrypt=settings.snapshot_encryption,
    )
    reviews = ReviewActivities(
        engine=engine,
        client=client,
        task_queue=settings.task_queue,
        tasks=tasks,
        policies=policies,
        roster_path=settings.roster_path,
        snapshot_debounce_s=settings.snapshot_debounce_s,
        simulated_reviewers=settings.simulated_reviewers,
        identity_path=settings.identity_keys_path if settings.signed_reviews else None,
        anchor=anchor,
    )
    rescore = RescoreActivities(
        engine=engine,
        client=client,
        task_queue=settings.task_queue,
        labeling=labeling,
        tasks=tasks,
        policies=policies,
    )
    drift = DriftActivities(
        engine=engine,
        client=client,
        task_queue=settings.task_queue,
        tasks=tasks,
        policies=policies,
        s3=s3,
        bucket=settings.s3_bucket,
    )
    verify = VerifyActivities(
        engine=engine, client=client, task_queue=settings.task_queue, tasks=tasks
    )
    await labeling.warm()
    return Runtime(
        engine=engine,
        jobs=jobs,
        labeling=labeling,
        snapshots=snapshots,
        reviews=reviews,
        verify=verify,
        learning=learning,
        rescore=rescore,
        drift=drift,
        watch=WatchActivities(engine=engine, s3=s3),
    )


def _snapshot_ring(settings: Settings) -> Callable[[], KeyRing] | None:
    """The payload key ring snapshots are sealed with (and sealed ones opened): loaded now,
    so a missing or malformed ring stops the worker at start, then read at each snapshot."""
    path = settings.codec_keys_path
    if not settings.snapshot_encryption and not path.exists():
        return None
    try:
        KeyRing.load(path)
    except KeyRingError as err:
        raise KeyRingError(
            f"snapshots are sealed with the payload key ring ({err}); "
            "LABELFABRIC_SNAPSHOT_ENCRYPTION=0 writes them in clear"
        ) from None
    return partial(KeyRing.load, path)


def make_worker(client: Client, settings: Settings, runtime: Runtime) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=runtime.activities,
        max_concurrent_activities=settings.max_concurrent_activities,
        # Deterministic failures never retry (activities/errors.py).
        interceptors=[ClassifyErrors()],
    )


async def run_worker(settings: Settings) -> None:
    setup_tracing("labelfabric-worker")
    client = await connect(settings)
    runtime = await build_runtime(settings, client)
    worker = make_worker(client, settings, runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker serving task queue %r on %s", settings.task_queue, settings.temporal_address)
    try:
        async with worker:
            await stop.wait()
    finally:
        await runtime.close()
