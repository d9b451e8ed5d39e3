#!/usr/bin/env bash
# Generator cost side by side: wrk, oha (if installed) and loadtest (closed loop over
# scenarios/bench-webhook.toml: the toaster request wrk and oha post, for 100,000 registration IDs,
# every response parsed and checked in full) interleaved for ROUNDS rounds, each for DURATION s with
# CONNS connections, against the same `loadtest webhook serve` pinned to core 0; every generator
# pinned to core 1. Each round runs the tools in a rotated order, so none always follows the same
# peer. Prints, per tool, the median req/s and the median generator CPU (user + sys) per request in
# µs with its range over the rounds, then the ratios loadtest/wrk and loadtest/oha of the medians
# (targets: CPU per request <= 1.0x wrk's and <= 0.8x oha's) and, for reading the noise, the
# median of the rounds' own ratios. Installs nothing: skips a missing peer with a message.
#
#   bash benches/vs-wrk.sh            # ROUNDS=7 DURATION=6 CONNS=64 by default (7 rounds: the median
#                                     # of 5 moved by up to 0.1x between runs of the same build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-6}
CONNS=${CONNS:-64}
command -v taskset >/dev/null || { echo "skip: taskset is not available"; exit 0; }
[ "$(nproc)" -ge 2 ] || { echo "skip: needs 2 cores"; exit 0; }
have_wrk=1; command -v wrk >/dev/null || { have_wrk=0; echo "skip wrk: not installed (apt-get install wrk)"; }
have_oha=1; command -v oha >/dev/null || { have_oha=0; echo "skip oha: not installed (cargo install oha)"; }
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

python3 -c 'import json,re,sys; b=re.search(r"wrk.body = (.*)$", open(sys.argv[1]).read(), re.M).group(1); print(json.loads(json.dumps(eval(b))))' "$tmp/post.lua" >"$tmp/body.json"

# One generator run: its CPU (user + sys, from wait4's rusage) and its answered requests.
cat >"$tmp/measure.py" <<'PY'
import json, os, re, subprocess, sys, time
tool, tmp = sys.argv[1], sys.argv[2]
url, conns, dur, binary = os.environ["URL"], os.environ["CONNS"], os.environ["DURATION"], os.environ["BIN"]
pin = ["taskset", "-c", "1"]
if tool == "wrk":
    cmd = pin + ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "-s", f"{tmp}/post.lua", url]
elif tool == "oha":
    cmd = pin + ["oha", "--no-tui", "--output-format", "json", "-c", conns, "-z", f"{dur}s", "-m", "POST",
                 "-H", "Content-Type: application/json; charset=utf-8", "-D", f"{tmp}/body.json", url]
else:
    cmd = pin + [binary, "run", "scenarios/bench-webhook.toml", "--url", url, "--rate", "max", "--connections", conns,
                 "--duration", f"{dur}s", "--no-progress", "--thresholds", "counts", "--out", f"{tmp}/lt"]
t0 = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = p.stdout.read().decode(errors="replace")
_, status, ru = os.wait4(p.pid, 0)
wall = time.time() - t0
cpu = ru.ru_utime + ru.ru_stime
checked = ""
if tool == "wrk":
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    checked = f"non-2xx {errors.group(1) if errors else 0}, bodies not checked"
elif tool == "oha":
    try:
        j = json.loads(out)
    except ValueError:
        print(json.dumps({"skip": "oha gave no JSON (an older oha without --output-format?)"})); sys.exit()
    n = sum(j.get("statusCodeDistribution", {}).values())
    checked = "status codes only"
else:
    s = json.load(open(f"{tmp}/lt/summary.json"))
    n = s["requests"]["completed"]
    checked = f"every answer checked: {s['expectations']['passed']} met, {s['expectations']['failed']} unmet"
secs = float(dur)
print(json.dumps({"rps": n / secs, "cpu_us": cpu / max(n, 1) * 1e6, "n": n, "wall": wall, "checked": checked}))
PY

tools="loadtest"
[ $have_wrk = 1 ] && tools="wrk $tools"
[ $have_oha = 1 ] && tools="$tools oha"
: >"$tmp/results.jsonl"
for round in $(seq "$ROUNDS"); do
  order=$(python3 -c 'import sys; t=sys.argv[2:]; k=int(sys.argv[1]) % len(t); print(" ".join(t[k:] + t[:k]))' "$round" $tools)
  for tool in $order; do
    rm -rf "$tmp/lt"
    r=$(URL="$url" CONNS="$CONNS" DURATION="$DURATION" BIN="$BIN" python3 "$tmp/measure.py" "$tool" "$tmp")
    echo "round $round $tool: $r"
    echo "{\"tool\": \"$tool\", \"round\": $round, \"r\": $r}" >>"$tmp/results.jsonl"
  done
done
python3 - "$tmp/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for tool in dict.fromkeys(r["tool"] for r in rows):
    rs = [r["r"] for r in rows if r["tool"] == tool and "rps" in r["r"]]
    if not rs:
        continue
    med[tool] = (statistics.median(x["rps"] for x in rs), statistics.median(x["cpu_us"] for x in rs))
    lo, hi = min(x["cpu_us"] for x in rs), max(x["cpu_us"] for x in rs)
    print(f"{tool:9} median {med[tool][0]:9.0f} req/s  {med[tool][1]:6.2f} µs generator CPU per request"
          f" (rounds {lo:.2f}-{hi:.2f})  ({rs[-1]['checked']})")
cpu = {(r["tool"], r["round"]): r["r"]["cpu_us"] for r in rows if "cpu_us" in r["r"]}
lt = med.get("loadtest")
for peer, target in (("wrk", 1.0), ("oha", 0.8)):
    if lt and peer in med:
        ratio = lt[1] / med[peer][1]
        paired = [cpu[("loadtest", k)] / cpu[(peer, k)] for (t, k) in cpu if t == peer and ("loadtest", k) in cpu]
        print(f"loadtest/{peer}: CPU per request {ratio:.2f}x (target <= {target}x), req/s {lt[0] / med[peer][0]:.2f}x"
              f"; per round {statistics.median(paired):.2f}x median, {min(paired):.2f}-{max(paired):.2f}")
PY
