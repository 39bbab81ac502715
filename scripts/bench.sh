#!/usr/bin/env bash
# The benchmark: real Mosquitto, the Twinzo stand-in with 50 ms latency, the release bridge
# with its outbox. Prints a Markdown table (ceiling, sustained rate, latency, RSS, CPU, drain).
# BENCH_SCALE=0.1 scripts/bench.sh runs a tenth of the sizes for a quick look; BENCH_LATENCY_MS
# (50), BENCH_BATCH_MS (1000) and BENCH_MODE (api_key or device) change the set-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in mosquitto mosquitto_passwd; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
        echo "bench.sh: $tool missing: apt-get install -y mosquitto mosquitto-clients" >&2
        exit 1
    }
done
exec cargo test --release --locked -p twinzo-bridge --features bench --test bench
