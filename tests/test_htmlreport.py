"""The HTML report as a person sees it: opened in a real headless browser (Chromium), whose DOM and
screenshot are checked; skipped where no browser is installed (apt-get install chromium)."""

import json
import shutil
import subprocess
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_plugin import AGAINST_HEAD, FAST, add_candidate, commit_project, project  # noqa: F401 (fixture)
from test_session import FakeRuns

from autoresearch_bench import htmlreport, league, report
from autoresearch_bench.agent import AgentSpec, Experiment, Settings

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in map(shutil.which, BROWSERS) if b), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium")


def browse(page: Path, tmp_path: Path, *args: str) -> str:
    """Open page in headless Chromium (its own profile folder, so that parallel tests do not share one)."""
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Seen(HTMLParser):
    """What the browser's DOM holds: every element's tag, attributes and text (its own and its children's)."""

    def __init__(self, dom: str):
        super().__init__()
        self.elements: list[dict] = []
        self.open: list[dict] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, **dict(attrs), "text": "", "children": []}
        if self.open:
            self.open[-1]["children"].append(element)
        self.elements.append(element)
        if tag not in ("meta", "br", "img", "input", "link"):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def find(self, tag: str, cls: str = "") -> list[dict]:
        return [e for e in self.elements if e["tag"] == tag and cls in e.get("class", "").split()]


def children(element: dict, tag: str) -> list[dict]:
    found = []
    for child in element["children"]:
        found += ([child] if child["tag"] == tag else []) + children(child, tag)
    return found


class CurvedRuns(FakeRuns):
    """FakeRuns whose records carry a loss curve; a candidate named slow_* scores 0.5 worse."""

    def __call__(self, task, profile, candidate, seed, **options):
        record = super().__call__(task, profile, candidate, seed, **options)
        record.value += 0.5 * candidate.name.startswith("slow")
        record.extra["curve"] = [
            [step, step * 0.1, 6.0 - step * (0.2 - 0.05 * candidate.name.startswith("slow")) + 0.01 * seed]
            for step in range(20)
        ]
        return record


@pytest.fixture
def session_page(pytester, project, monkeypatch) -> Path:
    """report.html of a session: train and slow_lr against the base commit, two seeds each."""
    commit_project(project)
    add_candidate(project, "slow_lr")
    CurvedRuns(monkeypatch)
    pytester.runpytest_inprocess(
        *AGAINST_HEAD,
        "--ar-html",
        "report.html",
        *FAST,
    ).assert_outcomes(passed=3, deselected=6)
    return project / "report.html"


def test_the_page_is_self_contained_inline_css_and_svg_and_nothing_to_fetch(session_page):
    page = session_page.read_text()
    assert "<style>" in page and "<svg" in page
    for fetch in ("<script", "<link", "<img", "src=", "href=", "url(", "@import"):
        assert fetch not in page, fetch


@needs_browser
def test_the_browser_shows_the_results_table_and_one_seed_plot_per_candidate(session_page, tmp_path):
    seen = Seen(browse(session_page, tmp_path, "--dump-dom"))
    [table] = seen.find("table", "results")
    rows = [[cell["text"].strip() for cell in children(row, "td")] for row in children(table, "tr")[1:]]
    assert [row[0] for row in rows] == ["base @HEAD", "train", "slow_lr"]  # best first
    verdicts = {row[0]: row[-3] for row in rows}
    assert verdicts == {"base @HEAD": "–", "train": "no difference", "slow_lr": "worse"}
    cards = {c["data-candidate"]: c for c in seen.find("div", "card")}
    assert set(cards) == {"@base", "train", "slow_lr"}
    for name in ("train", "slow_lr"):  # a candidate: its seeds against the baseline's, and its loss curves
        [seeds] = [s for s in children(cards[name], "svg") if "seeds" in s["class"]]
        tips = sorted(t["text"] for t in children(seeds, "title"))
        value = 2.0 + 0.5 * (name == "slow_lr")
        assert f"{name}, seed 0: {value:.4f}" in tips and f"{name}, seed 1: {value + 0.01:.4f}" in tips
        assert "baseline, seed 0: 2.0000" in tips and "baseline, seed 1: 2.0100" in tips
        assert any(t.startswith(f"{name}: mean {value + 0.005:.4f}, 95% CI [") for t in tips)
    for card in cards.values():
        [curves] = [s for s in children(card, "svg") if "curves" in s["class"]]
        lines = [p.get("class") for p in children(curves, "polyline")]
        assert lines.count("series") == 2  # a line per seed; a candidate's over the base's, in grey
        assert lines.count("reference") == (0 if card["data-candidate"] == "@base" else 2)
    assert len(seen.find("svg", "seeds")) == 2  # the base is the reference, not a candidate


@needs_browser
def test_the_screenshot_shows_the_plots_in_their_colours(session_page, tmp_path):
    image = pytest.importorskip("PIL.Image", reason="Pillow (with the plot extra) reads the screenshot")
    shot = tmp_path / "shot.png"
    browse(session_page, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars")
    with image.open(shot) as picture:
        assert picture.size == (1200, 2400)
        colours = picture.convert("RGB").getcolors(1 << 24)
    count = lambda hex_colour: sum(
        n for n, c in colours if c == tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    )
    assert count(htmlreport.CANDIDATE) > 200 and count(htmlreport.BASELINE) > 200  # dots, means, intervals
    assert count(htmlreport.PALETTE[1]) > 50  # the second seed's loss curve


def write_agent_records(out: Path) -> list[Experiment]:
    """An agent's records folder: a baseline, a kept change, a discarded one and a crash."""
    history = [
        Experiment(0, "a000000", 2.50, 0.3, "keep", "baseline"),
        Experiment(1, "b111111", 2.40, 0.3, "keep", "raise the learning rate", "confirm: better", p=0.01),
        Experiment(2, "c222222", 2.60, 0.3, "discard", "halve the width", "screen: worse"),
        Experiment(3, "d333333", None, 0.0, "crash", "fused kernel", "screen: crash: boom"),
    ]
    out.mkdir(parents=True)
    (out / "experiments.jsonl").write_text("".join(json.dumps(asdict(e)) + "\n" for e in history))
    return history


@needs_browser
def test_the_agent_page_shows_progress_with_kept_and_discarded_changes_and_what_each_was(tmp_path, tiny_task):
    out = tmp_path / "agent"
    write_agent_records(out)
    htmlreport.write_agent_report(
        out, tiny_task, "t1", AgentSpec("coder", kind="null"), Settings(profile="cpu"), tiny_task.profile("cpu")
    )
    assert report.load(out / "report.json")["kind"] == "agent"
    seen = Seen(browse(out / "report.html", tmp_path, "--dump-dom"))
    [plot] = seen.find("svg", "progress")
    tips = [t["text"] for t in children(plot, "title")]
    assert "#1 keep: raise the learning rate (confirm: better)" in tips
    assert (
        "#2 discard: halve the width (screen: worse)" in tips and "#3 crash: fused kernel (screen: crash: boom)" in tips
    )
    fills = {c["fill"] for c in children(plot, "circle")}
    assert fills == {htmlreport.KEEP, htmlreport.DISCARD}
    [table] = seen.find("table", "experiments")
    rows = [[cell["text"].strip() for cell in children(row, "td")] for row in children(table, "tr")[1:]]
    assert [(r[0], r[1], r[5]) for r in rows] == [
        ("0", "keep", "baseline"),
        ("1", "keep", "raise the learning rate"),
        ("2", "discard", "halve the width"),
        ("3", "crash", "fused kernel"),
    ]


@needs_browser
def test_the_league_page_shows_the_leaderboard_and_each_agent_s_progress(tmp_path, tiny_task):
    out = tmp_path / "league"
    for agent in ("null", "coder"):
        write_agent_records(out / "tiny" / agent)
    entries = [
        league.Entry("coder", "tiny", improvement_sigma=1.5, experiments=3, keeps=1),
        league.Entry("null", "tiny", improvement_sigma=0.0, experiments=3),
    ]
    rows = league.leaderboard(entries, ["tiny"])
    (out / "league.json").write_text(
        json.dumps(
            {
                "league": "l1",
                "experiments": 3,
                "heldout_seeds": 2,
                "settings": asdict(Settings()),
                "noise_units": {"tiny": {"sigma": 0.01, "source": "measured"}},
                "entries": [asdict(e) for e in entries],
                "leaderboard": rows,
            }
        )
    )
    htmlreport.write_league_report(out)
    seen = Seen(browse(out / "report.html", tmp_path, "--dump-dom"))
    [table] = seen.find("table", "leaderboard")
    cells = [[cell["text"].strip() for cell in children(row, "td")] for row in children(table, "tr")[1:]]
    assert [(r[0], r[1]) for r in cells] == [("coder", "+1.50"), ("null", "+0.00")]
    assert {c["data-agent"] for c in seen.find("div", "agent")} == {"null", "coder"}
    assert len(seen.find("svg", "progress")) == 2
