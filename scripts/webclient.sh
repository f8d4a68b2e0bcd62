#!/usr/bin/env bash
# The browser presence client (webclient/): its npm packages (package-lock.json) and
# the bundle presence-store serves under /client/ (webclient/dist, not in git). Builds
# only when the sources or the lock changed; the browser fetches nothing else.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DIR="$REPO_ROOT/webclient"
STAMP="$DIR/dist/.sources.sha256"
command -v npm >/dev/null || apt_install nodejs npm
wanted="$(cat "$DIR/package.json" "$DIR/package-lock.json" "$DIR"/src/* | sha256sum | cut -d' ' -f1)"
if [ -f "$DIR/dist/client.js" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi
LOG="$LOG_DIR/webclient-build.log"
say "webclient: installing its npm packages and bundling it (log in $LOG)..."
(cd "$DIR" && npm ci --no-audit --no-fund && npm run build) >"$LOG" 2>&1 \
    || { tail -n 20 "$LOG" >&2; die "webclient build failed, see $LOG"; }
printf '%s' "$wanted" >"$STAMP"
say "webclient: built into webclient/dist"
