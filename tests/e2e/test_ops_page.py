"""The ops page end to end: `labelfabric review serve` over a catalog with a few datasets
(real jobs under two policy versions, gold labels, reviews with gold checks), in Debian's
headless Chromium. A lead and an admin see, per dataset, SVG charts whose data points are
the catalog's numbers (versions and verdicts, backlog, auto-accept rate against gold
accuracy, agents, reviewers); a screenshot of the page is a real picture; a reviewer gets
403. The page's `/metrics` answers loopback clients with the catalog's gauges. Prints how
long `/ops` takes to render."""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat
from playwright.async_api import Browser, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from tests.e2e.test_review_page import (
    CHROMIUM,
    CHROMIUM_ARGS,
    labelfabric,
    password_of,
    query,
    sign_in,
)
from tests.helpers import ThreadWorker, cli, spawn, stop, write_jsonl
from tests.integration.reviewing import eventually, handle_for, submit
from worker.settings import Settings

pytestmark = pytest.mark.slow

PEOPLE = ("alice", "carol", "olga")  # reviewer, lead, admin (on this module's roster copy)
TIMED = 8  # renders of /ops measured


@pytest.fixture(scope="module")
def ops_settings(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The stack's, on a port of its own, with an admin of its own (whose sign-in events no
    other test counts) on a copy of the roster."""
    roster = tmp_path_factory.mktemp("opsroster") / "roster.yaml"
    roster.write_text(
        stack.roster_path.read_text()
        + "  - id: olga\n    role: admin\n    tasks: []\n    clearance: public\n"
        + "    groups: [admins]\n"
    )
    return stack.model_copy(update={"review_port": stack.review_port + 10, "roster_path": roster})


@pytest.fixture(scope="module")
def ops_url(ops_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for who in PEOPLE:
        done = labelfabric(ops_settings, "reviewer", "password", who, stdin=password_of(who))
        assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path_factory.mktemp("ops") / "serve.log"
    proc = spawn(ops_settings, log, "review", "serve")
    url = f"http://127.0.0.1:{ops_settings.review_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                assert answer.read() == b"ok"
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise AssertionError(f"review page did not start:\n{log.read_text()}") from None
            time.sleep(0.2)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
async def catalog(
    stack: Settings,
    env: WorkflowEnvironment,
    cli_worker: ThreadWorker,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Two datasets: A labeled by two jobs under route_default v1 and v2, B by one; gold
    labels for all their items (loaded first, so reviews get gold checks); alice answers the
    gold checks (one wrong), bob two other items."""
    tmp = tmp_path_factory.mktemp("opsdata")
    rows = gold_rows[820:1000]
    gold = {hashlib.sha256(r["text"].encode()).hexdigest(): r["label"] for r in rows}
    (tmp / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = cli(stack, "review", "gold", str(tmp / "gold.jsonl"), "--task", "sentiment")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    tag = uuid.uuid4().hex[:5]
    a, b = f"opsa{tag}", f"opsb{tag}"
    jobs = [(a, rows[:40], "route_default@1"), (a, rows[40:80], "route_default@2")]
    jobs.append((b, rows[80:], "route_default@2"))
    for i, (dataset, part, policy) in enumerate(jobs):
        source = write_jsonl(tmp / f"{i}.jsonl", [r["text"] for r in part])
        args = ("job", "start", str(source), "--dataset", dataset, "--task", "sentiment")
        done = await asyncio.to_thread(cli, stack, *args, "--policy", policy, "--wait")
        assert done.returncode == 0, done.stdout + done.stderr

    checks = await query(
        stack,
        "SELECT dataset, item_id, gold_label FROM review_task WHERE dataset IN (:a, :b)"
        " AND gold_label IS NOT NULL AND state = 'awaiting' ORDER BY dataset, item_id",
        a=a,
        b=b,
    )
    assert checks, "no gold checks were opened"
    for k, (dataset, item, label) in enumerate(checks):
        wrong = "negative" if label == "positive" else "positive"
        answer = wrong if k == 0 else label
        assert (await submit(handle_for(env, dataset, item), "alice", answer)).accepted
    others = await query(
        stack,
        "SELECT dataset, item_id FROM review_task WHERE dataset = :b AND gold_label IS NULL"
        " AND state = 'awaiting' ORDER BY item_id LIMIT 2",
        b=b,
    )
    for dataset, item in others:
        assert (await submit(handle_for(env, dataset, item), "bob", "positive")).accepted

    async def settled() -> bool:  # reviews closed, snapshots written, nothing moving
        sql = (
            "SELECT (SELECT count(*) FROM review_task WHERE dataset IN (:a, :b)"
            " AND state = 'done'), (SELECT coalesce(sum(version), 0) FROM snapshot"
            " WHERE dataset IN (:a, :b))"
        )
        first = tuple((await query(stack, sql, a=a, b=b))[0])
        await asyncio.sleep(2)
        second = tuple((await query(stack, sql, a=a, b=b))[0])
        return first == second and first[0] == len(checks) + len(others)

    assert await eventually(settled, within=60)
    return {"datasets": [a, b], "gold": gold, "checks": len(checks)}


async def chart_marks(page: Page, chart: str) -> list[dict[str, str]]:
    return await page.locator(f"svg#{chart} .bar, svg#{chart} .point").evaluate_all(
        "els => els.map(e => Object.assign({}, e.dataset))"
    )


async def expected(stack: Settings, dataset: str, gold: dict[str, str]) -> dict[str, Any]:
    """The figures of `dataset`, computed here from the catalog's rows."""
    versions = await query(
        stack,
        "SELECT version, item_count FROM snapshot WHERE dataset = :d ORDER BY version",
        d=dataset,
    )
    decisions = await query(
        stack,
        "SELECT policy_id || '@' || policy_version, outcome, item_id, ensemble_label"
        " FROM decision WHERE dataset = :d",
        d=dataset,
    )
    policies: dict[str, tuple[float, float]] = {}
    for ref in sorted({r[0] for r in decisions}):
        mine = [r for r in decisions if r[0] == ref]
        accepted = [r for r in mine if r[1] == "auto_accept"]
        judged = [r for r in accepted if r[2] in gold]
        right = sum(gold[r[2]] == r[3] for r in judged)
        policies[ref] = (len(accepted) / len(mine), right / len(judged) if judged else -1)
    reviewers = await query(
        stack,
        "SELECT reviewer, count(*) FILTER (WHERE correct), count(correct) FROM review"
        " WHERE dataset = :d GROUP BY 1",
        d=dataset,
    )
    open_now = await query(
        stack,
        "SELECT count(*) FROM review_task WHERE dataset = :d AND closed_at IS NULL",
        d=dataset,
    )
    return {
        "versions": {f"v{v}": float(n) for v, n in versions},
        "policies": policies,
        "reviewers": {r: right / n for r, right, n in reviewers if n},
        "backlog_now": float(open_now[0][0]),
    }


async def test_a_lead_sees_charts_of_the_catalogs_numbers(
    stack: Settings,
    ops_url: str,
    browser: Browser,
    catalog: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = await sign_in(browser, ops_url, "carol", "/ops")
    assert await page.locator("#nav-ops").count() == 1
    for dataset in catalog["datasets"]:
        want = await expected(stack, dataset, catalog["gold"])
        section = page.locator(f'section[data-dataset="{dataset}"]')
        assert await section.count() == 1
        assert await section.locator("svg.chart").count() == 5
        key = dataset  # names here are letters and digits only

        versions = await chart_marks(page, f"versions-{key}")
        assert {m["label"]: float(m["value"]) for m in versions} == want["versions"]

        points = await chart_marks(page, f"policies-{key}")
        got = {m["label"]: (float(m["x"]), float(m["y"])) for m in points}
        shown = {k: v for k, v in want["policies"].items() if v[1] >= 0}
        assert got.keys() == shown.keys()
        for ref, (x, y) in shown.items():
            assert got[ref] == pytest.approx((x, y))

        reviewers = await chart_marks(page, f"reviewers-{key}")
        assert {m["label"]: float(m["value"]) for m in reviewers} == pytest.approx(
            want["reviewers"]
        )

        backlog = await chart_marks(page, f"backlog-{key}")
        assert len(backlog) == 41 and float(backlog[-1]["y"]) == want["backlog_now"]
        assert max(float(m["y"]) for m in backlog) >= want["backlog_now"]

        agents = await chart_marks(page, f"agents-{key}")
        assert {m["label"] for m in agents} and all(0 <= float(m["value"]) <= 1 for m in agents)

    # Both policy versions of dataset A are on its chart.
    a = catalog["datasets"][0]
    labels = {m["label"] for m in await chart_marks(page, f"policies-{a}")}
    assert {"route_default@1", "route_default@2"} <= labels

    # A picture of one dataset's panel (the whole page grows with the catalog).
    await page.goto(f"{ops_url}/ops?dataset={a}")
    shot = tmp_path / "ops.png"
    await page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.width >= 800 and rgb.height >= 1500, rgb.size
        assert shot.stat().st_size > 40_000
        assert max(ImageStat.Stat(rgb).stddev) > 30  # not blank
        colors = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colors) > 200
        blue = sum(n for n, c in colors if c == (21, 101, 192))  # the charts' first series
        assert blue > 500

    cookie = "; ".join(f"{c['name']}={c['value']}" for c in await page.context.cookies())
    datasets = len(await query(stack, "SELECT DISTINCT dataset FROM job"))
    decisions = (await query(stack, "SELECT count(*) FROM decision"))[0][0]
    report = [f"\n/ops on a catalog of {datasets} datasets, {decisions} decisions:"]
    medians: dict[str, float] = {}
    for path in ("/ops", "/ops?all=1"):
        timings = []
        for _ in range(TIMED):
            req = urllib.request.Request(f"{ops_url}{path}", headers={"Cookie": cookie})
            started = time.perf_counter()
            with await asyncio.to_thread(urllib.request.urlopen, req, timeout=60) as answer:
                assert answer.status == 200
                size = len(await asyncio.to_thread(answer.read))
                server = answer.headers.get("server-timing", "")
            timings.append((time.perf_counter() - started) * 1000)
        report.append(
            f"  GET {path}: median {statistics.median(timings):.0f} ms, min {min(timings):.0f},"
            f" max {max(timings):.0f} ({TIMED} renders, {size // 1024} KiB; last {server})"
        )
        medians[path] = statistics.median(timings)
    with capsys.disabled():
        sys.stdout.write("\n".join(report) + "\n")
    (tmp_path / "ops-timings.txt").write_text("\n".join(report) + "\n")
    assert medians["/ops"] < 5000
    await page.close()


async def test_an_admin_sees_the_page_and_a_reviewer_is_refused(
    ops_url: str, browser: Browser, catalog: dict[str, Any]
) -> None:
    a = catalog["datasets"][0]
    olga = await sign_in(browser, ops_url, "olga", f"/ops?dataset={a}")
    assert await olga.locator("section.dataset").count() == 1
    assert await olga.locator(f"svg#versions-{a} .bar").count() >= 2
    await olga.close()

    alice = await sign_in(browser, ops_url, "alice")
    assert await alice.locator("#nav-ops").count() == 0
    answer = await alice.goto(f"{ops_url}/ops")
    assert answer is not None and answer.status == 403
    assert "may not" in await alice.content()
    await alice.close()


async def test_metrics_answer_loopback_with_the_catalogs_gauges(
    stack: Settings, ops_url: str, catalog: dict[str, Any]
) -> None:
    b = catalog["datasets"][1]

    def scrape() -> str:
        with urllib.request.urlopen(f"{ops_url}/metrics", timeout=30) as answer:
            assert answer.status == 200
            return answer.read().decode()

    body = await asyncio.to_thread(scrape)
    ((waiting, opened),) = await query(
        stack,
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(DISTINCT workflow_id)"
        " FILTER (WHERE state IN ('opening', 'awaiting', 'escalated'))"
        " FROM review_task WHERE dataset = :d AND closed_at IS NULL",
        d=b,
    )
    lines = [x for x in body.splitlines() if x.startswith("labelfabric_review_backlog{")]
    mine = {
        ("waiting" if 'state="waiting"' in x else "open"): float(x.rsplit(" ", 1)[1])
        for x in lines
        if f'dataset="{b}"' in x
    }
    assert mine == {"waiting": float(waiting), "open": float(opened)}
    assert "labelfabric_reviewer_gold_accuracy{" in body and 'reviewer="alice"' in body
    assert "labelfabric_dataset_version{" in body
