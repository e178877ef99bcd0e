#!/usr/bin/env bash
# Opens a page in headless Chromium and fails unless its inline script marked every image as loaded
# (<body data-status="ok">, evaluate/demo_page.py). Installs Debian's chromium first when it is not on PATH.
#   .ci/check_page.sh out/demo/quick/index.html [screenshot.png]
set -euo pipefail
page="$(realpath "${1:?usage: $0 PAGE.html [SCREENSHOT.png]}")"
[ -f "$page" ] || { echo "check_page: no page at $page; run the demo first" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends chromium
fi
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=10000)
log="$(mktemp)"
dom="$(chromium "${flags[@]}" --dump-dom "file://$page" 2>"$log")" || { cat "$log" >&2; exit 1; }
body="$(grep -o '<body[^>]*>' <<<"$dom" | head -n 1 || true)"
echo "check_page: $page: ${body:-no <body> in the dumped DOM}"
if [ "${2:-}" ]; then
  chromium "${flags[@]}" --window-size=1280,1600 --screenshot="$(realpath "$2")" "file://$page" 2>>"$log"
  echo "check_page: screenshot $2"
fi
if [[ "$body" != *'data-status="ok"'* ]]; then
  echo "check_page: want <body data-status=\"ok\"> (every image loaded); chromium's messages:" >&2
  cat "$log" >&2
  exit 1
fi
rm -f "$log"
