#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing. Needs root (CI runs as root); without it
# the browser test skips with a reason instead of failing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
    echo "chromium is not installed and this is not a root Debian shell: the browser test will skip" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser test..." >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
