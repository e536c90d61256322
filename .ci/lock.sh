#!/usr/bin/env bash
# Refresh requirements/ci.txt: every dependency of the project and its dev
# extra (plus pip/setuptools/wheel), pinned with hashes, resolved on Python
# 3.11. CI installs from this file only, so a new release of a dependency,
# ruff or mypy cannot change a CI run until this script is run again and the
# result committed. Needs the package index; uses a throwaway venv for pip-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${TRACKING_CI_PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$python" -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q 'pip-tools>=7.4'
"$tools/venv/bin/pip-compile" -q --extra dev --generate-hashes --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --strip-extras \
    --output-file requirements/ci.txt pyproject.toml requirements/ci-tools.in
echo "requirements/ci.txt refreshed; commit it"
