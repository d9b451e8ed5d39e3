#!/usr/bin/env bash
# Open-loop accuracy and memory: `--rate 20000` for 10 s against `loadtest webhook serve` (core 0,
# generator on core 1): achieved rate vs target and schedule-lag p99; then the peak RSS of the
# generator after a 10 s and a 60 s run at the same rate (flat = no per-request storage).
#
#   bash benches/rate.sh              # RATE=20000 LONG=60 by default
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-20000}
LONG=${LONG:-60}
cargo build --release --quiet
BIN=target/release/loadtest
tmp=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
pin() { if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then exec taskset -c "$@"; else shift; exec "$@"; fi; }

(pin 0 "$BIN" webhook serve --addr 127.0.0.1:0 >"$tmp/serve.log") &
server=$!
for _ in $(seq 50); do grep -q http:// "$tmp/serve.log" 2>/dev/null && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.:]*' "$tmp/serve.log")/api/HttpTrigger1"

measure() { # duration label
  pin 1 "$BIN" run scenarios/contoso.toml --url "$url" --rate "$RATE" --duration "$1" --no-progress --out "$tmp/$2" >/dev/null &
  local pid=$! peak=0
  while kill -0 $pid 2>/dev/null; do
    rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.5
  done
  wait $pid || true
  python3 - "$tmp/$2/summary.json" "$RATE" "$peak" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); rate = float(sys.argv[2]); peak_kib = int(sys.argv[3])
tp = s["throughput_per_s"]; lag = s["schedule_lag_us"]; r = s["requests"]
print(f"{sys.argv[4]:>4} at {rate:.0f}/s: achieved {tp:.1f}/s ({100*(tp-rate)/rate:+.2f}%), "
      f"lag p99 {lag['p99']/1000:.3f} ms p99.9 {lag['p999']/1000:.3f} ms, latency p99 {s['latency_us']['p99']/1000:.3f} ms, "
      f"completed {r['completed']}/{r['scheduled']}, verdict {s['verdict']}, peak RSS {peak_kib/1024:.1f} MiB")
PY
}
measure 10s short
measure "${LONG}s" long
