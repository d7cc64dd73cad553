"""The report as one self-contained HTML file: inline CSS and SVG charts, no script and nothing
fetched, so it opens anywhere, offline. Each figure carries ``data-figure="workflow/step/key"``
so a test (or a person with dev tools) can match it against the JSON."""

from __future__ import annotations

from html import escape
from typing import Any

from orchestrator.report.formats import shares, shown

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2.5rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}.muted{color:#656d76;font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:2rem}svg text{font-size:11px;fill:#1f2328}
"""
_COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#116329", "#953800")
_WIDTH, _HEIGHT, _PAD = 460, 220, 60


def to_html(report: dict[str, Any]) -> str:
    scope = f" of {escape(report['workflow'])}" if report["workflow"] else ""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Orchestrator report{scope}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Orchestrator report{scope}</h1>",
        f"<p class='muted'>Runs created from {escape(report['since'])} to {escape(report['until'])}.</p>",
        _runs_table(report["workflows"]),
    ]
    parts += [_workflow_section(wf) for wf in report["workflows"]]
    if not report["workflows"]:
        parts.append("<p>No runs in this window.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _cell(workflow: str, step: str, key: str, value: Any, unit: str = "") -> str:
    return f"<td data-figure='{escape(workflow)}/{escape(step)}/{key}'>{escape(shown(value, unit))}</td>"


def _runs_table(workflows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("workflow", "runs", "succeeded", "failed", "success rate", "p50", "p95"))
    rows = []
    for wf in workflows:
        name = wf["workflow"]
        rows.append(
            f"<tr><td>{escape(name)}</td>"
            + _cell(name, "", "runs", wf["runs"])
            + _cell(name, "", "succeeded", wf["succeeded"])
            + _cell(name, "", "failed", wf["failed"])
            + _cell(name, "", "success_rate", wf["success_rate"], "%")
            + _cell(name, "", "duration_p50_s", wf["duration_p50_s"], "s")
            + _cell(name, "", "duration_p95_s", wf["duration_p95_s"], "s")
            + "</tr>"
        )
    return f"<table id='runs'><tr>{head}</tr>{''.join(rows)}</table>"


_STEP_COLUMNS = (
    ("runs", "runs", ""),
    ("attempts", "attempts", ""),
    ("p50", "duration_p50_s", "s"),
    ("p95", "duration_p95_s", "s"),
    ("failure rate", "failure_rate", "%"),
    ("retries per run", "retries_per_run", ""),
    ("queue p50", "queue_p50_s", "s"),
    ("queue p95", "queue_p95_s", "s"),
)


def _workflow_section(wf: dict[str, Any]) -> str:
    name = wf["workflow"]
    head = "<th>step</th>" + "".join(f"<th>{h}</th>" for h, _, _ in _STEP_COLUMNS) + "<th>critical path share</th>"
    on_path = shares(wf)
    rows = [
        f"<tr><td>{escape(s['step'])}</td>"
        + "".join(_cell(name, s["step"], key, s[key], unit) for _, key, unit in _STEP_COLUMNS)
        + _cell(name, s["step"], "critical_share", on_path.get(s["step"]), "%")
        + "</tr>"
        for s in wf["steps"]
    ]
    path = wf["critical_path"]
    summary = ""
    if path:
        summary = (
            f"<p>Critical path of the typical run: <span data-figure='{escape(name)}//critical_duration_s'>"
            f"{escape(shown(path['duration_s'], 's'))}</span>; bottleneck: "
            f"<strong data-figure='{escape(name)}//bottleneck'>{escape(path['bottleneck'])}</strong>.</p>"
        )
    charts = "".join(
        f"<figure><figcaption>{title}</figcaption>{svg}</figure>"
        for title, svg in (
            ("Run duration over time (p50, p95)", _timeline_chart(wf["timeline"])),
            ("Step duration p95", _bars_chart(wf["steps"])),
            ("Critical path of the typical run", _path_chart(path)),
        )
    )
    return (
        f"<section data-workflow='{escape(name)}'><h2>{escape(name)}</h2>{summary}"
        f"<table class='steps'><tr>{head}</tr>{''.join(rows)}</table><div class='charts'>{charts}</div></section>"
    )


def _svg(body: str, height: int = _HEIGHT) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}' "
        f"viewBox='0 0 {_WIDTH} {height}' role='img'>{body}</svg>"
    )


def _timeline_chart(points: list[dict[str, Any]]) -> str:
    if not points:
        return _svg("<text x='10' y='20'>no ended runs</text>", 40)
    top = max((p["p95_s"] or 0.0) for p in points) or 1.0
    span = max(len(points) - 1, 1)
    x = lambda i: _PAD + (_WIDTH - 2 * _PAD) * (i / span if len(points) > 1 else 0.5)  # noqa: E731
    y = lambda v: _HEIGHT - _PAD - (_HEIGHT - 2 * _PAD) * (v or 0.0) / top  # noqa: E731
    body = [
        f"<line x1='{_PAD}' y1='{_HEIGHT - _PAD}' x2='{_WIDTH - _PAD}' y2='{_HEIGHT - _PAD}' stroke='#8c959f'/>",
        f"<line x1='{_PAD}' y1='{_PAD}' x2='{_PAD}' y2='{_HEIGHT - _PAD}' stroke='#8c959f'/>",
        f"<text x='{_PAD - 4}' y='{_PAD + 4}' text-anchor='end'>{escape(shown(top, 's'))}</text>"
        f"<text x='{_PAD - 4}' y='{_HEIGHT - _PAD}' text-anchor='end'>0s</text>",
    ]
    for key, colour in (("p50_s", _COLOURS[0]), ("p95_s", _COLOURS[1])):
        line = " ".join(f"{x(i):.1f},{y(p[key]):.1f}" for i, p in enumerate(points))
        body.append(f"<polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'/>")
        body += [f"<circle cx='{x(i):.1f}' cy='{y(p[key]):.1f}' r='3' fill='{colour}'/>" for i, p in enumerate(points)]
    for i, p in enumerate(points):
        if i in (0, len(points) - 1) or len(points) <= 6:
            body.append(
                f"<text x='{x(i):.1f}' y='{_HEIGHT - _PAD + 16}' text-anchor='middle'>{escape(p['bucket'])}</text>"
            )
    for i, (key, colour) in enumerate((("p50", _COLOURS[0]), ("p95", _COLOURS[1]))):
        body.append(f"<rect x='{_PAD + 10 + 50 * i}' y='8' width='10' height='10' fill='{colour}'/>")
        body.append(f"<text x='{_PAD + 24 + 50 * i}' y='17'>{key}</text>")
    return _svg("".join(body))


def _bars_chart(steps: list[dict[str, Any]]) -> str:
    timed = [s for s in steps if s["duration_p95_s"] is not None]
    if not timed:
        return _svg("<text x='10' y='20'>no attempts</text>", 40)
    top = max(s["duration_p95_s"] for s in timed) or 1.0
    row, label = 24, 110
    body = []
    for i, s in enumerate(timed):
        width = (_WIDTH - label - 70) * s["duration_p95_s"] / top
        y = 10 + i * row
        body.append(f"<text x='{label - 6}' y='{y + 14}' text-anchor='end'>{escape(s['step'])}</text>")
        body.append(f"<rect x='{label}' y='{y}' width='{max(width, 1):.1f}' height='{row - 6}' fill='{_COLOURS[0]}'/>")
        body.append(f"<text x='{label + width + 4:.1f}' y='{y + 14}'>{escape(shown(s['duration_p95_s'], 's'))}</text>")
    return _svg("".join(body), 20 + len(timed) * row)


def _path_chart(path: dict[str, Any] | None) -> str:
    if not path:
        return _svg("<text x='10' y='20'>no succeeded run</text>", 40)
    body, left, usable = [], 10.0, _WIDTH - 20
    for i, s in enumerate(path["steps"]):
        width = usable * s["share"]
        colour = _COLOURS[i % len(_COLOURS)]
        body.append(f"<rect x='{left:.1f}' y='10' width='{max(width, 1):.1f}' height='30' fill='{colour}'/>")
        body.append(f"<rect x='10' y='{52 + 18 * i}' width='10' height='10' fill='{colour}'/>")
        label = f"{escape(s['step'])}: {escape(shown(s['share'], '%'))} ({escape(shown(s['segment_s'], 's'))})"
        body.append(f"<text x='26' y='{61 + 18 * i}'>{label}</text>")
        left += width
    return _svg("".join(body), 60 + 18 * len(path["steps"]))
