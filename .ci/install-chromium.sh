#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for tests/reports/test_browser.py.
# Idempotent: returns at once when chromium is already on PATH. Without root (or apt-get) it only
# says so and exits 0, so the browser test skips with its own reason instead of CI failing here.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install-chromium: not root; skipping (install the Debian package 'chromium' to run the browser test)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: apt-get not found; skipping (install Chromium by hand to run the browser test)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-dejavu-core: without any font a bare container renders no text at all.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "install-chromium: apt-get finished but chromium is not on PATH" >&2; exit 1; }
