"""Tables, verdicts and the chart of ``bench/celery_bench.py``, from its results JSON.

Kept free of Celery imports: the unit test ``tests/unit/test_bench_markdown.py``
re-renders the markdown from the committed ``bench/results/celery.json`` and
checks that the READMEs contain it verbatim, so the quoted figures cannot
drift from the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BROKERS = {"embedded": "embedded Redis broker", "rabbitmq": "RabbitMQ"}
#: ``track`` must reach this multiple of the prefetch-1 no-op's rate.
NOOP_TARGET = {"embedded": 2.0, "rabbitmq": 3.0}
BARE_TARGET = 0.5
MANY_TARGET = 20_000
P99_TARGET_MS = 100.0
SCENARIOS = {
    "track": "`track`, batching path",
    "track_one": "`track_one`, one task per message",
    "noop": "`noop` at prefetch 1",
    "bare": "bare kombu consumer (receive + ack)",
    "track_many": "`track_many`",
}
BEGIN = "<!-- celery-bench:begin (bench/celery_bench.py --markdown bench/results/celery.json) -->"
END = "<!-- celery-bench:end -->"


def _brokers(result: dict[str, Any]) -> list[str]:
    seen = {row["broker"] for row in result["capacity"]}
    return [b for b in BROKERS if b in seen]


def _cap(result: dict[str, Any], broker: str, scenario: str) -> float:
    return float(
        next(
            r["events_per_s"]
            for r in result["capacity"]
            if r["broker"] == broker and r["scenario"] == scenario
        )
    )


def _lat(result: dict[str, Any], broker: str, scenario: str, load: float) -> dict[str, Any]:
    return next(
        r
        for r in result["latency"]
        if r["broker"] == broker and r["scenario"] == scenario and r["load"] == load
    )


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios and whether each target of issue 11 was met, per broker."""
    out: dict[str, Any] = {}
    for broker in _brokers(result):
        track = _cap(result, broker, "track")
        p99 = float(_lat(result, broker, "track", 0.1)["p99_ms"])
        many = _cap(result, broker, "track_many")
        out[broker] = {
            "track_vs_noop": round(track / _cap(result, broker, "noop"), 2),
            "track_vs_noop_target": NOOP_TARGET[broker],
            "track_vs_bare": round(track / _cap(result, broker, "bare"), 2),
            "track_vs_track_one": round(track / _cap(result, broker, "track_one"), 2),
            "track_p99_ms_at_10pct": p99,
            "track_many_events_per_s": many,
            "exact_counts": all(
                r["applied_exact"] for r in result["capacity"] if r["broker"] == broker
            ),
        }
        s = out[broker]
        s["met"] = {
            "track_vs_noop": s["track_vs_noop"] >= NOOP_TARGET[broker],
            "track_vs_bare": s["track_vs_bare"] >= BARE_TARGET,
            "p99_at_10pct": p99 <= P99_TARGET_MS,
            "track_many": many >= MANY_TARGET,
            "exact_counts": s["exact_counts"],
        }
    return out


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(result: dict[str, Any]) -> str:
    """The README tables for ``result``, between the markers the unit test looks for."""
    brokers = _brokers(result)
    summ = summary(result)
    batch = {run["settings"]["many_batch"] for run in result["runs"].values()}
    head = "| | " + " | ".join(BROKERS[b] for b in brokers) + " |"
    rule = "|---|" + "---:|" * len(brokers)
    runs = result["runs"]
    loads = "; ".join(
        f"{BROKERS[b]} run {runs[b]['started']}: {runs[b]['loadavg_at_start'][0]} at the start,"
        f" {runs[b]['loadavg_at_end'][0]} at the end"
        for b in brokers
    )
    lines = [
        BEGIN,
        "",
        f"1-minute load average of the shared 2-core machine ({loads}).",
        "",
        head.replace("| |", "| events/s from a pre-published backlog |", 1),
        rule,
    ]
    for scenario, name in SCENARIOS.items():
        label = f"{name}, batches of {min(batch)}" if scenario == "track_many" else name
        cells = [_n(_cap(result, b, scenario)) for b in brokers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", head.replace("| |", "| target (issue 11) |", 1), "|---|" + "---|" * len(brokers)]
    rows = [
        (
            "`track` ≥ 2x (Redis broker) / 3x (RabbitMQ) the prefetch-1 no-op",
            lambda s: f"{s['track_vs_noop']}x, {_verdict(s['met']['track_vs_noop'])}",
        ),
        (
            "`track` ≥ 50% of the bare kombu consumer",
            lambda s: f"{round(100 * s['track_vs_bare'])}%, {_verdict(s['met']['track_vs_bare'])}",
        ),
        (
            "p99 `delay()` -> applied at 10% load ≤ 100 ms",
            lambda s: f"{s['track_p99_ms_at_10pct']} ms, {_verdict(s['met']['p99_at_10pct'])}",
        ),
        (
            "`track_many` ≥ 20,000 events/s, batches of 500",
            lambda s: f"{_n(s['track_many_events_per_s'])}, {_verdict(s['met']['track_many'])}",
        ),
        ("exact counts", lambda s: _verdict(s["met"]["exact_counts"])),
        ("(`track` / `track_one`)", lambda s: f"{s['track_vs_track_one']}x"),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(summ[b]) for b in brokers) + " |")
    lines += [
        "",
        head.replace("| |", "| p50 / p99 ms, `delay()` -> applied (offered events/s) |", 1),
        rule,
    ]
    for scenario in ("track", "track_one"):
        for load_ in (0.1, 0.5, 1.0):
            what = "full load" if load_ == 1.0 else f"{round(100 * load_)}% of capacity"
            cells = []
            for b in brokers:
                r = _lat(result, b, scenario, load_)
                cells.append(f"{r['p50_ms']} / {r['p99_ms']} ({_n(r['offered_per_s'])})")
            lines.append(f"| `{scenario}`, {what} | " + " | ".join(cells) + " |")
    lines += ["", head.replace("| |", "| µs per `track.delay()` in the publisher |", 1), rule]
    ways = list(dict.fromkeys(r["way"] for r in result["publisher"]))
    for way in ways:
        cells = [
            next(
                (
                    f"{r['us_per_delay']:,.0f}"
                    for r in result["publisher"]
                    if r["broker"] == b and r["way"] == way
                ),
                "n/a",
            )
            for b in brokers
        ]
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    lines += ["", END, ""]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    """Capacity per scenario and broker, and latency of ``track`` by load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brokers = _brokers(result)
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(13, 4.8))
    scenarios = list(SCENARIOS)
    width = 0.8 / len(scenarios)
    for i, scenario in enumerate(scenarios):
        xs = [j + i * width for j in range(len(brokers))]
        bars = ax.bar(xs, [_cap(result, b, scenario) for b in brokers], width, label=scenario)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(brokers))], [BROKERS[b] for b in brokers])
    ax.set_ylabel("events/s from a backlog (worker -c 2)")
    ax.set_title("Capacity")
    ax.legend(fontsize=8)
    loads = (0.1, 0.5, 1.0)
    for b in brokers:
        for scenario, style in (("track", "-"), ("track_one", "--")):
            p99 = [_lat(result, b, scenario, x)["p99_ms"] for x in loads]
            lat.plot([100 * x for x in loads], p99, style, marker="o", label=f"{scenario}, {b}")
    lat.axhline(P99_TARGET_MS, color="grey", linewidth=1)
    lat.set_yscale("log")
    lat.set_xlabel("load, % of the scenario's capacity (100 = publish as fast as possible)")
    lat.set_ylabel("p99 ms, delay() -> applied")
    lat.set_title("Latency")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
