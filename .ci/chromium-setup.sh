#!/usr/bin/env bash
# Install Debian's chromium for the headless Flower screenshot test
# (tests/integration/test_celery_flower.py), when it is not there yet.
set -euo pipefail
for bin in chromium chromium-browser; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "chromium present: $(command -v "$bin")"
        exit 0
    fi
done
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "chromium missing and not root: apt-get install -y chromium" >&2; exit 1; }
    sudo="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
echo "chromium installed: $(command -v chromium)"
