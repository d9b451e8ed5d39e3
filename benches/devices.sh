#!/usr/bin/env bash
# Device-registration benchmarks (the numbers of the device-fleet issues), release build:
#   1. scenarios/bench-mqtt.toml as shipped: plain-TCP MQTT, 5,000/s for 60 s, driver + emulator
#      + reference webhook in one process, every registration checked;
#   2. the same over TLS (the emulator's generated CA), 3,000/s for 60 s;
#   3. the same over HTTPS, 3,000/s for 10 s (polls 20 ms after each 202);
#   4. 10,000 devices connected at once (the emulator holds every registration 5 s) against a
#      separate `loadtest dps serve` process (one process cannot hold 2 x 10,000 sockets under a
#      20,000 file-descriptor limit): peak RSS of the driver and of the emulator;
#   5. CPU per registration of the driver, the emulator and the webhook as three pinned processes;
#   6. the highest of 8,000, 9,000, 9,500 and 10,000/s that holds for 60 s in one process;
#   7. twice that rate for 20 s against an emulator admitting the rate that held: 429s with
#      retry-after (or the generator-bound warning), never connect timeouts, every request
#      accounted for.
# Prints throughput, latency, CPU and peak RSS (GNU time). Loopback only; bounded in time (about
# 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/loadtest
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${emu:-}" ] && kill "$emu" 2>/dev/null || true' EXIT
show() { grep -E "throughput|latency \(|connect \(|first response|verdict|peak|warning|requests:|429 answers|connect attempts" || true; }
# CPU per registration from GNU time's "cpu U S" line and the run's summary.
per_reg() { python3 - "$1" "$2" <<'PY'
import json, re, sys
t = open(sys.argv[1]).read()
m = re.search(r"cpu ([0-9.]+) ([0-9.]+)", t)
s = json.load(open(sys.argv[2] + "/summary.json"))["requests"]
n = max(s["completed"] + s["failed"] + s["timed_out"], 1)
if m:
    print(f"CPU {float(m.group(1)) + float(m.group(2)):.1f} s (user {m.group(1)}, sys {m.group(2)}): {(float(m.group(1)) + float(m.group(2))) / n * 1e6:.0f} µs per registration")
PY
}
TIME="peak RSS %M KB\ncpu %U %S"

echo "== 1. MQTT, plain TCP, 5,000/s for 60 s (target: 0 timeouts, 0 failures, p99 < 50 ms)"
/usr/bin/time -f "$TIME" "$bin" run scenarios/bench-mqtt.toml --no-progress --out "$tmp/r1" > "$tmp/r1.txt" 2>&1 || true
show < "$tmp/r1.txt"; per_reg "$tmp/r1.txt" "$tmp/r1"

echo "== 2. MQTT over TLS, 3,000/s for 60 s (target: 0 timeouts)"
sed -e 's/^tls = "plain".*/tls = "emulator"/' scenarios/bench-mqtt.toml > "$tmp/tls.toml"
/usr/bin/time -f "$TIME" "$bin" run "$tmp/tls.toml" --no-progress --rate 3000 --duration 60s --out "$tmp/r2" > "$tmp/r2.txt" 2>&1 || true
show < "$tmp/r2.txt"; per_reg "$tmp/r2.txt" "$tmp/r2"

echo "== 3. HTTPS, 3,000/s for 10 s"
sed -e 's/^mode = "mqtt"/mode = "https"/' -e 's/^device_timeout = "30s"/device_timeout = "30s"\npoll_cap = "20ms"/' "$tmp/tls.toml" > "$tmp/https.toml"
/usr/bin/time -f "peak RSS %M KB" "$bin" run "$tmp/https.toml" --no-progress --rate 3000 --duration 10s --out "$tmp/r3" 2>&1 | show

echo "== 4. 10,000 devices at once against a separate emulator process"
cat > "$tmp/emu.toml" <<TOML
name = "emulator-10k"
[target]
timeout = "30s"
[emulator]
assignment_delay = "5s"
retry_after = 2
[enrollment]
group_id = "contoso-custom-allocated-devices"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
[[devices]]
class = "unused"
id = "unused{n}"
count = 1
expect = { status = "assigned" }
TOML
"$bin" dps serve "$tmp/emu.toml" --mqtt 127.0.0.1:0 --mqtt-plain 127.0.0.1:0 --no-https --tls-dir "$tmp/tls" > "$tmp/emu.log" 2>/dev/null &
emu=$!
for _ in $(seq 50); do grep -q "MQTT (plain)" "$tmp/emu.log" && break; sleep 0.1; done
addr=$(grep "MQTT (plain)" "$tmp/emu.log" | awk '{print $3}')
sed -e "s/^tls = \"plain\".*/tls = \"plain\"\nendpoint = \"$addr\"/" -e 's/^immediate = true.*//' -e 's/^max_in_flight = 10000/max_in_flight = 12000/' scenarios/bench-mqtt.toml > "$tmp/10k.toml"
/usr/bin/time -f "driver peak RSS %M KB" "$bin" run "$tmp/10k.toml" --no-progress --count 10000 --rate 5000 --out "$tmp/r4" 2>&1 | show
echo "emulator peak RSS $(awk '/VmHWM/ {print $2, $3}' /proc/$emu/status)"

echo "== 5. Where the CPU goes: driver, emulator and webhook as three pinned processes"
# The webhook and the emulator share core 0, the driver has core 1; 2,000/s for 20 s over plain
# TCP. CPU (user + sys) of each process from /proc/<pid>/stat, per registration that ended.
kill "$emu" 2>/dev/null || true; emu=
taskset -c 0 "$bin" webhook serve --addr 127.0.0.1:0 --policy tutorial-current > "$tmp/hook.log" 2>/dev/null &
hook=$!
for _ in $(seq 50); do grep -q http:// "$tmp/hook.log" && break; sleep 0.1; done
hook_url=$(grep -o 'http://[0-9.:]*' "$tmp/hook.log")/api/HttpTrigger1
sed -e "s|^timeout = \"30s\"|timeout = \"30s\"\nurl = \"$hook_url\"|" -e 's/^assignment_delay.*//' -e 's/^retry_after = 2/retry_after = 1\nimmediate = true/' "$tmp/emu.toml" > "$tmp/emu5.toml"
taskset -c 0 "$bin" dps serve "$tmp/emu5.toml" --mqtt 127.0.0.1:0 --mqtt-plain 127.0.0.1:0 --no-https --tls-dir "$tmp/tls5" > "$tmp/emu5.log" 2>/dev/null &
emu=$!
for _ in $(seq 50); do grep -q "MQTT (plain)" "$tmp/emu5.log" && break; sleep 0.1; done
addr=$(grep "MQTT (plain)" "$tmp/emu5.log" | awk '{print $3}')
sed -e "s/^tls = \"plain\".*/tls = \"plain\"\nendpoint = \"$addr\"/" -e 's/^immediate = true.*//' scenarios/bench-mqtt.toml > "$tmp/split.toml"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
e0=$(ticks "$emu"); w0=$(ticks "$hook")
taskset -c 1 "$bin" run "$tmp/split.toml" --no-progress --rate 2000 --duration 20s --out "$tmp/r5" > "$tmp/r5.txt" 2>&1 &
drv=$!
d=0
while kill -0 "$drv" 2>/dev/null; do d=$(ticks "$drv" 2>/dev/null || echo "$d"); sleep 0.2; done
wait "$drv" || true
e1=$(ticks "$emu"); w1=$(ticks "$hook")
kill "$hook" 2>/dev/null || true
show < "$tmp/r5.txt"
python3 - "$tmp/r5/summary.json" "$d" "$((e1 - e0))" "$((w1 - w0))" "$hz" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = max(s["requests"]["completed"] + s["requests"]["failed"] + s["requests"]["timed_out"], 1)
hz = float(sys.argv[5])
for name, ticks in (("driver", sys.argv[2]), ("emulator", sys.argv[3]), ("webhook", sys.argv[4])):
    print(f"{name:9} {int(ticks) / hz:6.2f} s CPU, {int(ticks) / hz / n * 1e6:7.1f} µs per registration ({n} registrations)")
PY

echo "== 6. The highest rate that holds (60 s each, plain TCP): 0 timeouts, 0 failures, p99 < 50 ms"
held=0
for rate in 8000 9000 9500 10000; do
  "$bin" run scenarios/bench-mqtt.toml --no-progress --rate "$rate" --out "$tmp/r6-$rate" > /dev/null 2>&1 || true
  line=$(python3 - "$tmp/r6-$rate/summary.json" "$rate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["requests"]
p99 = s["latency_us"]["p99"] / 1000
holds = r["failed"] == 0 and r["timed_out"] == 0 and p99 < 50
print(f"{sys.argv[2]}/s: {r['completed']} completed, {r['failed']} failed, {r['timed_out']} timed out, p99 {p99:.1f} ms: {'holds' if holds else 'does not hold'}")
PY
)
  echo "$line"
  case "$line" in *": holds") held=$rate ;; esac
done
# No rate held: overload from the lowest tried.
[ "$held" -gt 0 ] || held=8000
over=$((2 * held))

echo "== 7. 2x overload: $over/s for 20 s, the emulator admitting $held registrations/s (the highest rate that held)"
# Beyond the ceiling the emulator answers 429 with retry-after (as DPS does) and devices retry;
# max_in_flight 9,000 keeps both ends of every connection within a 20,000 open-file limit.
sed -e "s/^immediate = true.*/immediate = true\nadmission = { registrations_per_second = $held, retry_after = 1 }/" \
    -e 's/^max_in_flight = 10000/max_in_flight = 9000/' scenarios/bench-mqtt.toml > "$tmp/overload.toml"
/usr/bin/time -f "$TIME" "$bin" run "$tmp/overload.toml" --no-progress --rate "$over" --duration 20s --out "$tmp/r7" > "$tmp/r7.txt" 2>&1 || true
show < "$tmp/r7.txt"
python3 - "$tmp/r7/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["requests"]
accounted = r["completed"] + r["failed"] + r["timed_out"] + r["not_sent"]
print(f"scheduled {r['scheduled']} = accounted {accounted}; 429 answers {s['phases']['throttled_429']}; connect timeouts {s['phases']['connect_timeouts']}")
PY
