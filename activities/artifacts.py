"""Promoted agent versions, served from S3 by object version without a worker restart.

A promoted version's artifact is fetched once (by its S3 version id), checked against its
version (the content hash), kept in the models folder and loaded; a job uses, for each
agent, the newest version promoted before the job started, so a promotion never changes a
job midway (its chunks all vote with the same versions).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from activities import ids
from agents.base import Agent, content_version
from agents.learning import TRAINABLE, from_artifact
from agents.tasks import TaskSpec
from catalog import db


def model_key(task: str, agent: str, version: str) -> str:
    return f"models/{task}/{agent}/{version}.pkl"


@dataclass
class ArtifactStore:
    s3: Any
    bucket: str
    models_dir: Path
    _agents: dict[tuple[str, str, str], Agent] = field(default_factory=dict)

    async def load(self, task: TaskSpec, row: db.AgentVersionRow) -> Agent:
        """The promoted version `row` of one of `task`'s agents, ready to predict."""
        key = (task.name, row.agent, row.version)
        if key not in self._agents:
            self._agents[key] = await asyncio.to_thread(self._fetch, task, row)
        return self._agents[key]

    def _fetch(self, task: TaskSpec, row: db.AgentVersionRow) -> Agent:
        path = Path(self.models_dir) / f"{row.agent}-{row.version}.pkl"
        if not path.exists():
            body = self.s3.get_object(
                Bucket=self.bucket, Key=row.s3_key, VersionId=row.s3_version_id
            )["Body"].read()
            if content_version(body) != row.version:
                raise ApplicationError(
                    f"s3://{self.bucket}/{row.s3_key} (version {row.s3_version_id}) does not "
                    f"hash to agent version {row.version}",
                    type=ids.STORAGE_REFUSED,
                    non_retryable=True,
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(body)
            tmp.replace(path)
        return from_artifact(row.kind, row.agent, path, task.labels)

    async def for_job(
        self, engine: AsyncEngine, task: TaskSpec, agents: list[Agent], job_id: str
    ) -> list[Agent]:
        """`agents` with each trainable one replaced by its newest version promoted before
        the job started (unchanged when none was)."""
        if not any(a.kind in TRAINABLE for a in task.agents):
            return agents
        async with engine.connect() as conn:
            started = await db.job_started_at(conn, job_id)
            promoted = await db.promoted_versions(conn, task.name, as_of=started)
        out = []
        for agent in agents:
            row = promoted.get(agent.name)
            out.append(
                agent if row is None or row.version == agent.version else await self.load(task, row)
            )
        return out
