"""The audit log is tamper-evident: altering, deleting, reordering or cutting off events in
SQL is each caught by `labelfabric audit verify`, naming the first broken link; the app's
database role can append events but never change or remove them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import db
from tests.helpers import claim, cli, write_jsonl
from worker.settings import Settings

pytestmark = pytest.mark.slow

UPDATE_OUTCOME = text("UPDATE decision SET outcome = :o WHERE job_id = :j AND item_id = :i")
Tamper = Callable[[AsyncConnection], Coroutine[Any, Any, None]]


def as_owner(settings: Settings, work: Tamper) -> None:
    """Run `work` as the catalog owner with triggers off (session_replication_role = replica):
    what someone with the database's superuser could do behind the application's back."""

    async def run() -> None:
        engine = db.make_engine(settings.owner_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL session_replication_role = replica"))
                await work(conn)
        finally:
            await engine.dispose()

    asyncio.run(run())


def last_ids(settings: Settings, n: int) -> list[int]:
    out: list[int] = []

    async def work(conn: AsyncConnection) -> None:
        rows = await conn.execute(text("SELECT id FROM audit_event ORDER BY id DESC LIMIT :n"),
                                  {"n": n})  # fmt: skip
        out.extend(sorted(r[0] for r in rows))

    as_owner(settings, work)
    return out


def verify(settings: Settings) -> tuple[int, str]:
    out = cli(settings, "audit", "verify")
    return out.returncode, " ".join(out.stdout.split())


@pytest.fixture(scope="module")
def audited(stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Settings:  # fmt: skip
    """A real job (events: job started, ingested, chunks, snapshot, gate verdict, finished)."""
    source = write_jsonl(tmp_path_factory.mktemp("audit") / "items.jsonl",
                         [r["text"] for r in gold_rows[2300:2340]])  # fmt: skip
    out = cli(stack, "job", "start", str(source), "--dataset", f"au{uuid.uuid4().hex[:6]}",
              "--task", "sentiment", "--policy", "route_default", "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return stack


def test_an_intact_chain_verifies(audited: Settings) -> None:
    code, out = verify(audited)
    assert code == 0 and "chain intact" in out, out
    assert "manifest anchor(s) found" in out and not out.endswith(
        " 0 manifest anchor(s) found in it"
    )


def test_the_owner_cannot_update_or_delete_without_disabling_the_trigger(
    audited: Settings,
) -> None:
    async def run() -> None:
        engine = db.make_engine(audited.owner_url, pool_size=1)
        try:
            for statement in ("UPDATE audit_event SET actor = 'x'", "DELETE FROM audit_event"):
                with pytest.raises(DBAPIError, match="audit_event is append-only"):
                    async with engine.begin() as conn:
                        await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_an_altered_event_is_caught(audited: Settings) -> None:
    target = last_ids(audited, 5)[1]
    saved: dict[str, Any] = {}

    async def alter(conn: AsyncConnection) -> None:
        row = (await conn.execute(text("SELECT payload FROM audit_event WHERE id = :i"),
                                  {"i": target})).one()  # fmt: skip
        saved["payload"] = row[0]
        await conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE id = :i"),
                           {"i": target})  # fmt: skip

    async def restore(conn: AsyncConnection) -> None:
        await conn.execute(text("UPDATE audit_event SET actor = 'labelfabric' WHERE id = :i"),
                           {"i": target})  # fmt: skip

    as_owner(audited, alter)
    try:
        code, out = verify(audited)
        assert code == 1 and f"BROKEN at event {target} " in out, out
        assert "the event was altered" in out
    finally:
        as_owner(audited, restore)


def test_a_deleted_event_is_caught(audited: Settings) -> None:
    target = last_ids(audited, 5)[2]
    saved: list[Any] = []

    async def delete(conn: AsyncConnection) -> None:
        rows = await conn.execute(text("DELETE FROM audit_event WHERE id = :i RETURNING *"),
                                  {"i": target})  # fmt: skip
        saved.append(rows.one()._mapping)

    async def restore(conn: AsyncConnection) -> None:
        await conn.execute(db.T_AUDIT.insert().values(**saved[0]))

    as_owner(audited, delete)
    try:
        code, out = verify(audited)
        assert code == 1 and f"BROKEN at event {target + 1} " in out, out
        assert f"does not match the hash of event {target - 1}" in out
        assert "deleted, inserted or reordered" in out
    finally:
        as_owner(audited, restore)


def test_reordered_events_are_caught(audited: Settings) -> None:
    a, b = last_ids(audited, 5)[1:3]

    async def swap(conn: AsyncConnection) -> None:
        await conn.execute(text("UPDATE audit_event SET id = -1 WHERE id = :a"), {"a": a})
        await conn.execute(text("UPDATE audit_event SET id = :a WHERE id = :b"), {"a": a, "b": b})
        await conn.execute(text("UPDATE audit_event SET id = :b WHERE id = -1"), {"b": b})

    as_owner(audited, swap)
    try:
        code, out = verify(audited)
        assert code == 1 and f"BROKEN at event {a} " in out, out
        assert "deleted, inserted or reordered" in out
    finally:
        as_owner(audited, swap)  # swapping again restores the order


def test_cutting_off_the_newest_events_is_caught_by_the_manifest_anchors(
    audited: Settings,
) -> None:
    """Removing events from the end leaves an intact chain; the snapshot manifest in S3 that
    recorded a now-missing head is what shows it."""
    saved: list[Any] = []

    async def cut(conn: AsyncConnection) -> None:
        # Everything after the newest job's start: its snapshot's anchor goes too.
        rows = await conn.execute(text(
            "DELETE FROM audit_event WHERE id > "
            "(SELECT max(id) FROM audit_event WHERE kind = 'job_started') RETURNING *"
        ))  # fmt: skip
        saved.extend(r._mapping for r in rows)

    async def restore(conn: AsyncConnection) -> None:
        for row in sorted(saved, key=lambda r: r["id"]):
            await conn.execute(db.T_AUDIT.insert().values(**row))

    as_owner(audited, cut)
    try:
        code, out = verify(audited)
        assert code == 1 and "BROKEN" not in out, out
        # Named by the snapshot manifests, and by the heads activities anchored after them.
        assert "MISSING: the chain head recorded in" in out
    finally:
        as_owner(audited, restore)


def test_the_app_role_appends_but_cannot_change_audit_events(
    audited: Settings, tmp_path: Path
) -> None:
    role = f"lf_app_{uuid.uuid4().hex[:6]}"
    # A password with a bind-parameter look, a dollar quote and a quote: quoted by the server.
    made = cli(audited, "db", "app-role", role, "--password", "p :x $$ ' end")
    assert made.returncode == 0, made.stdout + made.stderr
    from sqlalchemy.engine import make_url

    url = make_url(audited.owner_url).set(username=role, password="p :x $$ ' end")
    url_text = url.render_as_string(hide_password=False)

    async def run() -> None:
        engine = db.make_engine(url_text, pool_size=1)
        try:
            async with engine.begin() as conn:
                await db.append_audit(conn, key=f"test:{role}", actor=role, kind="test",
                                      subject="role", payload={})  # fmt: skip
                assert await conn.scalar(text("SELECT count(*) FROM label")) is not None
            for statement in (
                "UPDATE audit_event SET actor = 'x'",
                "DELETE FROM audit_event",
                "SET session_replication_role = replica",
            ):
                with pytest.raises(DBAPIError, match="permission denied"):
                    async with engine.begin() as conn:
                        await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert verify(audited)[0] == 0  # its event extended the chain like any other


def test_an_altered_decision_row_is_caught_by_its_chunk_digest(audited: Settings) -> None:
    saved: list[Any] = []

    async def alter(conn: AsyncConnection) -> None:
        row = (await conn.execute(text(
            "SELECT job_id, item_id, outcome, chunk FROM decision ORDER BY decided_at DESC LIMIT 1"
        ))).one()  # fmt: skip
        saved.append(row)
        flipped = "auto_accept" if row[2] != "auto_accept" else "human_review"
        await conn.execute(UPDATE_OUTCOME, {"o": flipped, "j": row[0], "i": row[1]})

    async def restore(conn: AsyncConnection) -> None:
        job_id, item_id, outcome, _ = saved[0]
        await conn.execute(UPDATE_OUTCOME, {"o": outcome, "j": job_id, "i": item_id})

    assert "match their digests" in verify(audited)[1]
    as_owner(audited, alter)
    try:
        code, out = verify(audited)
        job_id, _, _, chunk = saved[0]
        assert code == 1 and "BROKEN" not in out, out
        assert f"ALTERED: the decisions of {job_id} chunk {chunk} no longer match" in out
    finally:
        as_owner(audited, restore)


def test_a_snapshot_version_gone_from_s3_or_with_other_bytes_is_caught(audited: Settings) -> None:
    """A version deleted behind the catalog's back, or bytes not matching the recorded
    sha256: staged in SQL (a snapshot row pointing at a version S3 does not have, a newest
    version whose recorded hash differs), then restored, since S3 versions cannot come back."""
    saved: list[Any] = []

    async def alter(conn: AsyncConnection) -> None:
        row = (await conn.execute(text(
            "SELECT dataset, version, s3_version_id, content_sha256 FROM snapshot "
            "ORDER BY created_at DESC LIMIT 1"
        ))).one()  # fmt: skip
        saved.append(row)
        await conn.execute(
            text("UPDATE snapshot SET s3_version_id = 'gone', content_sha256 = :h "
                 "WHERE dataset = :d AND version = :v"),
            {"h": "0" * 64, "d": row[0], "v": row[1]},
        )  # fmt: skip

    async def restore(conn: AsyncConnection) -> None:
        dataset, version, version_id, sha = saved[0]
        await conn.execute(
            text("UPDATE snapshot SET s3_version_id = :i, content_sha256 = :h "
                 "WHERE dataset = :d AND version = :v"),
            {"i": version_id, "h": sha, "d": dataset, "v": version},
        )  # fmt: skip

    code, out = verify(audited)
    assert code == 0 and "snapshot version(s) present in S3" in out, out
    as_owner(audited, alter)
    try:
        code, out = verify(audited)
        dataset, version = saved[0][0], saved[0][1]
        assert code == 1 and f"SNAPSHOT: {dataset}@{version}" in out, out
        assert "cannot be read from S3" in out
    finally:
        as_owner(audited, restore)


def reviewed_item(settings: Settings, *, again: bool = False) -> str:
    """An item of the audited job, reviewed by alice through the CLI (once per session,
    unless `again`)."""
    rows = sql_rows(
        settings,
        "SELECT r.item_id FROM review r WHERE r.reviewer = 'alice' AND r.accepted "
        "AND r.via = 'update' ORDER BY r.id DESC LIMIT 1",
    )
    if rows and not again:
        return str(rows[0][0])
    [(item,)] = sql_rows(
        settings,
        "SELECT item_id FROM review_task WHERE closed_at IS NULL ORDER BY opened_at DESC LIMIT 1",
    )
    out = cli(settings, "review", "submit", str(item), "--label", "positive", "--token",
              claim("alice"), "--note", "seen")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return str(item)


def quiet_chain(settings: Settings, still_s: float = 3.0) -> None:
    """Wait until no event was appended for `still_s` (a closed review's snapshot follows it
    after a debounce): cutting the newest event while another is appended would break the
    chain instead of shortening it."""
    import time

    last, since = None, time.monotonic()
    while time.monotonic() - since < still_s:
        [(newest,)] = sql_rows(settings, "SELECT max(id) FROM audit_event")
        if newest != last:
            last, since = newest, time.monotonic()
        time.sleep(0.3)


def sql_rows(settings: Settings, statement: str, **params: Any) -> list[Any]:
    out: list[Any] = []

    async def work(conn: AsyncConnection) -> None:
        out.extend((await conn.execute(text(statement), params)).all())

    as_owner(settings, work)
    return out


@pytest.mark.parametrize(
    ("what", "alter", "restore", "finding"),
    [
        (
            "a flipped current agent label",
            "UPDATE label SET label = CASE label WHEN 'positive' THEN 'negative' "
            "ELSE 'positive' END WHERE id = (SELECT max(id) FROM label WHERE source = 'agent')",
            "UPDATE label SET label = CASE label WHEN 'positive' THEN 'negative' "
            "ELSE 'positive' END WHERE id = (SELECT max(id) FROM label WHERE source = 'agent')",
            "but its decision says auto_accept",
        ),
        (
            "an item's text",
            "UPDATE item SET text = text || ' (edited)' WHERE (dataset, id) = "
            "(SELECT dataset, item_id FROM decision ORDER BY decided_at DESC, item_id LIMIT 1)",
            "UPDATE item SET text = left(text, length(text) - 9) WHERE (dataset, id) = "
            "(SELECT dataset, item_id FROM decision ORDER BY decided_at DESC, item_id LIMIT 1)",
            "its text no longer hashes to its id",
        ),
        (
            "a vote's rationale",
            "UPDATE vote SET rationale = rationale || '!' WHERE (job_id, item_id, agent) = "
            "(SELECT job_id, item_id, agent FROM vote "
            "ORDER BY job_id DESC, item_id, agent LIMIT 1)",
            "UPDATE vote SET rationale = left(rationale, length(rationale) - 1) WHERE "
            "(job_id, item_id, agent) = (SELECT job_id, item_id, agent FROM vote "
            "ORDER BY job_id DESC, item_id, agent LIMIT 1)",
            "the votes_rationale of",
        ),
        (
            "an accepted review's reviewer",
            "UPDATE review SET reviewer = 'mallory' WHERE id = "
            "(SELECT max(id) FROM review WHERE reviewer = 'alice' AND accepted)",
            "UPDATE review SET reviewer = 'alice' WHERE id = "
            "(SELECT max(id) FROM review WHERE reviewer = 'mallory' AND accepted)",
            "'mallory' 'positive' accepted, but its event says 'alice'",
        ),
        (
            "a human label",
            "UPDATE label SET label = 'negative' WHERE id = "
            "(SELECT max(id) FROM label WHERE source = 'human')",
            "UPDATE label SET label = 'positive' WHERE id = "
            "(SELECT max(id) FROM label WHERE source = 'human')",
            "but its close event says 'positive'",
        ),
    ],
)
def test_what_explain_shows_is_covered_by_the_audit(
    audited: Settings, what: str, alter: str, restore: str, finding: str
) -> None:
    reviewed_item(audited)  # so there is a review and a human label to tamper with

    def executes(statement: str) -> Tamper:
        async def work(conn: AsyncConnection) -> None:
            assert (await conn.execute(text(statement))).rowcount == 1, statement

        return work

    as_owner(audited, executes(alter))
    try:
        code, out = verify(audited)
        assert code == 1 and "BROKEN" not in out, out
        assert "ALTERED:" in out and finding in out, (what, out)
    finally:
        as_owner(audited, executes(restore))


def test_deleting_the_newest_event_is_caught_by_the_s3_anchor(audited: Settings) -> None:
    """After the last snapshot a job still appends events (job_completed, reviews); the
    head each activity anchors in S3 shows their removal. (Events written here by hand, as
    the app-role test does, are not anchored: the newest ones must come from the system.)"""
    reviewed_item(audited, again=True)
    quiet_chain(audited)
    saved: list[Any] = []

    async def cut(conn: AsyncConnection) -> None:
        rows = await conn.execute(text(
            "DELETE FROM audit_event WHERE id = (SELECT max(id) FROM audit_event) RETURNING *"
        ))  # fmt: skip
        saved.extend(r._mapping for r in rows)

    async def restore(conn: AsyncConnection) -> None:
        for row in saved:
            await conn.execute(db.T_AUDIT.insert().values(**row))

    code, out = verify(audited)
    assert code == 0, out
    as_owner(audited, cut)
    try:
        code, out = verify(audited)
        assert code == 1 and "BROKEN" not in out, out
        assert "MISSING: the chain head recorded in the audit head anchored in S3" in out, out
    finally:
        as_owner(audited, restore)


def test_the_chain_is_intact_after_every_tamper_was_restored(audited: Settings) -> None:
    """Each tamper test restores what it changed; one walk at the end shows they all did
    (and that the app role's event extended the chain like any other)."""
    code, out = verify(audited)
    assert code == 0 and "chain intact" in out, out
