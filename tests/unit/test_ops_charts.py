"""The ops page's charts, without a server: well-formed SVG whose marks carry the numbers
they draw, escaped text, an empty chart that says so; and the page's template renders a
dataset's panels from catalog-shaped rows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from catalog.ops import AgentRow, Backlog, PolicyRow, ReviewerRow, VersionRow
from worker.web import charts
from worker.web.ops import panel
from worker.web.site import TEMPLATES

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    return root


def marks(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") in ("bar", "point")]


def test_bars_carry_their_values_and_scale_to_a_nice_top() -> None:
    svg = charts.bars(
        "c1",
        "items per version",
        ["v1", "v2", "v3"],
        [charts.Series("items", [120.0, 80.0, None])],
        category_colors=[charts.PASS, charts.FAIL, charts.NONE],
    )
    root = parse(svg)
    bars = marks(root, "rect")
    assert [(b.get("data-label"), float(b.get("data-value") or 0)) for b in bars] == [
        ("v1", 120.0),
        ("v2", 80.0),
    ]
    assert [b.get("fill") for b in bars] == [charts.PASS, charts.FAIL]
    heights = [float(b.get("height") or 0) for b in bars]
    assert heights[0] / heights[1] == 120 / 80
    assert charts.nice_max(120) == 200 and charts.nice_max(0.3) == 0.5 and charts.nice_max(0) == 1
    assert "200" in {t.text for t in root.iter(f"{SVG}text")}  # the axis top
    assert [t.text for t in bars[0].iter(f"{SVG}title")] == ["v1 items: 120"]


def test_grouped_percent_bars_and_a_legend() -> None:
    root = parse(
        charts.bars(
            "c2",
            "agents",
            ["keywords@1", "tfidf@2"],
            [charts.Series("gold accuracy", [0.9, 0.75]), charts.Series("abstention", [0.1, 0])],
            as_percent=True,
        )
    )
    got = {
        (b.get("data-label"), b.get("data-series")): b.get("data-value")
        for b in marks(root, "rect")
    }
    assert got == {
        ("keywords@1", "gold accuracy"): "0.9",
        ("tfidf@2", "gold accuracy"): "0.75",
        ("keywords@1", "abstention"): "0.1",
        ("tfidf@2", "abstention"): "0",
    }
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"100%", "50%", "gold accuracy", "abstention"} <= texts


def test_line_and_scatter_points() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    series = [(t0 + timedelta(minutes=i), float(v)) for i, v in enumerate([0, 5, 3, 0])]
    root = parse(charts.line("c3", "backlog", series))
    pts = marks(root, "circle")
    assert [float(p.get("data-y") or 0) for p in pts] == [0, 5, 3, 0]
    assert pts[1].get("data-x") == (t0 + timedelta(minutes=1)).isoformat()
    assert len(list(root.iter(f"{SVG}polyline"))) == 1

    root = parse(
        charts.scatter(
            "c4", "policies", [("route@1", 0.6, 0.95)], x_title="rate", y_title="accuracy"
        )
    )
    [p] = marks(root, "circle")
    assert (p.get("data-label"), p.get("data-x"), p.get("data-y")) == ("route@1", "0.6", "0.95")


def test_text_is_escaped_and_an_empty_chart_says_why() -> None:
    svg = charts.bars("c5", "<b>x</b>", ['a"<script>'], [charts.Series("s&", [1.0])])
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)
    assert marks(root, "rect")[0].get("data-label") == 'a"<script>'
    empty = parse(charts.line("c6", "backlog", [], empty="nothing routed"))
    assert [t.text for t in empty.iter(f"{SVG}text") if t.get("class") == "empty"] == [
        "nothing routed"
    ]


def test_the_ops_template_renders_a_dataset() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    p = panel(
        "reviews.v2",
        [VersionRow(1, t0, 100, "pass", "quality_default@1", "ok", "j1")],
        Backlog(2, 3, 5, 90.0, [(t0, 0), (t0 + timedelta(hours=1), 5)]),
        [PolicyRow("route_default@2", 100, 60, 20, 19)],
        [AgentRow("keywords@1", 100, 10, 0.5, 80, 20, 15)],
        [ReviewerRow("alice", 5, 1, 2, 1)],
    )
    html = TEMPLATES.get_template("ops.html").render(
        datasets=["reviews.v2"], only=None, panels=[p], me=None, flash=None
    )
    for chart_id in ("versions-reviews_v2", "backlog-reviews_v2", "policies-reviews_v2"):
        assert f'id="{chart_id}"' in html
    assert 'data-label="route_default@2" data-x="0.6" data-y="0.95"' in html
    assert 'data-label="alice" data-value="0.5"' in html
    assert "<script" not in html
