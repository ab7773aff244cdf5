#!/usr/bin/env bash
# The browser the console's tests drive (tests/browser): Debian's chromium and chromium-driver,
# /usr/bin/chromium and /usr/bin/chromedriver. Installs them with apt-get when missing (as root);
# otherwise says what to install. `make test` runs this before the integration tests.
#
#   scripts/browser.sh          install if missing, print the versions
#   scripts/browser.sh check    exit 0 when both are present, 3 otherwise (installs nothing)
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

present() { [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; }

case "${1:-install}" in
    check)
        present && exit 0
        echo "browser: $CHROMIUM or $CHROMEDRIVER missing (bash scripts/browser.sh installs them)"
        exit 3
        ;;
    install)
        if ! present; then
            is_root || die "$CHROMIUM and $CHROMEDRIVER are needed by the console's browser tests; install Debian's packages 'chromium' and 'chromium-driver' (sudo apt-get install chromium chromium-driver) and re-run"
            apt_install chromium chromium-driver
            present || die "chromium and chromium-driver installed, but $CHROMIUM or $CHROMEDRIVER is still missing"
        fi
        log "$("$CHROMIUM" --version 2>/dev/null | head -1); $("$CHROMEDRIVER" --version 2>/dev/null | head -1)"
        ;;
    *)
        echo "usage: scripts/browser.sh [install|check]" >&2
        exit 2
        ;;
esac
