#!/usr/bin/env bash
# Pre-build the virtualenv of the Mongo wire-compatible test server
# (tests/.mongo-venv: Python >= 3.13 with pinned mongoeco and pymongo) so the
# first Mongo test does not pay for it and CI time stays predictable.
# Idempotent (a stamp file records the pinned versions) and quiet: it prints
# only on failure. Exit 0 when ready, non-zero otherwise.
# Set TRACKING_TEST_PYTHON313 to choose the 3.13 interpreter; otherwise it
# is found through pyenv or python3.13 on PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Any Python >= 3.10 can run the provisioning code (stdlib only).
if [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py="$(command -v python3)"
fi

if ! out="$(PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m tests.support.mongo_env 2>&1)"; then
    echo "mongo-setup: could not prepare the Mongo test server environment:" >&2
    echo "$out" >&2
    exit 1
fi
