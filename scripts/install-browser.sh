#!/usr/bin/env bash
# Install Debian's headless Chromium and its driver for the playground browser test
# (tests/test_playground_browser.py, marker `browser`). Does nothing when both are present;
# exits 0 with a message where apt is not available (the test then skips itself).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
    echo "install-browser: $CHROMIUM and $DRIVER are already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not found; install chromium and chromedriver yourself" \
        "(the browser test is skipped without them)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-browser: not root and no sudo; run as root:" \
            "apt-get install -y chromium chromium-driver"
        exit 0
    fi
    SUDO=sudo
fi

export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# apt's output goes to a log that is shown only when something fails.
quietly() { "$@" >>"$LOG" 2>&1 || { tail -n 30 "$LOG"; return 1; }; }
install() { quietly $SUDO apt-get install -y -q chromium chromium-driver; }
echo "install-browser: installing Debian's chromium and chromium-driver (for the browser test)"
if ! install; then
    echo "install-browser: install failed; updating the package lists and trying again"
    quietly $SUDO apt-get update
    install
fi
echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
