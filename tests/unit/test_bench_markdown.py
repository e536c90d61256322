"""The speed tables in the READMEs are the benchmarks' own output for the committed results.

``bench/celery_bench.py --markdown bench/results/celery.json`` prints the
Celery tables; the READMEs paste them between markers. Re-rendering them
here from the committed JSON and finding them verbatim in each README means
a rerun that changes the results without updating the text (or an edit of
the text alone) fails this test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_celery_tables_match_the_committed_results() -> None:
    report = _module("celery_report")
    result = json.loads((ROOT / "bench" / "results" / "celery.json").read_text())
    rendered = report.markdown(result)
    assert rendered.startswith(report.BEGIN) and rendered.rstrip().endswith(report.END)
    for readme in ("README.md", "bench/README.md"):
        text = (ROOT / readme).read_text()
        assert rendered in text, f"{readme}: paste the output of {report.BEGIN}"


def test_celery_verdicts_follow_the_numbers() -> None:
    report = _module("celery_report")
    result = json.loads((ROOT / "bench" / "results" / "celery.json").read_text())
    for broker, s in report.summary(result).items():
        assert s["met"]["track_vs_noop"] == (s["track_vs_noop"] >= report.NOOP_TARGET[broker])
        assert s["met"]["track_vs_bare"] == (s["track_vs_bare"] >= report.BARE_TARGET)
        assert result["runs"][broker]["loadavg_at_end"], "each run records the load average"
