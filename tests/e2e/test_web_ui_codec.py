"""The embedded Temporal Web UI shows decoded payloads: `up` starts it pointed at our codec
server (`--ui-codec-endpoint`), and Chromium, opening a job's workflow page, reads the job's
input in clear while the server itself holds only ciphertext."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

from playwright.async_api import async_playwright

from tests.e2e.test_review_page import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import cli, write_jsonl
from worker.secrets import read as read_secrets
from worker.settings import Settings
from worker.stack.codec import ui_endpoint


def test_the_web_ui_is_started_with_our_codec_endpoint(stack: Settings) -> None:
    with urllib.request.urlopen(f"{stack.temporal_ui_url}/api/v1/settings", timeout=10) as r:
        settings = json.loads(r.read())
    token = read_secrets(stack.home_dir)["codec_token"]
    assert settings["Codec"]["Endpoint"] == ui_endpoint(stack, token)


async def test_chromium_reads_a_jobs_input_decoded_in_the_web_ui(
    stack: Settings, cli_worker: None, tmp_path: Path
) -> None:
    dataset = f"ui{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / f"{dataset}.jsonl", ["a tender, dazzling film"] * 3)
    job = await asyncio.to_thread(
        cli, stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
        "--job", "j1", "--wait",
    )  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    ns = stack.temporal_namespace
    url = f"{stack.temporal_ui_url}/namespaces/{ns}/workflows/label:{dataset}:j1"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            decoded: list[int] = []
            page.on("response", lambda r: decoded.append(r.status) if "/decode" in r.url else None)
            await page.goto(url)
            # The input names the source file: only a decoded payload shows its path.
            await page.get_by_text(str(source)).first.wait_for(timeout=30_000)
        finally:
            await browser.close()
    assert decoded and all(status == 200 for status in decoded), decoded
