"""`labelfabric review bot`'s body: the simulated reviewer (`worker.reviewbot`) run from the
command line, with progress and a summary. Imported only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from worker.cli.console import console, fail, temporal

if TYPE_CHECKING:
    from worker.settings import Settings


async def answer_reviews(
    settings: Settings,
    gold: Path,
    task_name: str,
    dataset: str,
    reviewer: str,
    rate: float,
    accuracy: float,
    max_reviews: int | None,
    idle: float,
    label_field: str,
) -> None:
    """`labelfabric review bot`: run the simulated reviewer, saying how it went."""
    from rich.markup import escape

    from agents.tasks import TaskError, load_task
    from catalog import db
    from formats.gold import GoldError, read_gold
    from worker.identity import IdentityRingError
    from worker.reviewbot import BotStopped, claims, run_bot

    try:
        spec = load_task(settings.tasks_dir, task_name)
        known = read_gold(spec, gold, label_field=label_field)
    except (TaskError, GoldError, ValueError) as err:
        raise fail(escape(str(err))) from err
    if known.refused:
        r = known.refused[0]
        raise fail(escape(f"{gold}:{r.line}: {r.reason} ({len(known.refused)} bad line(s))"))
    truth = {r.item_id: str(r.label) for r in known.records}
    client = await temporal(settings)
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        with console.status(f"{reviewer} answering {dataset}'s open reviews…") as status:
            stats = await run_bot(
                client,
                engine,
                reviewer=reviewer,
                dataset=dataset,
                gold=truth,
                labels=list(spec.labels),
                rate=rate,
                accuracy=accuracy,
                max_reviews=max_reviews,
                idle_s=idle,
                progress=lambda s: status.update(
                    f"{reviewer}: {s.answered} answered, {s.refused} refused"
                ),
                token=claims(settings, reviewer, spec.name),
            )
    except (BotStopped, IdentityRingError) as err:
        raise fail(escape(str(err))) from err
    except OSError as err:
        raise fail(f"cannot reach the catalog ({err})") from err
    finally:
        await engine.dispose()
    console.print(
        f"{reviewer}: {stats.answered} review(s) answered ({stats.wrong_on_purpose} wrong on "
        f"purpose), {stats.refused} refused, in {stats.elapsed_s:.1f} s"
    )
