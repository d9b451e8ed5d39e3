#!/usr/bin/env bash
# Generator ceiling: loadtest (closed loop, every response parsed and checked) vs wrk, same
# duration, same 64 connections, against the same `loadtest webhook serve` process pinned to core
# 0; each generator pinned to core 1. Prints both rates and their ratio. Installs nothing: skips
# when wrk is missing (Debian package `wrk`).
#
#   bash benches/vs-wrk.sh            # DURATION=10 CONNS=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
command -v wrk >/dev/null || { echo "skip: wrk is not installed (apt-get install wrk)"; exit 0; }
command -v taskset >/dev/null || { echo "skip: taskset is not available"; exit 0; }
[ "$(nproc)" -ge 2 ] || { echo "skip: needs 2 cores"; exit 0; }
cargo build --release --quiet
BIN=target/release/loadtest
tmp=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$tmp"' EXIT

taskset -c 0 "$BIN" webhook serve --addr 127.0.0.1:0 --policy tutorial-current >"$tmp/serve.log" &
server=$!
for _ in $(seq 50); do grep -q http:// "$tmp/serve.log" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$tmp/serve.log")
url="$base/api/HttpTrigger1?code=bench"

# wrk posts the body DPS would send for one toaster (the seed 002 request, first registration).
cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json; charset=utf-8"
wrk.body = '{"enrollmentGroup":{"enrollmentGroupId":"contoso-custom-allocated-devices","attestation":{"type":"symmetricKey"},"capabilities":{"iotEdge":false},"etag":"\\"0000f176-0000-0700-0000-62eaad1e0000\\"","provisioningStatus":"enabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},"createdDateTimeUtc":"2022-08-03T17:15:10.8464255Z","lastUpdatedDateTimeUtc":"2022-08-03T17:15:10.8464255Z","allocationPolicy":"custom","iotHubs":["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"],"customAllocationDefinition":{"webhookUrl":"https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?****","apiVersion":"2021-10-01"}},"deviceRuntimeContext":{"registrationId":"breakroom499-contoso-tstrsd-007","symmetricKey":{},"payload":{"MyDeviceFirmwareVersion":"12.0.2.5","MyDeviceProvisioningVersion":"1.0.0.0"}},"linkedHubs":["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"]}'
LUA

taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$tmp/post.lua" "$url" >"$tmp/wrk.txt"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")

set +e
taskset -c 1 "$BIN" run scenarios/contoso.toml --url "$url" --rate max --connections "$CONNS" \
  --duration "${DURATION}s" --no-progress --out "$tmp/lt" >"$tmp/lt.txt"
code=$?
set -e
lt_rps=$(python3 -c "import json;print(json.load(open('$tmp/lt/summary.json'))['throughput_per_s'])")
verdict=$(python3 -c "import json;s=json.load(open('$tmp/lt/summary.json'));print(s['verdict'], s['expectations'])")

echo "wrk      -t1 -c$CONNS ${DURATION}s: $wrk_rps req/s (no validation)"
echo "loadtest --rate max --connections $CONNS ${DURATION}s: $lt_rps req/s (exit $code, $verdict)"
python3 -c "print(f'ratio loadtest/wrk: {float($lt_rps)/float($wrk_rps):.3f} (target >= 0.9)')"
