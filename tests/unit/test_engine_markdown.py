"""The engine speed tables in the READMEs are the benchmarks' own output for the committed results.

``bench/engine_bench.py --markdown bench/results/engine.json`` (full tables,
in bench/README.md), the same with ``--summary`` (the short table, in
README.md) and ``bench/hotpath_compare.py --markdown
bench/results/hotpath_compare.json`` (both READMEs) are pasted between
markers. Re-rendering them here from the committed JSON and finding them
verbatim means a rerun that changes the results without updating the text
(or an edit of the text alone) fails this test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def _module(name: str) -> ModuleType:
    bench = str(ROOT / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)  # engine_bench imports its sibling roundtrips
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _text(readme: str) -> str:
    return (ROOT / readme).read_text()


def test_engine_tables_match_the_committed_results() -> None:
    bench = _module("engine_bench")
    results = json.loads((RESULTS / "engine.json").read_text())
    full = bench.markdown(results)
    assert full.startswith(bench.BEGIN) and full.endswith(bench.END)
    assert full in _text("bench/README.md"), "bench/README.md: paste engine_bench --markdown"
    summary = bench.summary_markdown(results)
    assert summary.startswith(bench.SUMMARY_BEGIN) and summary.endswith(bench.SUMMARY_END)
    assert summary in _text("README.md"), "README.md: paste engine_bench --markdown --summary"


def test_hotpath_comparison_matches_the_committed_results() -> None:
    compare = _module("hotpath_compare")
    rendered = compare.markdown(json.loads((RESULTS / "hotpath_compare.json").read_text()))
    assert rendered.startswith(compare.BEGIN) and rendered.endswith(compare.END)
    for readme in ("README.md", "bench/README.md"):
        assert rendered in _text(readme), f"{readme}: paste hotpath_compare --markdown"


def test_engine_results_record_the_load_average() -> None:
    results = json.loads((RESULTS / "engine.json").read_text())
    assert results["meta"]["load_avg_at_start"] and results["meta"]["load_avg_at_end"]
    assert all("load_avg_1m_before" in cell for cell in results["cells"])
