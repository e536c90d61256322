"""The deployment guide and its example files cannot drift from the code.

``docs/deploy.md``, ``deploy/docker-compose.yml`` and ``deploy/k8s/*.yaml``
are not run here (no Docker engine or Kubernetes on this machine), so these
checks are what keeps them honest: every ``TRACKING_*`` name they mention
is a real :class:`config.Settings` field, the YAML parses, the values they
set load into ``Settings``, the ``tracking`` commands and queues they use
exist, beat is never scaled, and the repository paths and links the guide
cites exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from celery_app.celeryconfig import QUEUES
from cli.main import app as cli_app
from config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deploy.md"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
K8S = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
DOCKERFILE = REPO / "deploy" / "Dockerfile"
FILES = [GUIDE, COMPOSE, DOCKERFILE, *K8S]

SETTING_NAME = re.compile(r"\bTRACKING_[A-Z0-9_]*[A-Z0-9]\b")
PREFIX = "TRACKING_"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(_text(COMPOSE))
    assert isinstance(loaded, dict)
    return loaded


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in K8S:
        docs.extend(d for d in yaml.safe_load_all(_text(path)) if d is not None)
    return docs


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings`` as a process with exactly ``env``'s TRACKING_* variables would read them."""
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def test_the_example_files_exist() -> None:
    for path in FILES:
        assert path.is_file(), path
    assert K8S, "deploy/k8s/ has no manifests"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_tracking_variable_named_is_a_setting(path: Path) -> None:
    names = set(SETTING_NAME.findall(_text(path)))
    if path in (GUIDE, COMPOSE):
        assert names, f"{path.name} names no TRACKING_* setting"
    unknown = sorted(n for n in names if n[len(PREFIX) :].lower() not in Settings.model_fields)
    assert not unknown, f"{path.name} names settings that config/settings.py lacks: {unknown}"


def test_the_readme_links_the_guide() -> None:
    assert "(docs/deploy.md)" in _text(REPO / "README.md")


def test_compose_parses_and_its_values_load_into_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    image = "celery-tracking:latest"
    product = {name: s for name, s in services.items() if s.get("image") == image}
    assert {"beat", "worker-tracking", "worker-maintenance"} <= set(product)
    for name, service in product.items():
        env = {k: v for k, v in service["environment"].items() if k.startswith(PREFIX)}
        settings = _settings_from(env, monkeypatch)
        assert settings.redis_url and settings.broker_url and settings.store_url, name
        assert settings.broker_url.startswith("amqp://"), name
        assert settings.rabbitmq_quorum_queues, name


def test_compose_runs_exactly_one_beat_and_workers_on_real_queues() -> None:
    services = _compose()["services"]
    beats = [s for s in services.values() if s.get("command", [])[:2] == ["tracking", "beat"]]
    assert len(beats) == 1
    assert beats[0].get("deploy", {}).get("replicas", 1) == 1
    workers = [s for s in services.values() if s.get("command", [])[:2] == ["tracking", "worker"]]
    served = set()
    for worker in workers:
        command = worker["command"]
        queues = command[command.index("-Q") + 1].split(",")
        assert set(queues) <= set(QUEUES), queues
        served.update(queues)
        assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert served == set(QUEUES), "every queue needs a worker"


def test_compose_redis_is_persistent_and_never_evicts() -> None:
    command = _compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"


def test_k8s_manifests_parse_and_load_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s_documents()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    env: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            env.update(doc["data"])
        elif doc["kind"] == "Secret":
            env.update(doc["stringData"])
    settings = _settings_from(env, monkeypatch)
    assert settings.redis_url and settings.broker_url and settings.store_url
    assert settings.rabbitmq_quorum_queues
    # Every container reads exactly that configuration.
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
                assert refs == {"tracking-config", "tracking-urls"}, doc["metadata"]["name"]


def test_k8s_runs_exactly_one_beat_and_workers_on_real_queues() -> None:
    deployments = [d for d in _k8s_documents() if d["kind"] == "Deployment"]
    commands = {
        d["metadata"]["name"]: (d, d["spec"]["template"]["spec"]["containers"][0]["command"])
        for d in deployments
    }
    beats = [d for d, cmd in commands.values() if cmd[:2] == ["tracking", "beat"]]
    assert len(beats) == 1
    assert beats[0]["spec"]["replicas"] == 1
    assert beats[0]["spec"]["strategy"]["type"] == "Recreate"
    served = set()
    for d, cmd in commands.values():
        if cmd[:2] == ["tracking", "worker"]:
            served.update(cmd[cmd.index("-Q") + 1].split(","))
            probe = d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
            assert "inspect ping" in " ".join(probe["exec"]["command"])
    assert served == set(QUEUES)


def test_tracking_commands_named_exist() -> None:
    """Every ``tracking <command>`` the guide and the examples use is a CLI command."""
    commands = set(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]
    used = set(re.findall(r"`tracking ([a-z][a-z-]*)", _text(GUIDE)))
    used |= set(re.findall(r'"tracking", "([a-z][a-z-]*)"', _text(COMPOSE)))
    for path in K8S:
        used |= set(re.findall(r'"tracking", "([a-z][a-z-]*)"', _text(path)))
    used |= set(re.findall(r'\["tracking", "([a-z][a-z-]*)"', _text(DOCKERFILE)))
    assert used
    assert used <= commands, sorted(used - commands)
    # and every queue a ``tracking worker -Q ...`` of the guide consumes is a real one
    named = {
        queue
        for queues in re.findall(r"`tracking worker -Q ([a-z.,]+)", _text(GUIDE))
        for queue in queues.split(",")
    }
    assert named and named <= set(QUEUES), sorted(named - set(QUEUES))


def test_paths_and_links_in_the_guide_exist() -> None:
    text = _text(GUIDE)
    tops = ("tracking/", "tests/", "celery_app/", "config/", "cli/", "tasks/", "deploy/", "docs/")
    cited = {
        token
        for token in re.findall(r"`([A-Za-z0-9_./-]+)`", text)
        if token.startswith(tops) and "<" not in token
    }
    links = {
        target.split("#")[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if "://" not in target and not target.startswith("#")
    }
    assert cited
    missing = sorted(p for p in cited if not (REPO / p).exists())
    missing += sorted(p for p in links if p and not (GUIDE.parent / p).exists())
    assert not missing, f"docs/deploy.md cites paths that do not exist: {missing}"


def test_the_mongo_index_commands_match_the_store() -> None:
    from tracking.store.mongo import TTL_INDEX_NAME, UNIQUE_INDEX_NAME

    text = _text(GUIDE)
    assert f'{{group_id: 1, name: 1}}, {{unique: true, name: "{UNIQUE_INDEX_NAME}"}}' in text
    assert f'{{expire_at: 1}}, {{expireAfterSeconds: 0, name: "{TTL_INDEX_NAME}"}}' in text


@pytest.mark.parametrize(
    ("command", "credentials"),
    [
        ("dashboard", {"TRACKING_DASHBOARD_TOKEN", "TRACKING_DASHBOARD_USER"}),
        ("flower", {"FLOWER_BASIC_AUTH", "FLOWER_AUTH"}),
    ],
)
def test_exposed_web_views_carry_credentials(command: str, credentials: set[str]) -> None:
    """``tracking dashboard`` and ``tracking flower`` off loopback refuse to start
    without credentials, so every example that exposes one sets them."""
    for name, service in _compose()["services"].items():
        if service.get("command", [])[:2] == ["tracking", command]:
            assert credentials & set(service["environment"]), name
    for doc in _k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container["command"][:2] == ["tracking", command]:
                env = {e["name"] for e in container.get("env", [])}
                assert credentials & env, doc["metadata"]["name"]


def test_the_guide_says_the_examples_are_not_run_wherever_it_cites_them() -> None:
    """Each paragraph or list item citing the compose file, the Dockerfile or the
    Kubernetes sketch also says that they are not run here."""
    text = _text(GUIDE)
    blocks = re.split(r"\n\s*\n|\n(?=\s*(?:[-*]|\d+\.) )", text)
    cites = re.compile(r"docker-compose|compose file|Dockerfile|deploy/k8s|Kubernetes sketch")
    for block in blocks:
        if cites.search(block):
            assert "no Docker engine" in block, block


def test_the_image_copies_every_package_the_project_installs() -> None:
    import tomllib

    project = tomllib.loads(_text(REPO / "pyproject.toml"))
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    copied = set(re.findall(r"^COPY (\S+) \./\1$", _text(DOCKERFILE), re.MULTILINE))
    assert packages <= copied, sorted(packages - copied)
