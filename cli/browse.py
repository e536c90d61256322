"""Which deployment ``tracking dashboard`` shows: the configured one or the last demo.

The dashboard reads the workers' settings (``TRACKING_*``). Right after
``tracking demo`` those settings point at the user's own (probably empty)
embedded data, while the demo ran in a directory of its own
(:func:`cli.demo.last_demo_dir`) under its own key prefix. The rules, first
match wins:

1. ``--demo``: the last demo's directory, read with the key prefix and
   handler modules its marker file names.
2. ``--data-dir D``: ``D``; when ``D`` is a demo's directory, with its
   marker's key prefix and handlers (``--key-prefix`` still wins).
3. No configuration at all (no ``TRACKING_REDIS_URL``, ``TRACKING_STORE_URL``,
   ``TRACKING_DATA_DIR`` or ``TRACKING_KEY_PREFIX``), no groups of the
   user's own in the default data directory's file store, and a last demo
   on disk: the last demo. Every page then says so, so it is never
   mistaken for the user's data.
4. Otherwise: the settings the workers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cli import demo as demo_files
from config.settings import Settings

#: The settings that say where the data is; any of them set means "configured".
LOCATION_VARIABLES = (
    "TRACKING_REDIS_URL",
    "TRACKING_STORE_URL",
    "TRACKING_DATA_DIR",
    "TRACKING_KEY_PREFIX",
)


class NoDemoError(Exception):
    """``--demo`` was asked for but no demo ran (or its files are gone)."""


@dataclass(frozen=True)
class Target:
    """The settings to serve, and a line telling people what they are looking at."""

    settings: Settings
    notice: str | None = None


def choose(
    *,
    demo: bool,
    data_dir: Path | None,
    key_prefix: str | None,
    environ: Mapping[str, str],
) -> Target:
    """Apply the rules of the module docstring."""
    if demo:
        root = demo_files.last_demo_dir()
        if demo_files.read_marker(root) is None:
            raise NoDemoError(f"no demo run found in {root}; run tracking demo first")
        return _demo_target(root, key_prefix, "the last tracking demo run")
    if data_dir is not None:
        if demo_files.read_marker(data_dir) is not None:
            return _demo_target(data_dir, key_prefix, "the tracking demo run in this directory")
        overrides: dict[str, object] = {"data_dir": data_dir}
        if key_prefix is not None:
            overrides["key_prefix"] = key_prefix
        return Target(Settings(**overrides))  # type: ignore[arg-type]
    if key_prefix is not None:
        return Target(Settings(key_prefix=key_prefix))
    settings = Settings()
    configured = any(name.upper() in LOCATION_VARIABLES for name in environ)
    last_demo = demo_files.last_demo_dir()
    if (
        not configured
        and not has_own_groups(settings.data_dir)
        and demo_files.read_marker(last_demo) is not None
    ):
        return _demo_target(
            last_demo,
            None,
            "the last tracking demo run: there is no TRACKING_* configuration and no "
            "group of your own yet",
        )
    return Target(settings)


def _demo_target(root: Path, key_prefix: str | None, what: str) -> Target:
    marker = demo_files.read_marker(root) or {}
    settings = Settings(
        data_dir=root,
        key_prefix=key_prefix or marker.get("key_prefix", demo_files.KEY_PREFIX),
        event_handlers=marker.get("event_handlers", demo_files.HANDLERS),
        # The demo ran on its own embedded Redis and file store, whatever
        # this shell exports.
        redis_url=None,
        store_url=None,
        broker_url=None,
    )
    return Target(settings, f"Showing {what} ({root.name}, key prefix {settings.key_prefix}).")


def has_own_groups(data_dir: Path) -> bool:
    """Whether the embedded default's file store under ``data_dir`` holds any record.

    Looks for a POD data file (anything but the ``_pod_meta.json`` header)
    in ``<data_dir>/store/records``; stops at the first one found.
    """
    records = data_dir / "store" / "records"
    try:
        return any(
            entry.is_file() and entry.name != "_pod_meta.json" for entry in records.iterdir()
        )
    except OSError:
        return False
