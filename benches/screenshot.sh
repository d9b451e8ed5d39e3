#!/usr/bin/env bash
# Renders a run's report.html and a capacity plan's report.html in headless Chromium (Debian's
# `chromium`; `apt-get install chromium`) and writes PNG screenshots, so a person can look at
# them: target/screenshots/{report,plan}.png. Loopback only; a few seconds of load.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)"; exit 1; }
cargo build --release --locked --quiet
out=target/screenshots
rm -rf "$out" && mkdir -p "$out"
target/release/loadtest run scenarios/contoso.toml --count 6000 --rate 2000 --no-progress --out "$out/run" > /dev/null
target/release/loadtest plan scenarios/contoso.toml --start 1000 --max 8000 --hold 2s --out "$out/plan" > /dev/null
for name in run plan; do
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --window-size=1200,2400 \
    --screenshot="$PWD/$out/$name.png" "file://$PWD/$out/$name/report.html" 2>/dev/null
  echo "$out/$name.png"
done
