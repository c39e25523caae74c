"""The HTML report: one self-contained file drawn from a report document (report.py).

    pytest --autoresearch --ar-html report.html      # a session: results table, per-seed values
                                                     # against the baseline's, each run's loss curve
    .ar/agent/<tag>/report.html                      # an agent loop: progress over experiments
    .ar/league/<name>/report.html                    # a league: leaderboard, each agent's progress

How it draws: the plots are inline SVG written here, with inline CSS and no script. The file fetches
nothing (it opens offline, from a CI artifact, in a mail), needs no plotting package (matplotlib is
an optional extra, and PNGs of it would be base64 blobs that nothing can read back), stays small
(kilobytes, not the hundreds of a bundled chart library), prints, and keeps the numbers in the page:
every point has a <title> tooltip with its seed and value, so a person can read them and a test or a
scraper can find them in the DOM.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from . import files, report

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
BASELINE, CANDIDATE, KEEP, DISCARD, CRASH = "#888888", "#1f77b4", "#2ca02c", "#c4c4c4", "#d62728"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:0 0 4px}.meta{color:#555;margin:2px 0}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-direction:column;gap:12px}
.plots{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;
background:#fff}.why{color:#444;font-size:12px;margin:0 0 6px}
.v-better,.v-keep{color:#1a7f37;font-weight:600}.v-worse,.v-crash,.v-not-comparable{color:#c62828;font-weight:600}
.v-no-difference,.v-undecided,.v-discard{color:#555}svg{display:block}svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _reference_label(base: dict | None) -> str:
    """What a task's candidates were compared with, and its seeds."""
    return base["label"] + ", seeds " + ", ".join(str(r["seed"]) for r in base["runs"]) if base else "no baseline"


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, fmt: str = ".4f") -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def _verdict(text: str | None) -> str:
    text = text or "–"
    return f'<span class="v-{_e(text.replace(" ", "-"))}">{_e(text)}</span>'


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) covering [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _padded(values: list[float]) -> tuple[float, float]:
    """A data range with a margin, never empty."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


class Plot:
    """An SVG chart: x and y data ranges mapped onto the drawing area inside margins; shapes are added
    in data coordinates, each with an optional <title> tooltip."""

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        *,
        kind: str,
        title: str,
        xlabel: str = "",
        ylabel: str = "",
        width: int = 540,
        height: int = 230,
        y_labels: list[str] | None = None,
    ):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.kind, self.title, self.xlabel, self.ylabel = kind, title, xlabel, ylabel
        self.width, self.height, self.y_labels = width, height, y_labels
        self.left = 130 if y_labels else 62
        self.right, self.top, self.bottom = 14, 24, 38
        self.shapes: list[str] = []

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (v - self.y0) / span * (self.height - self.top - self.bottom)

    @staticmethod
    def _title(text: str) -> str:
        return f"<title>{_e(text)}</title>" if text else ""

    def dot(self, x: float, y: float, color: str, tip: str = "", r: float = 4.0) -> None:
        self.shapes.append(
            f'<circle class="point" cx="{self.x(x):.1f}" cy="{self.y(y):.1f}" r="{r}" fill="{color}" '
            f'fill-opacity="0.85">{self._title(tip)}</circle>'
        )

    def cross(self, x: float, y: float, color: str, tip: str = "") -> None:
        cx, cy = self.x(x), self.y(y)
        self.shapes.append(
            f'<path class="point" d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}M{cx - 4:.1f},'
            f'{cy + 4:.1f}L{cx + 4:.1f},{cy - 4:.1f}" stroke="{color}" stroke-width="2">'
            f"{self._title(tip)}</path>"
        )

    def segment(
        self, a: tuple[float, float], b: tuple[float, float], color: str, width: float = 1.5, tip: str = ""
    ) -> None:
        self.shapes.append(
            f'<line x1="{self.x(a[0]):.1f}" y1="{self.y(a[1]):.1f}" x2="{self.x(b[0]):.1f}" '
            f'y2="{self.y(b[1]):.1f}" stroke="{color}" stroke-width="{width}">{self._title(tip)}</line>'
        )

    def line(
        self, points: list[tuple[float, float]], color: str, tip: str = "", step: bool = False, cls: str = "series"
    ) -> None:
        if step:  # hold each value until the next point
            points = [p for a, b in zip(points, points[1:]) for p in (a, (b[0], a[1]))] + points[-1:]
        path = " ".join(f"{self.x(x):.1f},{self.y(y):.1f}" for x, y in points)
        self.shapes.append(
            f'<polyline class="{cls}" points="{path}" fill="none" stroke="{color}" '
            f'stroke-width="1.6">{self._title(tip)}</polyline>'
        )

    def legend(self, entries: list[tuple[str, str]]) -> None:
        x = self.width - self.right
        for label, color in reversed(entries):
            width = 14 + 6.2 * len(label)
            x -= width + 10
            self.shapes.append(
                f'<rect x="{x:.1f}" y="6" width="10" height="10" fill="{color}"/>'
                f'<text x="{x + 14:.1f}" y="15">{_e(label)}</text>'
            )

    def svg(self) -> str:
        w, h, l, b = self.width, self.height, self.left, self.height - self.bottom
        axes = [
            f'<rect x="{l}" y="{self.top}" width="{w - l - self.right}" height="{b - self.top}" fill="#fcfcfc" '
            f'stroke="#ccc"/>'
        ]
        for t in nice_ticks(self.x0, self.x1):
            axes.append(
                f'<line x1="{self.x(t):.1f}" y1="{b}" x2="{self.x(t):.1f}" y2="{b + 4}" stroke="#999"/>'
                f'<text x="{self.x(t):.1f}" y="{b + 15}" text-anchor="middle">{t:g}</text>'
            )
        if self.y_labels:
            for i, label in enumerate(self.y_labels):
                axes.append(f'<text x="{l - 8}" y="{self.y(i) + 4:.1f}" text-anchor="end">{_e(label)}</text>')
        else:
            for t in nice_ticks(self.y0, self.y1):
                axes.append(
                    f'<line x1="{l - 4}" y1="{self.y(t):.1f}" x2="{w - self.right}" y2="{self.y(t):.1f}" '
                    f'stroke="#eee"/><text x="{l - 6}" y="{self.y(t) + 4:.1f}" text-anchor="end">{t:g}</text>'
                )
        axes.append(
            f'<text x="{(l + w - self.right) / 2:.1f}" y="{h - 6}" text-anchor="middle">{_e(self.xlabel)}</text>'
        )
        if self.ylabel:
            axes.append(
                f'<text transform="translate(12,{(self.top + b) / 2:.1f}) rotate(-90)" text-anchor="middle">'
                f"{_e(self.ylabel)}</text>"
            )
        axes.append(f'<text x="{l}" y="15" font-weight="600">{_e(self.title)}</text>')
        return (
            f'<svg class="plot {self.kind}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(self.title)}">' + "".join(axes + self.shapes) + "</svg>"
        )


def seeds_plot(candidate: dict, baseline: dict | None, metric: str) -> str:
    """A candidate's per-seed values against the baseline's, each side's mean with its 95% interval."""
    rows = [("baseline", [(r["seed"], r["value"]) for r in baseline["runs"]], BASELINE)] if baseline else []
    rows.append(
        (
            candidate["label"],
            [(r["seed"], r["value"]) for r in candidate["runs"] if r["status"] == "ok" and r["value"] is not None],
            CANDIDATE,
        )
    )
    spans = [v for _, runs, _ in rows for _, v in runs]
    intervals = [report.summary_dict([v for _, v in runs]) for _, runs, _ in rows]
    spans += [x for s in intervals if s and s["ci95"] for x in s["ci95"] if x is not None]
    plot = Plot(
        _padded(spans),
        (-0.6, len(rows) - 0.4),
        kind="seeds",
        title=f"{metric} per seed",
        xlabel=metric,
        y_labels=[label for label, _, _ in rows],
        height=70 + 46 * len(rows),
    )
    for i, ((label, runs, color), s) in enumerate(zip(rows, intervals)):
        if s and s["ci95"] and None not in s["ci95"]:
            low, high = s["ci95"]
            plot.segment(
                (low, i), (high, i), color, 2, f"{label}: mean {s['mean']:.4f}, 95% CI [{low:.4f}, {high:.4f}]"
            )
        if s:
            plot.segment((s["mean"], i - 0.25), (s["mean"], i + 0.25), color, 3, f"{label}: mean {s['mean']:.4f}")
        for k, (seed, value) in enumerate(runs):
            seed_name = f"seed {seed}" if seed is not None else "seed not recorded"  # an old stored baseline
            plot.dot(value, i + 0.18 * ((k % 3) - 1) / 2, color, f"{label}, {seed_name}: {value:.4f}")
    return plot.svg()


def _curves(runs: list[dict]) -> list[tuple[int, list[tuple[float, float]]]]:
    """(seed, [(step, loss)]) of each run that logged a loss curve (extra.curve)."""
    curves = [
        (r["seed"], [(p[0], p[2]) for p in r.get("extra", {}).get("curve") or [] if p[2] is not None]) for r in runs
    ]
    return [(seed, points) for seed, points in curves if points]


def curves_plot(runs: list[dict], title: str, reference: list[dict] = ()) -> str:
    """The loss curve of each run, one line per seed, over the reference's (the base's) in grey; ''
    when no run logged one."""
    curves, behind = _curves(runs), _curves(list(reference))
    if not curves:
        return ""
    every = [p for _, points in curves + behind for p in points]
    plot = Plot(
        _padded([s for s, _ in every]),
        _padded([v for _, v in every]),
        kind="curves",
        title=title,
        xlabel="step",
        ylabel="training loss",
    )
    for seed, points in behind:
        plot.line(
            points,
            DISCARD,
            f"baseline seed {seed}: last loss {points[-1][1]:.4f} at step {points[-1][0]}",
            cls="reference",
        )
    for i, (seed, points) in enumerate(curves):
        plot.line(
            points, PALETTE[i % len(PALETTE)], f"seed {seed}: last loss {points[-1][1]:.4f} at step {points[-1][0]}"
        )
    plot.legend(
        [(f"seed {seed}", PALETTE[i % len(PALETTE)]) for i, (seed, _) in enumerate(curves)][:5]
        + ([("baseline", DISCARD)] if behind else [])
    )
    return plot.svg()


def progress_plot(experiments: list[dict], metric: str, title: str) -> str:
    """An agent's value per experiment: kept changes green, discarded grey, crashes red, the best so far."""
    scored = [e for e in experiments if e.get("value") is not None]
    if not scored:
        return ""
    values = [e["value"] for e in scored]
    ns = [e["n"] for e in experiments]
    plot = Plot(_padded(ns), _padded(values), kind="progress", title=title, xlabel="experiment", ylabel=metric)
    best, running = None, []
    for e in experiments:
        if e["status"] == "keep" and e.get("value") is not None:
            best = e["value"]
        if best is not None:
            running.append((e["n"], best))
    if running:
        plot.line(running, KEEP, "best so far", step=True)
    for e in experiments:
        tip = f"#{e['n']} {e['status']}: {e.get('description', '')} ({e.get('reason') or 'no reason given'})"
        if e["status"] == "crash" or e.get("value") is None:
            plot.cross(e["n"], max(values), CRASH, tip)
        else:
            plot.dot(
                e["n"], e["value"], KEEP if e["status"] == "keep" else DISCARD, tip, 5 if e["status"] == "keep" else 4
            )
    plot.legend([("kept", KEEP), ("discarded", DISCARD), ("crash", CRASH)])
    return plot.svg()


def _table(rows: list[dict], numeric: tuple[str, ...] = (), cls: str = "") -> str:
    if not rows:
        return "<p>nothing to show</p>"
    head = "".join(f"<th>{_e(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(v)}</td>'
            if k in numeric
            else f"<td>{v if k == 'verdict' or k == 'status' else _e(v)}</td>"
            for k, v in row.items()
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _page(title: str, doc: dict, body: str) -> str:
    m = doc.get("machine", {})
    machine = ", ".join(f"{k} {m[k]}" for k in ("device", "model", "torch", "cuda", "host") if m.get(k))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
        f'<h1>{_e(title)}</h1><p class="meta">{_e(doc.get("created_at"))} · {_e(machine)} · autoresearch-bench '
        f"{_e(doc.get('harness'))} · report schema {_e(doc.get('schema_version'))}</p>{body}</body></html>\n"
    )


def _settings_line(settings: dict, keys: tuple[str, ...]) -> str:
    return (
        '<p class="meta">'
        + " · ".join(f"{k} {_e(settings[k])}" for k in keys if settings.get(k) not in (None, "", [], False))
        + "</p>"
    )


def _results_rows(task: dict) -> list[dict]:
    rows = []
    for c in task["candidates"]:
        s, d = c["summary"] or {}, c["decision"] or {}
        ci = d.get("ci") or [None, None]
        rows.append(
            {
                "candidate": c["label"],
                task["metric"]: f"{_num(s.get('mean'))} ± {_num(s.get('std'))}" if s else "–",
                "seeds": f"{s.get('n', 0)}/{len(c['runs'])}",
                "baseline": c["baseline"] or "–",
                "Δ": _num(d.get("delta"), "+.4f"),
                "Δ 95% CI": f"[{_num(ci[0], '+.4f')}, {_num(ci[1], '+.4f')}]" if d else "–",
                "p": _num(d.get("p"), ".3g"),
                "test": d.get("test") or "–",
                "threshold": _num(d.get("threshold")),
                "detectable": _num(d.get("detectable")),
                "verdict": _verdict(d.get("verdict")),
                "status": _verdict(c["status"]),
                "error": c["error"][:160],
            }
        )
    return rows


def session_html(doc: dict) -> str:
    """The page of a session report: per task its results table, then a card per candidate."""
    parts = [
        _settings_line(
            doc["settings"],
            (
                "profile",
                "seeds",
                "seed_base",
                "budget_s",
                "max_tokens",
                "base_ref",
                "baseline",
                "min_effect",
                "sandbox",
            ),
        )
    ]
    for task in doc["tasks"]:
        base = task["baseline"]
        parts.append(
            f"<h2>{_e(task['task'])} · {_e(task['metric'])} ({_e(task['direction'])} is better)</h2>"
            f'<p class="meta">profile {_e(task["profile"])} · fingerprint {_e(task["fingerprint_id"])} · '
            f"data {_e(', '.join(task['data_ids']) or '–')} · compared with "
            f"{_e(_reference_label(base))}"
            f"</p>"
        )
        parts.append(_table(_results_rows(task), ("seeds", "Δ", "p", "threshold", "detectable"), "results"))
        cards, base_runs = [], next((c["runs"] for c in task["candidates"] if c["role"] == "base"), [])
        for c in task["candidates"]:
            d = c["decision"]
            why = (
                f'<p class="why">{_verdict(d["verdict"])}: {_e(d["reason"])}</p>'
                if d
                else (f'<p class="why">{_e(c["error"] or c["status"])}</p>')
            )
            scored = c["summary"] and c["role"] == "candidate"
            cards.append(
                f'<div class="card candidate" data-candidate="{_e(c["name"])}"><h3>{_e(c["label"])}</h3>{why}'
                f'<div class="plots">{seeds_plot(c, base, task["metric"]) if scored else ""}'
                f"{curves_plot(c['runs'], c['label'] + ': loss per step', base_runs if scored else ())}"
                f"</div></div>"
            )
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
    return _page("autoresearch benchmark", doc, "".join(parts))


def _experiment_rows(experiments: list[dict]) -> list[dict]:
    return [
        {
            "#": e["n"],
            "status": _verdict(e["status"]),
            "value": _num(e.get("value"), ".6f"),
            "p": _num(e.get("p"), ".3g"),
            "commit": e["commit"],
            "what it was": e.get("description", ""),
            "why": (e.get("reason") or "")[:200],
        }
        for e in experiments
    ]


def agent_html(doc: dict) -> str:
    """The page of an agent loop: its progress over experiments and what each experiment was."""
    title = f"{doc['task']} / {doc['tag']}"
    kept = sum(e["status"] == "keep" for e in doc["experiments"][1:])
    body = (
        _settings_line(doc["settings"], ("profile", "seeds", "confirm_seeds", "budget_s", "max_tokens"))
        + f'<p class="meta">agent {_e(doc["agent"].get("name"))} ({_e(doc["agent"].get("kind"))}) · '
        f"{len(doc['experiments'])} experiments, {kept} kept after the baseline</p>"
        + progress_plot(doc["experiments"], doc["metric"], f"{title}: {doc['metric']} ({doc['direction']} is better)")
        + _table(_experiment_rows(doc["experiments"]), ("#", "value", "p"), "experiments")
    )
    return _page(f"autoresearch agent · {title}", doc, body)


def league_html(doc: dict) -> str:
    """The page of a league: the leaderboard, the noise units, each agent's progress per task."""
    rows = [{k: _num(v, "+.2f") if "(σ)" in k else v for k, v in row.items()} for row in doc["leaderboard"]]
    units = "; ".join(f"{t}: σ = {u['sigma']:.4g} ({u['source']})" for t, u in doc["noise_units"].items())
    body = (
        f'<p class="meta">{doc["experiments"]} experiments per agent and task · {doc["heldout_seeds"]} held-out '
        f"seeds · {_e(units)}</p><h2>leaderboard</h2>"
        + _table(rows, tuple(k for k in (rows[0] if rows else {}) if "(σ)" in k), "leaderboard")
    )
    for task, agents in doc["agents"].items():
        body += (
            f'<h2>{_e(task)}</h2><div class="cards">'
            + "".join(
                f'<div class="card agent" data-agent="{_e(agent)}">'
                f"{progress_plot(history, 'validation value', f'{agent} on {task}')}</div>"
                for agent, history in agents.items()
            )
            + "</div>"
        )
    return _page(f"autoresearch league · {doc['league']}", doc, body)


def render(doc: dict) -> str:
    return {"session": session_html, "agent": agent_html, "league": league_html}[doc["kind"]](doc)


def write(doc: dict, path: str | Path) -> Path:
    """Write the page of a report document atomically."""
    return files.write(path, render(doc))


def write_beside(doc: dict, folder: Path, log=print) -> None:
    """report.json and report.html into folder (the agent loop's and the league's, beside their
    records); a failure to write them is logged, never lost records: those are written already."""
    try:
        report.write(doc, folder / "report.json")
        write(doc, folder / "report.html")
    except OSError as e:
        log(f"report not written to {folder}: {e}")


def write_agent_report(out: Path, task, tag: str, spec, settings, profile, log=print) -> None:
    """An agent loop's report.json and report.html, from its records folder."""
    write_beside(
        report.agent_document(out, task, tag, spec, settings, report.machine_info(profile.name, profile.device)),
        out,
        log,
    )


def write_league_report(out: Path, log=print) -> None:
    """A league's report.json and report.html, from its folder (after league.json is written)."""
    write_beside(report.league_document(out, report.machine_info()), out, log)
