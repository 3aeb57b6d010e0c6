"""Labeling tasks: `tasks/<name>.yaml` parsed into a `TaskSpec`, and its agents built from it.

Role: the single reader of task files. A task names its labels, the record field holding the
text, the longest text accepted at ingest, and the agents that label it:

    name: sentiment              # must equal the file name
    description: ...
    labels: [positive, negative]
    text_field: text             # default "text"
    max_chars: 20000             # default 20000; longer records are refused at ingest
    pii: {entities: [EMAIL_ADDRESS], modes: {llm: redact}}   # optional: agents/pii_section.py
    agents:
      - {name: keywords, kind: rules, rules: [{label: positive, patterns: [...]}, ...]}
      - {name: tfidf_logreg, kind: sklearn, seed: sentiment_seed.jsonl}

Invariants:
- Every error is a `TaskError` whose message names the file and the field or agent at fault;
  unknown fields are errors, not silently ignored (a typo must not change behaviour).
- `load_task` validates everything that is cheap to check (types, labels, regexes, that the
  seed file exists) without training anything and without importing scikit-learn;
  `build_agents` does the expensive part.
- Seed paths are relative to the task file's folder.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.base import Agent, TaskError
from agents.pii import MAX_TEXT_CHARS, PiiSpec
from agents.pii_section import parse_pii
from agents.rules import RulesAgent

__all__ = [
    "AgentSpec",
    "TaskError",
    "TaskSpec",
    "build_agents",
    "list_tasks",
    "load_task",
    "parse_task",
    "read_task_file",
    "task_file",
    "task_names",
]

DEFAULT_MAX_CHARS = 20_000
DEFAULT_TEXT_FIELD = "text"
MODALITIES = ("text", "tabular", "image")
AGGREGATORS = ("dawid_skene", "weighted_vote", "majority_vote")
DEFAULT_AGENT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class AgentKind:
    required: frozenset[str]
    optional: frozenset[str]
    modalities: frozenset[str]  # what the kind's agents can read


# The registry of agent kinds. Every kind also accepts `timeout_s` (seconds a batch may take
# before its items abstain). A new kind: a module in agents/, an entry here, a branch in
# `_build`.
KINDS: dict[str, AgentKind] = {
    "rules": AgentKind(frozenset({"rules"}), frozenset(), frozenset({"text"})),
    "sklearn": AgentKind(frozenset({"seed"}), frozenset(), frozenset({"text"})),
    "centroid": AgentKind(frozenset({"seed"}), frozenset({"embedding", "k"}), frozenset({"text"})),
    "tabular": AgentKind(
        frozenset({"seed", "model"}),
        frozenset({"features", "params"}),
        frozenset({"tabular", "image"}),
    ),
    "llm": AgentKind(
        frozenset({"model"}),
        frozenset({"instructions", "base_url", "request_timeout_s"}),
        frozenset({"text"}),
    ),
}
AGENT_KINDS = tuple(KINDS)
LLM_BASE_URL_ENV = "LABELFABRIC_LLM_BASE_URL"
LLM_API_KEY_ENV = "LABELFABRIC_LLM_API_KEY"

_TASK_KEYS = (
    "name",
    "description",
    "labels",
    "modality",
    "text_field",
    "max_chars",
    "aggregator",
    "gold_fraction",
    "gate",
    "leakage",
    "learn",
    "pii",
    "agents",
)
# Names end up in file names (model artifacts) and CLI arguments: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    name: str
    kind: str  # one of AGENT_KINDS
    settings: Mapping[str, Any]  # the agent's YAML entry minus name, kind and timeout_s
    timeout_s: float = DEFAULT_AGENT_TIMEOUT_S


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    path: Path
    description: str
    labels: tuple[str, ...]
    text_field: str
    max_chars: int  # records longer than this are refused at ingest
    agents: tuple[AgentSpec, ...]
    modality: str = "text"
    aggregator: str = "dawid_skene"
    # Share of review tasks on items with a known label (`labelfabric review gold`) that
    # check the reviewer against that label; 0 turns gold checks off.
    gold_fraction: float = 0.0
    # The quality-gate policy (kind: gate) that judges each snapshot of this task's datasets;
    # its active version (`labelfabric policy activate`) or newest. "" = no gate.
    gate: str = ""
    # A record whose content would sit in two splits of a dataset, or in a dataset and its
    # held-out set: "quarantine" refuses that record (kept, with the reason), "refuse" fails
    # the whole ingest naming the line.
    leakage: str = "quarantine"
    # Learning from reviewers (`learn:`): retrain the trainable agents on the seed plus the
    # accepted human labels after this many new ones (0 = only `labelfabric agent retrain`),
    # promoting a new version only if the gate policy `learn_gate` passes.
    learn_every: int = 0
    learn_gate: str = "promote_default"
    # PII detection (`pii:`, `agents/pii.py`): entities found at ingest are recorded in
    # `item.redactions` and rewritten per consumer (agents, llm, reviewers, exports).
    # None: nothing is detected and every consumer reads the text as it is.
    pii: PiiSpec | None = None

    @property
    def agent_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.agents)


def load_task(tasks_dir: Path, name: str) -> TaskSpec:
    path = task_file(tasks_dir, name)
    return parse_task(path, read_task_file(path))


def task_file(tasks_dir: Path, name: str) -> Path:
    """The file of task `name`; a TaskError listing the known tasks when there is none."""
    tasks_dir = Path(tasks_dir)
    path = tasks_dir / f"{name}.yaml"
    if not _NAME_RE.fullmatch(name) or not path.is_file():
        names = _task_names(tasks_dir)
        close = difflib.get_close_matches(name, names, n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        raise TaskError(
            f"unknown task '{name}'{guess}: no {tasks_dir.name}/{name}.yaml; known tasks: "
            f"{', '.join(names) or '(none)'}"
        )
    return path


def read_task_file(path: Path) -> bytes:
    """A task file's bytes; a TaskError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read: {exc}") from exc


def task_names(tasks_dir: Path) -> list[str]:
    """Names of the task files in `tasks_dir`, valid or not (load each to find out)."""
    return _task_names(Path(tasks_dir))


def list_tasks(tasks_dir: Path) -> list[TaskSpec]:
    tasks_dir = Path(tasks_dir)
    paths = [tasks_dir / f"{n}.yaml" for n in _task_names(tasks_dir)]
    return [parse_task(path, read_task_file(path)) for path in paths]


def build_agents(task: TaskSpec, names: Sequence[str] | None, *, models_dir: Path) -> list[Agent]:
    """The task's agents named in `names` (all, in file order, when None), ready to predict."""
    by_name = {spec.name: spec for spec in task.agents}
    if names is None:
        selected = list(task.agents)
    else:
        if isinstance(names, str):
            # A bare string would be iterated letter by letter.
            names = [names]
        if not names:
            raise TaskError(f"task '{task.name}': no agents selected")
        selected = []
        for agent_name in names:
            if agent_name not in by_name:
                raise TaskError(
                    f"task '{task.name}' ({task.path}) has no agent '{agent_name}'; "
                    f"its agents: {', '.join(by_name)}"
                )
            if by_name[agent_name] in selected:
                raise TaskError(f"task '{task.name}': agent '{agent_name}' selected twice")
            selected.append(by_name[agent_name])
    from agents.building import build_one  # the kinds' modules import this one

    built = []
    for spec in selected:
        try:
            built.append(build_one(task, spec, Path(models_dir)))
        except TaskError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            # A setting of the wrong type or value: the task file's fault, said as such.
            raise TaskError(f"{task.path}: agent '{spec.name}' ({spec.kind}): {err}") from err
    return built


def _task_names(tasks_dir: Path) -> list[str]:
    if not tasks_dir.is_dir():
        return []
    return sorted(p.stem for p in tasks_dir.glob("*.yaml") if p.is_file())


def parse_task(path: Path, data: bytes) -> TaskSpec:
    """`data` (the bytes of task file `path`) checked and parsed; see `load_task`."""
    # Decoded as reading the file as text does (UTF-8, universal newlines).
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping with fields {', '.join(_TASK_KEYS)}")
    unknown = sorted(str(k) for k in raw if k not in _TASK_KEYS)
    if unknown:
        raise TaskError(
            f"{path}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected: {', '.join(_TASK_KEYS)}"
        )

    name = raw.get("name")
    if name != path.stem:
        raise TaskError(f"{path}: field 'name' is {name!r}, must be the file name {path.stem!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise TaskError(f"{path}: field 'description' must be a string")

    labels = raw.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(label, str) and label for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise TaskError(f"{path}: field 'labels' must be a list of at least two distinct strings")

    text_field = raw.get("text_field", DEFAULT_TEXT_FIELD)
    if not isinstance(text_field, str) or not text_field:
        raise TaskError(f"{path}: field 'text_field' must be a non-empty string")

    max_chars = raw.get("max_chars", DEFAULT_MAX_CHARS)
    # bool is an int subclass; `max_chars: yes` is a mistake, not 1.
    if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars <= 0:
        raise TaskError(f"{path}: field 'max_chars' must be a positive integer")

    gold_fraction = raw.get("gold_fraction", 0.0)
    if (
        not isinstance(gold_fraction, int | float)
        or isinstance(gold_fraction, bool)
        or not 0 <= gold_fraction <= 1
    ):
        raise TaskError(f"{path}: field 'gold_fraction' must be a number from 0 to 1")

    modality = raw.get("modality", "text")
    if modality not in MODALITIES:
        raise TaskError(f"{path}: field 'modality' must be one of {', '.join(MODALITIES)}")
    aggregator = raw.get("aggregator", "dawid_skene")
    if aggregator not in AGGREGATORS:
        raise TaskError(f"{path}: field 'aggregator' must be one of {', '.join(AGGREGATORS)}")

    gate = raw.get("gate", "")
    if not isinstance(gate, str) or (gate and not _NAME_RE.fullmatch(gate)):
        raise TaskError(f"{path}: field 'gate' must be a policy id (letters, digits, _ or -)")

    leakage = raw.get("leakage", "quarantine")
    if leakage not in ("quarantine", "refuse"):
        raise TaskError(f"{path}: field 'leakage' must be quarantine or refuse")

    learn_every, learn_gate = _parse_learn(path, raw.get("learn"))
    pii = parse_pii(path, raw.get("pii"), name)
    if pii is not None and max_chars > MAX_TEXT_CHARS:
        raise TaskError(
            f"{path}: field 'max_chars' must be at most {MAX_TEXT_CHARS} when 'pii' is set "
            "(the longest text PII detection reads)"
        )
    agents = _parse_agents(path, raw.get("agents"), tuple(labels), modality)
    return TaskSpec(
        name=name,
        path=path,
        description=description.strip(),
        labels=tuple(labels),
        text_field=text_field,
        max_chars=max_chars,
        agents=agents,
        gold_fraction=float(gold_fraction),
        modality=modality,
        aggregator=aggregator,
        gate=gate,
        leakage=leakage,
        learn_every=learn_every,
        learn_gate=learn_gate,
        pii=pii,
    )


def _parse_learn(path: Path, raw: object) -> tuple[int, str]:
    if raw is None:
        return 0, "promote_default"
    if not isinstance(raw, dict) or set(raw) - {"every", "gate"}:
        raise TaskError(f"{path}: field 'learn' must be a mapping with 'every' and 'gate'")
    every, gate = raw.get("every", 0), raw.get("gate", "promote_default")
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise TaskError(f"{path}: field 'learn.every' must be an integer >= 0 (0 = on demand)")
    if not isinstance(gate, str) or not _NAME_RE.fullmatch(gate):
        raise TaskError(f"{path}: field 'learn.gate' must be a policy id")
    return every, gate


def _parse_agents(
    path: Path, raw: object, labels: tuple[str, ...], modality: str
) -> tuple[AgentSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise TaskError(f"{path}: field 'agents' must be a non-empty list")
    specs: list[AgentSpec] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise TaskError(f"{path}: agents[{i}] must be a mapping with 'name' and 'kind'")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise TaskError(
                f"{path}: agents[{i}].name must be letters, digits, '_' or '-', got {name!r}"
            )
        if any(s.name == name for s in specs):
            raise TaskError(f"{path}: agent '{name}' is defined twice")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise TaskError(
                f"{path}: agent '{name}': field 'kind' must be one of {', '.join(AGENT_KINDS)}, "
                f"got {kind!r}"
            )
        spec = KINDS[kind]
        if modality not in spec.modalities:
            raise TaskError(
                f"{path}: agent '{name}': kind '{kind}' reads {', '.join(sorted(spec.modalities))}"
                f", not this task's modality '{modality}'"
            )
        timeout_s = entry.get("timeout_s", DEFAULT_AGENT_TIMEOUT_S)
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0:
            raise TaskError(f"{path}: agent '{name}': field 'timeout_s' must be a positive number")
        settings = {k: v for k, v in entry.items() if k not in ("name", "kind", "timeout_s")}
        allowed = spec.required | spec.optional
        extra = sorted(str(k) for k in settings if k not in allowed)
        if extra:
            raise TaskError(
                f"{path}: agent '{name}': unknown field(s) {', '.join(map(repr, extra))} for "
                f"kind '{kind}'; expected: {', '.join(sorted(allowed))}"
            )
        missing = sorted(spec.required - set(settings))
        if missing:
            raise TaskError(
                f"{path}: agent '{name}': missing field(s) {', '.join(map(repr, missing))}"
            )
        if kind == "rules":
            # Compiles every pattern now, so a bad regex fails at load, naming file and agent.
            RulesAgent(name, labels, settings["rules"], source=path)
        if "seed" in settings:
            seed = settings["seed"]
            if not isinstance(seed, str) or not seed:
                raise TaskError(f"{path}: agent '{name}': field 'seed' must be a file name")
            if not (path.parent / seed).is_file():
                raise TaskError(
                    f"{path}: agent '{name}': seed file {path.parent / seed} does not exist"
                )
        specs.append(AgentSpec(name=name, kind=kind, settings=settings, timeout_s=float(timeout_s)))
    return tuple(specs)
