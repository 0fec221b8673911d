#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver for the browser test (tests/viz/test_page_browser.py).
#
#   bash scripts/install_browser.sh
#
# Does nothing when /usr/bin/chromium and /usr/bin/chromedriver are already there. Never fails:
# when it cannot install (not root, no apt-get, no network) it says so and exits 0, and the
# browser test then skips with its reason.
set -u

have_browser() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }

if have_browser; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get on this machine; skipping (the browser test will be skipped)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_browser: not root and no passwordless sudo; skipping (the browser test will be skipped)"
        exit 0
    fi
else
    SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: installing chromium and chromedriver from Debian's packages ..."
if ! $SUDO apt-get update -qq >/dev/null 2>&1; then
    echo "install_browser: apt-get update failed; trying with the package lists already present"
fi
if $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
        && have_browser; then
    echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
    echo "install_browser: could not install chromium/chromium-driver; the browser test will be skipped"
fi
exit 0
