"""The pieces of the reviewing flow that need no server: what a routing rule says to people
(its `description`, or the comments above it and above the params it reads, so released
versions read well without changing a byte), the queue's text preview, and the pages' CSP
(no script but one named by its response's nonce)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from policy_rules.engine import Policy, PolicyError
from policy_rules.store import PolicyStore
from worker.reviews import preview
from worker.web.site import csp

SHIPPED = Path(__file__).resolve().parents[2] / "policy_rules"

POLICY = """\
id: demo
version: 1
description: test policy
inputs:
  ensemble.confidence: double
params:
  # Below this the agents are guessing.
  floor: 0.5
  ceiling: 0.9

rules:
  # Nobody is sure: a person decides.

  - id: unsure
    when: ensemble.confidence < params.floor
    outcome: human_review

  # The agents agree and are confident.
  - id: sure
    when: ensemble.confidence >= params.ceiling
    outcome: auto_accept
  - id: said
    when: ensemble.confidence > 0.8
    outcome: auto_accept
    description: "  Said   in the file. "
# Somewhere in between.
default:
  outcome: human_review
"""


def load(tmp_path: Path, body: str) -> Policy:
    folder = tmp_path / "demo"
    folder.mkdir(exist_ok=True)
    (folder / "v1.yaml").write_text(body)
    return Policy.load(tmp_path, "demo@1")


def test_a_rule_is_described_by_its_field_or_the_comments_above_it(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    # A blank line cuts a comment off the rule; a param's comment says why its threshold is.
    assert policy.describe("unsure") == "Below this the agents are guessing."
    assert policy.describe("sure") == "The agents agree and are confident."
    assert policy.describe("said") == "Said in the file."
    assert policy.describe("default") == "Somewhere in between."
    assert policy.describe("gone") == ""
    bare = load(tmp_path, POLICY.replace("# ", "#"))
    assert bare.describe("unsure") == "Below this the agents are guessing."
    no_comments = load(tmp_path, "\n".join(x for x in POLICY.splitlines() if "#" not in x))
    assert no_comments.describe("sure") == (
        "when ensemble.confidence >= params.ceiling: auto_accept"
    )
    assert no_comments.describe("default") == "no rule matched: the default outcome, human_review"
    with pytest.raises(PolicyError, match="description must be text"):
        load(tmp_path, POLICY.replace('"  Said   in the file. "', "[1, 2]"))


def test_released_route_versions_describe_every_rule_and_keep_their_bytes() -> None:
    store = PolicyStore(SHIPPED)
    for ref in ("route_default@1", "route_default@2"):
        path = SHIPPED / ref.replace("@", "/v").__add__(".yaml")
        policy = store.resolve(ref)
        assert policy.ref.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert "34 %" in policy.describe("agents_disagree")  # from its param's comment
        assert policy.describe("default") == "Agreeing but unsure: a person decides."
        assert all(policy.describe(r.id) for r in policy.rules)


def test_a_preview_is_one_short_line() -> None:
    assert preview("a\n  b\tc") == "a b c"
    long = preview("word " * 100, chars=20)
    assert len(long) == 20 and long.endswith("…")
    assert preview(None) == "(text not in the catalog)"


def test_pages_allow_a_script_only_by_their_own_nonce() -> None:
    def directives(policy: str) -> dict[str, str]:
        return dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())

    plain, nonced = directives(csp()), directives(csp(script_nonce="abc"))
    assert "script-src" not in plain and plain["default-src"] == "'none'"
    assert nonced == plain | {"script-src": "'nonce-abc'"}  # that script and nothing else
