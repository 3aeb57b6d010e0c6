"""The review page end to end: `labelfabric review serve` on the embedded stack, driven by
Debian's headless Chromium through Playwright. A reviewer opens the queue, labels an item,
sees it leave the queue, and the label lands in the catalog; a refused submission shows why."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import text

from catalog import db
from tests.helpers import cli, spawn, stop, write_jsonl
from worker.settings import Settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, installed by `make` (see Makefile)
# As root, with no network beyond loopback: no sandbox, no background fetches.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page_url(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page") / "serve.log"
    proc = spawn(stack, log, "review", "serve")
    url = f"http://127.0.0.1:{stack.review_port}"
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
    assert await asyncio.to_thread(CHROMIUM.exists), "no /usr/bin/chromium: `make test` installs it"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
def routed(
    stack: Settings,
    cli_worker: None,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, str]]:
    """A dataset whose job routed some items to review: (dataset, {item id: text})."""
    chosen = [r["text"] for r in gold_rows[400:440]]
    source = write_jsonl(tmp_path_factory.mktemp("pg") / "pg.jsonl", chosen)
    dataset = f"pg{uuid.uuid4().hex[:6]}"
    job = cli(
        stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment", "--wait"
    )
    assert job.returncode == 0, job.stdout + job.stderr
    return dataset, {hashlib.sha256(t.encode()).hexdigest(): t for t in chosen}


async def queue_ids(page: Page) -> list[str]:
    return [
        str(i)
        for i in await page.locator("#queue tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.item)"
        )
    ]


async def test_reviewer_labels_an_item_on_the_page(
    stack: Settings, page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, texts = routed
    page = await browser.new_page()
    await page.goto(f"{page_url}/?reviewer=alice&dataset={dataset}")
    await expect(page.locator("#queue tbody tr").first).to_be_visible()
    before = await queue_ids(page)
    assert before and set(before) <= set(texts), before
    item = before[0]

    await page.locator(f'#queue tr[data-item="{item}"] a').click()
    await expect(page.locator("#text")).to_have_text(texts[item])
    agents = await page.locator("#votes tbody td:first-child").all_inner_texts()
    assert agents == ["keywords", "tfidf_logreg"]
    assert "route_default@" in await page.content()

    await page.fill("#review textarea[name=note]", "clearly negative")
    await page.click("button[name=label][value=negative]")
    await expect(page.locator(".flash")).to_contain_text("as negative: the item is done")
    after = await queue_ids(page)
    assert item not in after and set(after) == set(before) - {item}

    engine = db.make_engine(stack.catalog_url, pool_size=1)
    try:
        # The Dataset workflow writes a new snapshot version with the human label.
        version = "SELECT max(version) FROM snapshot WHERE dataset = :d"
        for _ in range(50):
            async with engine.connect() as conn:
                if await conn.scalar(text(version), {"d": dataset}) == 2:
                    break
            await asyncio.sleep(0.2)
        async with engine.connect() as conn:
            assert await conn.scalar(text(version), {"d": dataset}) == 2
            label = (
                await conn.execute(
                    text(
                        "SELECT label, source, reviewers FROM label WHERE dataset = :d"
                        " AND item_id = :i AND is_current"
                    ),
                    {"d": dataset, "i": item},
                )
            ).one()
            note = await conn.scalar(
                text("SELECT note FROM review WHERE dataset = :d AND item_id = :i AND accepted"),
                {"d": dataset, "i": item},
            )
    finally:
        await engine.dispose()
    assert (label.label, label.source, list(label.reviewers)) == ("negative", "human", ["alice"])
    assert note == "clearly negative"
    await page.close()


async def test_a_refused_submission_shows_its_reason_and_keeps_the_item(
    page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = routed
    page = await browser.new_page()
    await page.goto(f"{page_url}/?dataset={dataset}")
    before = await queue_ids(page)
    item = before[-1]
    await page.locator(f'#queue tr[data-item="{item}"] a').click()
    await page.fill("#review input[name=reviewer]", "mallory")
    await page.click("button[name=label][value=positive]")
    await expect(page.locator("#refused")).to_contain_text(
        "refused: reviewer 'mallory' is not on the roster for task 'sentiment'"
    )
    await page.goto(f"{page_url}/?dataset={dataset}")
    assert item in await queue_ids(page)
    await page.close()


def _request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_page_refuses_cross_site_posts_foreign_hosts_and_non_reviews(
    page_url: str, routed: tuple[str, dict[str, str]]
) -> None:
    import re
    from urllib.parse import urlencode

    dataset, _ = routed
    status, queue = _request(f"{page_url}/?dataset={dataset}")
    waiting = re.findall(r'data-item="([0-9a-f]{64})"', queue)
    assert status == 200 and waiting, queue
    path = f"/items/review:{dataset}:{waiting[0]}"
    status, page = _request(page_url + path)
    assert status == 200
    token = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert token is not None
    form = {"reviewer": "alice", "label": "positive", "note": "forged"}
    # No token, a wrong token, a foreign Origin, a cross-site fetch: all refused, nothing sent.
    for fields, headers in [
        (form, {}),
        (form | {"csrf": "0" * 64}, {}),
        (form | {"csrf": token[1]}, {"Origin": "http://evil.example"}),
        (form | {"csrf": token[1]}, {"Sec-Fetch-Site": "cross-site"}),
    ]:
        status, body = _request(page_url + path, data=urlencode(fields).encode(), headers=headers)
        assert status == 403, body
    status, page = _request(page_url + path)
    assert status == 200 and "forged" not in page and "(awaiting)" in page
    # DNS rebinding: a request naming another host is refused.
    status, _ = _request(page_url + "/", headers={"Host": "evil.example:7245"})
    assert status == 400
    # What is not a review is a 404, not a 500.
    for other in ("/items/label:x:y", f"/items/review:{dataset}:nosuchitem"):
        status, _ = _request(page_url + other)
        assert status == 404
