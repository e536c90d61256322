"""The layers' import rules, checked on the source (every import, also inside functions).

- ``tracking/`` (the domain library) imports nothing from Celery, kombu,
  ``celery_app``, ``tasks`` or ``cli``: it runs in any process.
- ``celery_app/`` imports nothing from ``tasks`` or ``cli``: the app finds
  the tasks by name (``include=``), so importing it defines no task.
- ``tasks/`` imports nothing from ``cli``; ``config/`` imports none of them.
- The web dashboard (``dashboard/``: Starlette, Jinja2, uvicorn) is imported
  by none of those; it reads through ``tracking`` and ``celery_app`` and
  imports neither ``tasks`` nor ``cli``.

Entry points live in ``cli/``, the only package that ties them together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WEB = ("dashboard", "starlette", "jinja2", "uvicorn", "httpx")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "tracking": ("celery", "kombu", "celery_app", "tasks", "cli", *WEB),
    "celery_app": ("tasks", "cli", *WEB),
    "tasks": ("cli", *WEB),
    "config": ("celery", "kombu", "celery_app", "tasks", "cli", "tracking", *WEB),
    "dashboard": ("tasks", "cli"),
}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(root).with_suffix("").parts[: -node.level]
                base = ".".join(package)
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_respect_the_rules(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert violations(package) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # A function-level import is still a dependency; relative ones resolve to the package.
    package = tmp_path / "tracking"
    package.mkdir()
    source = package / "mod.py"
    source.write_text(
        "def f():\n    from tasks import track\n    import celery.app\nfrom .cache import redis\n"
    )
    names = [name for _, name in imported_modules(source, root=tmp_path)]
    assert names == ["tracking.cache", "tasks", "celery.app"]
