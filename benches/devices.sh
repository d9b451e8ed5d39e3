#!/usr/bin/env bash
# Device-registration benchmarks (the numbers of the registration-drivers issue), release build:
#   1. scenarios/bench-mqtt.toml as shipped: plain-TCP MQTT, 5,000/s for 30 s, driver + emulator
#      + reference webhook in one process, every registration checked;
#   2. the same over TLS (the emulator's generated CA), 3,000/s for 10 s;
#   3. the same over HTTPS, 3,000/s for 10 s (polls 20 ms after each 202);
#   4. 10,000 devices connected at once (the emulator holds every registration 5 s) against a
#      separate `loadtest dps serve` process (one process cannot hold 2 x 10,000 sockets under a
#      20,000 file-descriptor limit): peak RSS of the driver and of the emulator.
# Prints throughput, latency and peak RSS (GNU time). Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/loadtest
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${emu:-}" ] && kill "$emu" 2>/dev/null || true' EXIT
show() { grep -E "throughput|latency \(|connect \(|first response|verdict|peak|warning" || true; }

echo "== 1. MQTT, plain TCP, 5,000/s for 30 s"
/usr/bin/time -f "peak RSS %M KB" "$bin" run scenarios/bench-mqtt.toml --no-progress --out "$tmp/r1" 2>&1 | show

echo "== 2. MQTT over TLS, 3,000/s for 10 s"
sed -e 's/^tls = "plain".*/tls = "emulator"/' scenarios/bench-mqtt.toml > "$tmp/tls.toml"
/usr/bin/time -f "peak RSS %M KB" "$bin" run "$tmp/tls.toml" --no-progress --rate 3000 --duration 10s --out "$tmp/r2" 2>&1 | show

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
