"""Building one agent of a task from its spec: each kind's constructor, with the settings its
task file gives (`agents.tasks.build_agents` calls this for each agent it selects)."""

from __future__ import annotations

import os
from pathlib import Path

from agents.base import Agent, TaskError
from agents.rules import RulesAgent
from agents.tasks import LLM_API_KEY_ENV, LLM_BASE_URL_ENV, AgentSpec, TaskSpec


def build_one(task: TaskSpec, spec: AgentSpec, models_dir: Path) -> Agent:
    """One agent of `task` built from its spec (a model kind trains from its seed)."""
    # Model kinds are imported here: scikit-learn is slow to import and only needed to build
    # such an agent, not to read or validate tasks.
    cfg = spec.settings
    seed = task.path.parent / str(cfg.get("seed", ""))
    if spec.kind == "rules":
        return RulesAgent(spec.name, task.labels, cfg["rules"], source=task.path)
    if spec.kind == "sklearn":
        from agents.sklearn_model import SklearnAgent

        return SklearnAgent.from_seed(spec.name, seed, task.labels, models_dir)
    if spec.kind == "centroid":
        from agents.centroid import CentroidAgent

        return CentroidAgent.from_seed(
            spec.name,
            seed,
            task.labels,
            models_dir,
            embedding=str(cfg.get("embedding", "tfidf")),
            k=cfg.get("k", 0),  # validated by the agent (an int, not a bool)
        )
    if spec.kind == "tabular":
        from agents.tabular import TabularAgent

        return TabularAgent.from_seed(
            spec.name,
            seed,
            task.labels,
            models_dir,
            model=str(cfg["model"]),
            features=cfg.get("features"),
            params=cfg.get("params"),
        )
    if spec.kind == "llm":
        from agents.llm import LLMAgent

        base_url = cfg.get("base_url") or os.environ.get(LLM_BASE_URL_ENV)
        if not base_url:
            raise TaskError(
                f"{task.path}: agent '{spec.name}' (llm) has no endpoint: set "
                f"{LLM_BASE_URL_ENV} (an OpenAI-compatible base URL such as "
                "http://127.0.0.1:8000/v1) or the agent's base_url"
            )
        try:
            return LLMAgent(
                spec.name,
                task.labels,
                base_url=str(base_url),
                model=str(cfg["model"]),
                instructions=str(cfg.get("instructions", "")),
                api_key=os.environ.get(LLM_API_KEY_ENV),
                # Per request; the agent's `timeout_s` bounds the whole batch.
                timeout_s=float(cfg.get("request_timeout_s", 30.0)),
            )
        except ValueError as err:
            raise TaskError(f"{task.path}: agent '{spec.name}': {err}") from err
    raise TaskError(f"{task.path}: agent '{spec.name}': unknown kind '{spec.kind}'")
