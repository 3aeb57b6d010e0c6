"""The review page end to end: `labelfabric review serve` on the embedded stack, driven by
Debian's headless Chromium through Playwright.

People sign in (passwords set with `labelfabric reviewer password`, a one-time link from
`labelfabric reviewer login-link`); a reviewer labels an item and the label lands in the
catalog; a stale page's submission shows the workflow's refusal; a lead corrects a closed
review (a new human label, an audit event with the reason, a new snapshot version) and sees
it in the reviewer statistics; another role's pages and actions are refused with 403; an
item above one's clearance never shows; leaving the roster or signing out ends a session;
and the page refuses cross-site posts, foreign hosts and floods of wrong passwords."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import text

from catalog import db
from catalog.audit import Verdict, verify_rows
from tests.helpers import cli, settings_env, spawn, stop, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

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
PEOPLE = ("alice", "bob", "carol", "dana")  # reviewer, reviewer, lead, reviewer (public)


def password_of(who: str) -> str:
    return f"pw-{who}-0123456789"


def labelfabric(
    settings: Settings, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The real `labelfabric` (stdin not a terminal: `reviewer password` reads one line)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=settings_env(settings) | {"PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )


@pytest.fixture(scope="module")
def page_settings(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The stack's settings with a roster copy the page reads (a test takes bob off it)."""
    roster = tmp_path_factory.mktemp("roster") / "roster.yaml"
    roster.write_text(stack.roster_path.read_text())
    return stack.model_copy(update={"roster_path": roster})


@pytest.fixture(scope="module")
def page_url(page_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for who in PEOPLE:
        done = labelfabric(page_settings, "reviewer", "password", who, stdin=password_of(who))
        assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path_factory.mktemp("page") / "serve.log"
    proc = spawn(page_settings, log, "review", "serve")
    url = f"http://127.0.0.1:{page_settings.review_port}"
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
    assert "token=" not in log.read_text().replace("token=…", "")  # links stay out of logs


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
    chosen = [r["text"] for r in gold_rows[400:460]]
    source = write_jsonl(tmp_path_factory.mktemp("pg") / "pg.jsonl", chosen)
    dataset = f"pg{uuid.uuid4().hex[:6]}"
    job = cli(
        stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment", "--wait"
    )
    assert job.returncode == 0, job.stdout + job.stderr
    return dataset, {hashlib.sha256(t.encode()).hexdigest(): t for t in chosen}


async def sign_in(browser: Browser, url: str, who: str, next_path: str = "/") -> Page:
    page = await browser.new_page()
    await page.goto(url + next_path)
    await expect(page.locator("#login")).to_be_visible()  # sent to sign in first
    await page.fill("#login input[name=reviewer]", who)
    await page.fill("#login input[name=password]", password_of(who))
    await page.click("#login button")
    await expect(page.locator("#whoami")).to_contain_text(f"{who} (")
    return page


async def queue_ids(page: Page) -> list[str]:
    return [
        str(i)
        for i in await page.locator("#queue tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.item)"
        )
    ]


def item_path(dataset: str, item: str) -> str:
    return "/items/" + quote(f"review:{dataset}:{item}", safe="")


async def query(settings: Settings, sql: str, **params: object) -> list[Any]:
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(text(sql), params))
    finally:
        await engine.dispose()


async def test_people_sign_in_with_a_password_or_a_one_time_link(
    page_settings: Settings, page_url: str, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(f"{page_url}/")
    assert page.url.startswith(f"{page_url}/login")
    for who, password in [("alice", "not her password"), ("nobody", "not anyones pw")]:
        await page.fill("#login input[name=reviewer]", who)
        await page.fill("#login input[name=password]", password)
        await page.click("#login button")
        # The same answer whether the id exists or not.
        await expect(page.locator("#problem")).to_have_text("wrong reviewer id or password")
    await page.close()
    page = await sign_in(browser, page_url, "alice")
    await expect(page.locator("#whoami")).to_have_text("alice (reviewer)")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "lf_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await page.close()

    made = labelfabric(page_settings, "reviewer", "login-link", "erin")
    assert made.returncode == 0, made.stdout + made.stderr
    link = made.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{page_url}/login/link?token=")
    page = await browser.new_page()
    await page.goto(link)  # opening it uses nothing up (link previews are harmless)
    await page.goto(link)
    await page.click("#link button")
    await expect(page.locator("#whoami")).to_have_text("erin (admin)")
    await expect(page.locator(".flash")).to_contain_text("with a one-time link")
    await page.fill("#password input[name=password]", password_of("erin"))
    await page.fill("#password input[name=again]", password_of("erin"))
    await page.click("#password button")
    await expect(page.locator(".flash")).to_contain_text("password set")
    await expect(page.locator("#whoami")).to_have_text("erin (admin)")
    await page.close()
    page = await browser.new_page()
    await page.goto(link)
    await page.click("#link button")
    await expect(page.locator("#problem")).to_have_text("this link is used, expired or not valid")
    await page.close()
    await (await sign_in(browser, page_url, "erin")).close()  # the password set above works
    events = await query(
        page_settings,
        "SELECT actor, payload->>'action' FROM audit_event WHERE subject = 'reviewer:erin'"
        " ORDER BY id",
    )
    assert [e[1] for e in events] == ["login_link_issued", "login_link_used", "password_set"]
    assert events[1][0] == events[2][0] == "erin"


async def test_reviewer_labels_an_item_on_the_page(
    stack: Settings, page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, texts = routed
    page = await sign_in(browser, page_url, "alice", f"/?dataset={dataset}")
    await expect(page.locator("#queue tbody tr").first).to_be_visible()
    before = await queue_ids(page)
    assert before and set(before) <= set(texts), before
    item = before[0]

    await page.locator(f'#queue tr[data-item="{item}"] a').click()
    await expect(page.locator("#text")).to_have_text(texts[item])
    agents = await page.locator("#votes tbody td:first-child").all_inner_texts()
    assert agents == ["keywords", "tfidf_logreg"]
    assert "route_default@" in await page.content()
    assert await page.locator("#review input[name=reviewer]").count() == 0  # no id to type

    await page.fill("#review textarea[name=note]", "clearly negative")
    await page.click("button[name=label][value=negative]")
    await expect(page.locator(".flash")).to_contain_text("as negative: the item is done")
    await expect(page.locator("#text")).to_be_visible()  # the next item opened
    await page.goto(f"{page_url}/?dataset={dataset}")
    after = await queue_ids(page)
    assert item not in after and set(after) == set(before) - {item}

    version = "SELECT max(version) FROM snapshot WHERE dataset = :d"
    for _ in range(50):  # the Dataset workflow writes a new version with the human label
        if (await query(stack, version, d=dataset))[0][0] == 2:
            break
        await asyncio.sleep(0.2)
    assert (await query(stack, version, d=dataset))[0][0] == 2
    label = await query(
        stack,
        "SELECT label, source, reviewers FROM label WHERE dataset = :d AND item_id = :i"
        " AND is_current",
        d=dataset,
        i=item,
    )
    note = await query(
        stack,
        "SELECT note FROM review WHERE dataset = :d AND item_id = :i AND accepted",
        d=dataset,
        i=item,
    )
    assert [(r[0], r[1], list(r[2])) for r in label] == [("negative", "human", ["alice"])]
    assert note == [("clearly negative",)]
    await page.close()


async def test_a_stale_pages_submission_shows_the_refusal(
    page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = routed
    bob = await sign_in(browser, page_url, "bob", f"/?dataset={dataset}")
    item = (await queue_ids(bob))[-1]
    await bob.goto(page_url + item_path(dataset, item))
    alice = await sign_in(browser, page_url, "alice", item_path(dataset, item))
    await alice.click("button[name=label][value=positive]")
    await expect(alice.locator(".flash")).to_contain_text("the item is done")
    await bob.click("button[name=label][value=negative]")  # bob's page is from before
    await expect(bob.locator("#refused")).to_contain_text("refused:")
    await expect(bob.locator("#refused")).to_contain_text("closed")
    await bob.goto(f"{page_url}/?dataset={dataset}")
    assert item not in await queue_ids(bob)
    await bob.close()
    await alice.close()


async def test_a_lead_corrects_a_closed_review(
    stack: Settings, page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = routed
    humans = await query(
        stack,
        "SELECT id, item_id, reviewers FROM label WHERE dataset = :d AND is_current"
        " AND source = 'human' AND label = 'negative'",
        d=dataset,
    )
    ((old_id, item),) = [(r.id, r.item_id) for r in humans if list(r.reviewers) == ["alice"]]
    versions = "SELECT max(version) FROM snapshot WHERE dataset = :d"
    before = (await query(stack, versions, d=dataset))[0][0]

    carol = await sign_in(browser, page_url, "carol", f"/closed?dataset={dataset}")
    await expect(carol.locator(f'#closed tr[data-item="{item}"]')).to_contain_text("negative")
    await carol.locator(f'#closed tr[data-item="{item}"] a').click()
    await expect(carol.locator("#state")).to_have_text("done")
    await expect(carol.locator("#current")).to_have_text("negative")
    assert await carol.locator("#correct button[value=negative]").count() == 0  # the label now
    await carol.fill("#correct textarea[name=reason]", "irony: the reviewer read it literally")
    await carol.click("#correct button[value=positive]")
    await expect(carol.locator(".flash")).to_contain_text("corrected")
    await expect(carol.locator("#current")).to_have_text("positive")

    rows = await query(
        stack,
        "SELECT id, label, source, reviewers, job_id, supersedes_id FROM label"
        " WHERE dataset = :d AND item_id = :i AND is_current",
        d=dataset,
        i=item,
    )
    assert len(rows) == 1
    new_id, label, source, reviewers, job_id, supersedes = rows[0]
    assert (label, source, reviewers, supersedes) == ("positive", "human", ["carol"], old_id)
    assert str(job_id).startswith("correct:")
    (event,) = await query(
        stack,
        "SELECT actor, payload FROM audit_event WHERE kind = 'label_corrected' AND subject = :s",
        s=f"review:{dataset}:{item}",
    )
    actor, payload = event
    assert actor == "carol"
    assert payload["reason"] == "irony: the reviewer read it literally"
    assert payload["supersedes"]["label"] == "negative"
    assert payload["supersedes"]["reviewers"] == ["alice"]
    engine = db.make_engine(stack.catalog_url, pool_size=1)
    try:  # `audit verify` checks the correction like any human label
        async with engine.connect() as conn:
            verdict = Verdict()
            await verify_rows(conn, verdict)
    finally:
        await engine.dispose()
    assert not [f for f in verdict.altered_rows if item[:12] in f], verdict.altered_rows

    for _ in range(50):  # the correction reaches a new snapshot version
        if (await query(stack, versions, d=dataset))[0][0] > before:
            break
        await asyncio.sleep(0.2)
    assert (await query(stack, versions, d=dataset))[0][0] > before

    # The form as it was before (a stale tab, a double click): refused, nothing written.
    csrf = await carol.locator("#correct input[name=csrf]").get_attribute("value")
    answer = await carol.request.post(
        page_url + item_path(dataset, item).replace("/items/", "/corrections/"),
        form={"csrf": csrf or "", "label": "negative", "reason": "again", "supersedes": old_id},
        headers={"Origin": page_url},
    )
    assert answer.status == 409 and "changed since you opened" in await answer.text()
    assert len(await query(stack, "SELECT 1 FROM label WHERE job_id LIKE 'correct:%'")) == 1

    await carol.goto(f"{page_url}/stats")
    await expect(carol.locator('#stats tr[data-reviewer="alice"] .overturned')).to_have_text("1")
    await carol.close()
    assert new_id != old_id


async def test_another_roles_pages_and_actions_are_refused(
    stack: Settings, page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = routed
    closed = await query(
        stack,
        "SELECT item_id FROM review_task WHERE dataset = :d AND state = 'done' LIMIT 1",
        d=dataset,
    )
    item = str(closed[0][0])
    current = "SELECT id, label FROM label WHERE dataset = :d AND item_id = :i AND is_current"
    before = await query(stack, current, d=dataset, i=item)

    alice = await sign_in(browser, page_url, "alice")
    assert await alice.locator("#nav-closed").count() == 0  # no link to what she may not do
    for path in ("/admin", "/stats", "/closed"):
        answer = await alice.goto(page_url + path)
        assert answer is not None and answer.status == 403, path
        assert "the reviewer role may not" in await alice.content()
    # A reviewer posting the lead's correction form by hand.
    posted = await alice.request.post(
        page_url + "/corrections/" + quote(f"review:{dataset}:{item}", safe=""),
        form={"csrf": "0" * 64, "label": "positive", "reason": "mine now", "supersedes": "1"},
        headers={"Origin": page_url},
    )
    assert posted.status == 403 and "the reviewer role may not" in await posted.text()
    posted = await alice.request.post(
        page_url + "/admin/link", form={"reviewer": "alice"}, headers={"Origin": page_url}
    )
    assert posted.status == 403
    await alice.close()
    assert await query(stack, current, d=dataset, i=item) == before

    carol = await sign_in(browser, page_url, "carol")
    answer = await carol.goto(f"{page_url}/admin")
    assert answer is not None and answer.status == 403
    await carol.close()

    erin = await sign_in(browser, page_url, "erin")
    for path in ("/closed", item_path(dataset, item)):  # an admin reviews nothing here
        answer = await erin.goto(page_url + path)
        assert answer is not None and answer.status == 403, path
    await erin.goto(f"{page_url}/admin")
    await erin.locator('#roster tr[data-reviewer="bob"] .issue-token button').click()
    await expect(erin.locator("#shown")).to_contain_text("reviewer token for bob")
    token = await erin.locator("#secret").inner_text()
    assert token.count(".") == 2  # a JWS
    await erin.goto(f"{page_url}/admin")
    assert token not in await erin.content()  # shown once
    await erin.close()


async def test_an_item_above_ones_clearance_never_shows(
    page_url: str, browser: Browser, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, texts = routed
    alice = await sign_in(browser, page_url, "alice", f"/?dataset={dataset}")
    waiting = await queue_ids(alice)
    await alice.close()
    assert waiting
    dana = await sign_in(browser, page_url, "dana", f"/?dataset={dataset}")  # clearance public
    assert await queue_ids(dana) == []
    answer = await dana.goto(page_url + item_path(dataset, waiting[0]))
    assert answer is not None and answer.status == 403
    assert texts[waiting[0]] not in await dana.content()
    answer = await dana.goto(page_url + item_path(dataset, "0" * 64))  # no such item: alike
    assert answer is not None and answer.status == 403
    await dana.close()


def _request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, list[str]]:
    """(status, body, Set-Cookie values); redirects are not followed."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(Stay)
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as answer:
            return answer.status, answer.read().decode(), answer.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers.get_all("Set-Cookie") or []


def _session(url: str, who: str) -> str:
    form = urlencode({"reviewer": who, "password": password_of(who), "next": "/"}).encode()
    status, _, cookies = _request(url + "/login", data=form)
    assert status == 303, status
    (value,) = [c.split(";")[0] for c in cookies if c.startswith("lf_session=")]
    return value


def test_the_page_refuses_cross_site_posts_foreign_hosts_and_non_reviews(
    page_url: str, routed: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = routed
    status, _, _ = _request(f"{page_url}/?dataset={dataset}")
    assert status == 303  # not signed in: to the sign-in page
    cookie = {"Cookie": _session(page_url, "bob")}
    status, queue, _ = _request(f"{page_url}/?dataset={dataset}", headers=cookie)
    waiting = re.findall(r'data-item="([0-9a-f]{64})"', queue)
    assert status == 200 and waiting, queue
    path = item_path(dataset, waiting[0])
    status, page, _ = _request(page_url + path, headers=cookie)
    assert status == 200
    token = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert token is not None
    form = {"label": "positive", "note": "forged"}
    # Not signed in, no token, a wrong token, a foreign Origin, a cross-site fetch, too big.
    for fields, headers, expected in [
        (form | {"csrf": token[1]}, {}, 401),
        (form, cookie, 403),
        (form | {"csrf": "0" * 64}, cookie, 403),
        (form | {"csrf": token[1]}, cookie | {"Origin": "http://evil.example"}, 403),
        (form | {"csrf": token[1]}, cookie | {"Sec-Fetch-Site": "cross-site"}, 403),
        (form | {"csrf": token[1], "note": "x" * 20_000}, cookie, 413),
    ]:
        data = urlencode(fields).encode()
        status, body, _ = _request(page_url + path, data=data, headers=headers)
        assert status == expected, (status, body)
    status, page, _ = _request(page_url + path, headers=cookie)
    assert status == 200 and "forged" not in page and '(<span id="state">awaiting' in page
    # DNS rebinding: a request naming another host is refused.
    status, _, _ = _request(page_url + "/", headers={"Host": "evil.example:7245"})
    assert status == 400
    # What is not a review is a 404, not a 500.
    status, _, _ = _request(page_url + "/items/label:x:y", headers=cookie)
    assert status == 404


async def test_a_session_ends_when_its_reviewer_leaves_the_roster_or_signs_out(
    page_settings: Settings, page_url: str, browser: Browser
) -> None:
    bob = await sign_in(browser, page_url, "bob")
    roster = page_settings.roster_path
    kept = roster.read_text()
    # A new role (the roster's, set by `reviewer role`) takes a new sign-in.
    done = labelfabric(page_settings, "reviewer", "role", "bob", "lead")
    assert done.returncode == 0 and "bob: reviewer -> lead" in done.stdout, done.stdout
    assert roster.read_text() == kept.replace("  - id: bob\n", "  - id: bob\n    role: lead\n")
    await bob.goto(f"{page_url}/")
    assert bob.url.startswith(f"{page_url}/login")
    await bob.close()
    bob = await sign_in(browser, page_url, "bob")
    await expect(bob.locator("#whoami")).to_have_text("bob (lead)")
    roster.write_text(kept)
    await bob.goto(f"{page_url}/")
    assert bob.url.startswith(f"{page_url}/login")
    await bob.close()
    bob = await sign_in(browser, page_url, "bob")
    roster.write_text(re.sub(r"  - id: bob\n(    .*\n)+", "", kept))
    try:
        await bob.goto(f"{page_url}/")
        assert bob.url.startswith(f"{page_url}/login")  # signed out at once
    finally:
        roster.write_text(kept)
    await bob.close()

    stolen = {"Cookie": _session(page_url, "bob")}
    assert _request(f"{page_url}/account", headers=stolen)[0] == 200
    bob = await sign_in(browser, page_url, "bob")
    await bob.click("#logout")
    await expect(bob.locator("#login")).to_be_visible()
    await bob.close()
    # Signing out ends every session of that reviewer, a copied cookie's too.
    assert _request(f"{page_url}/account", headers=stolen)[0] == 303


def test_wrong_passwords_are_throttled(page_url: str) -> None:
    def attempt(password: str) -> int:
        data = urlencode({"reviewer": "dana", "password": password, "next": "/"}).encode()
        return _request(page_url + "/login", data=data)[0]

    assert [attempt(f"guess number {i}") for i in range(5)] == [401] * 5
    assert attempt(password_of("dana")) == 429  # even the right one, for a while


# --- the reviewing flow: next item, previews, keys, the routing rule, one-click corrections ---

FLOW_EMAIL = "Mail jane.doe@example.org if you liked it: a warm, funny and moving film."
FLOW_CARD = "I paid for this dull film with 4111 1111 1111 1111 and want my money back."


@pytest.fixture(scope="module")
def flow(
    stack: Settings,
    cli_worker: None,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, str]]:
    """A dataset whose every item waits for people (a policy that routes all of them), two
    with personal data in them: (dataset, {item id: text})."""
    name = f"route_flow_{uuid.uuid4().hex[:6]}"
    folder = stack.policies_dir / name
    folder.mkdir()
    shipped = (stack.policies_dir / "route_default" / "v2.yaml").read_text()
    rules = shipped[shipped.index("\nrules:") : shipped.index("# Agreeing but unsure")]
    only = "\nrules:\n  - id: empty_text\n    when: item.chars < 1\n    outcome: reject\n\n"
    body = shipped.replace(rules, only).replace("id: route_default", f"id: {name}")
    (folder / "v2.yaml").write_text(body)
    chosen = [r["text"] for r in gold_rows[470:474]] + [FLOW_EMAIL, FLOW_CARD]
    source = write_jsonl(tmp_path_factory.mktemp("flow") / "flow.jsonl", chosen)
    dataset = f"flow{uuid.uuid4().hex[:6]}"
    job = cli(stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
              "--policy", name, "--wait")  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    return dataset, {hashlib.sha256(t.encode()).hexdigest(): t for t in chosen}


def _id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_the_queue_previews_texts_as_reviewers_may_read_them(
    page_url: str, browser: Browser, flow: tuple[str, dict[str, str]]
) -> None:
    from worker.reviews import preview

    dataset, texts = flow
    bob = await sign_in(browser, page_url, "bob", f"/?dataset={dataset}")  # clearance normal
    shown = await queue_ids(bob)
    assert set(shown) == set(texts) - {_id(FLOW_CARD)}  # never one above his clearance
    plain = next(i for i in shown if texts[i] not in (FLOW_EMAIL, FLOW_CARD))
    row = bob.locator(f'#queue tr[data-item="{plain}"] td.preview')
    await expect(row).to_have_text(preview(texts[plain]))
    masked = await bob.locator(f'#queue tr[data-item="{_id(FLOW_EMAIL)}"] td.preview').inner_text()
    assert "jane.doe" not in masked and "*" * 10 in masked and "warm, funny" in masked
    page = await bob.content()
    assert "4111" not in page and "money back" not in page
    await bob.close()
    alice = await sign_in(browser, page_url, "alice", f"/?dataset={dataset}")  # confidential
    card = await alice.locator(f'#queue tr[data-item="{_id(FLOW_CARD)}"] td.preview').inner_text()
    assert "4111" not in card and "money back" in card  # hers to label, its number masked
    await alice.close()


async def test_keys_pick_labels_and_the_next_item_opens(
    stack: Settings, page_url: str, browser: Browser, flow: tuple[str, dict[str, str]]
) -> None:
    dataset, texts = flow
    alice = await sign_in(browser, page_url, "alice", f"/?dataset={dataset}")
    first = (await queue_ids(alice))[0]
    await alice.locator(f'#queue tr[data-item="{first}"] a').click()
    await expect(alice.locator("#text")).to_be_visible()
    # The rule that routed it, with its description (the comment above `default:`).
    await expect(alice.locator("#rule-id")).to_have_text("default")
    await expect(alice.locator("#rule-description")).to_have_text(
        "Agreeing but unsure: a person decides."
    )
    answer = await alice.request.get(alice.url)
    policy = answer.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert nonce and f'nonce="{nonce[1]}"' in await answer.text()
    assert "'unsafe-inline'" not in policy.split("script-src")[1]
    assert await alice.locator("#review button[accesskey='2'][value=negative]").count() == 1
    # Typing in the note is typing, not labeling.
    await alice.locator("#review textarea[name=note]").press("2")
    assert "/items/" in alice.url and first in alice.url.replace("%3A", ":")
    await alice.locator("#text").click()
    await alice.keyboard.press("2")  # the second label: negative
    await expect(alice.locator(".flash")).to_contain_text(f"labeled {first[:12]} as negative")
    await expect(alice.locator(".flash")).to_contain_text("the next one")
    second = alice.url.replace("%3A", ":").split(f"review:{dataset}:")[1].split("?")[0]
    assert second != first and second in texts
    label = await query(
        stack,
        "SELECT label, reviewers FROM label WHERE dataset = :d AND item_id = :i AND is_current",
        d=dataset,
        i=first,
    )
    assert [(r[0], list(r[1])) for r in label] == [("negative", ["alice"])]
    await alice.close()

    # Without JavaScript the page works the same: a click labels, the next item opens.
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(page_url + item_path(dataset, second) + f"?dataset={dataset}")
    await page.fill("#login input[name=reviewer]", "alice")
    await page.fill("#login input[name=password]", password_of("alice"))
    await page.click("#login button")
    await expect(page.locator("#text")).to_be_visible()
    assert "4111" not in await page.locator("#text").inner_text()  # masked for reviewers
    await page.click("#review button[value=positive]")
    await expect(page.locator(".flash")).to_contain_text(f"labeled {second[:12]} as positive")
    third = page.url.replace("%3A", ":").split(f"review:{dataset}:")[1].split("?")[0]
    assert third not in (first, second) and third in texts
    await context.close()


async def test_a_lead_corrects_a_closed_review_with_one_click_on_its_page(
    stack: Settings, page_url: str, browser: Browser, flow: tuple[str, dict[str, str]]
) -> None:
    dataset, _ = flow
    closed = await query(
        stack,
        "SELECT item_id, label FROM review_task WHERE dataset = :d AND state = 'done'"
        " ORDER BY closed_at LIMIT 1",
        d=dataset,
    )
    item, agreed = str(closed[0][0]), str(closed[0][1])
    other = "positive" if agreed == "negative" else "negative"
    carol = await sign_in(browser, page_url, "carol", item_path(dataset, item))
    await expect(carol.locator("#current")).to_have_text(agreed)
    await carol.fill("#correct textarea[name=reason]", "the reviewer missed the irony")
    await carol.locator(f"#correct button[value={other}]").click()  # the one click
    await expect(carol.locator(".flash")).to_contain_text(f"corrected {item[:12]} to {other}")
    await expect(carol.locator("#current")).to_have_text(other)
    rows = await query(
        stack,
        "SELECT label, source, reviewers FROM label WHERE dataset = :d AND item_id = :i"
        " AND is_current",
        d=dataset,
        i=item,
    )
    assert [(r[0], r[1], list(r[2])) for r in rows] == [(other, "human", ["carol"])]
    await carol.close()
