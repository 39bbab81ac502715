#!/usr/bin/env bash
# End-to-end check of a deployment: publishes one status message of a test robot to the broker
# as the fleet's account, then waits until the bridge's /api/status shows that robot again.
#
# Usage: scripts/smoke.sh BROKER_URL
#   scripts/smoke.sh wss://NAME.up.railway.app/mqtt
#   scripts/smoke.sh mqtt://HOST.proxy.rlwy.net:PORT      (TCP proxy: the password goes in clear)
#
# Environment:
#   MQTT_USERNAME, MQTT_PASSWORD  the fleet's (publisher) account on the broker
#   BRIDGE_URL                    the bridge's base URL, e.g. https://BRIDGE.up.railway.app
#   BRIDGE_TOKEN                  the bridge's BRIDGE_HTTP__AUTH_TOKEN, when one is set
#   SMOKE_TIMEOUT                 seconds to wait for the robot to show up (default: 30)
#   TWINZO_BRIDGE_BIN             the twinzo-bridge binary that publishes (default: the one on
#                                 PATH, else target/release or target/debug of this repository)
#
# The robot is smoke-01 on topic ati/smoke-01/status, published by `twinzo-bridge simulate`
# (Debian's mosquitto_pub cannot speak WebSocket) with a fresh message_id and timestamp. Steps:
#   1 bridge   GET BRIDGE_URL/api/status answers, and what it last saw of smoke-01
#   2 publish  the broker acknowledges the message (QoS 1)
#   3 confirm  /api/status shows smoke-01 seen after step 1
# Exit status: 0 when all pass, the number of the failed step otherwise, 64 for bad usage.
#
# The bridge forwards smoke-01 like any robot: unless Twinzo has such a device (or
# BRIDGE_DEVICES maps it to one), its location ends up in the dead letters. With
# BRIDGE_TWINZO__UNKNOWN_DEVICES=reject the bridge drops it before /api/status sees it, and
# step 3 fails: map smoke-01 in BRIDGE_DEVICES first.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
robot=smoke-01

usage_error() {
    echo "smoke: $1" >&2
    echo "usage: scripts/smoke.sh BROKER_URL   (see the top of the script)" >&2
    exit 64
}

step_fail() {
    echo "smoke: FAIL at step $1 ($2): $3" >&2
    exit "$1"
}

[ "$#" -eq 1 ] || usage_error "expected one argument, the broker URL"
case $1 in
    -h | --help)
        sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    ws://* | wss://* | mqtt://* | mqtts://*) broker_url=$1 ;;
    *) usage_error "the broker URL must start with ws://, wss://, mqtt:// or mqtts://" ;;
esac
[ -n "${MQTT_USERNAME:-}" ] || usage_error "MQTT_USERNAME is not set (the fleet's account)"
[ -n "${MQTT_PASSWORD:-}" ] || usage_error "MQTT_PASSWORD is not set"
[ -n "${BRIDGE_URL:-}" ] || usage_error "BRIDGE_URL is not set (the bridge's base URL)"
bridge_url=${BRIDGE_URL%/}
timeout=${SMOKE_TIMEOUT:-30}
case $timeout in
    '' | *[!0-9]* | 0) usage_error "SMOKE_TIMEOUT must be a whole number of seconds above 0" ;;
esac

command -v curl >/dev/null 2>&1 || usage_error "curl is not installed: sudo apt-get install curl"
command -v jq >/dev/null 2>&1 || usage_error "jq is not installed: sudo apt-get install jq"

if [ -n "${TWINZO_BRIDGE_BIN:-}" ]; then
    bin=$TWINZO_BRIDGE_BIN
elif command -v twinzo-bridge >/dev/null 2>&1; then
    bin=$(command -v twinzo-bridge)
elif [ -x "$repo_root/target/release/twinzo-bridge" ]; then
    bin=$repo_root/target/release/twinzo-bridge
else
    bin=$repo_root/target/debug/twinzo-bridge
fi
[ -x "$bin" ] || usage_error "no twinzo-bridge binary: run cargo build --release, or set TWINZO_BRIDGE_BIN"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The token goes to curl through its standard input, never on a command line.
curl_auth=''
if [ -n "${BRIDGE_TOKEN:-}" ]; then
    curl_auth="header = \"Authorization: Bearer $BRIDGE_TOKEN\""
fi

# Fetches /api/status into $tmp/status.json; prints the HTTP status, 000 when none came.
fetch_status() {
    curl -sS --max-time 10 -o "$tmp/status.json" -w '%{http_code}' -K - \
        "$bridge_url/api/status" <<<"$curl_auth" 2>"$tmp/curl.err" || true
}

# When the bridge last saw the robot (ms since the epoch), 0 when never.
last_seen() {
    jq -r --arg d "$robot" \
        '[.robots[]? | select(.device == $d) | .last_seen_ms][0] // 0' "$tmp/status.json"
}

# --- 1 bridge --------------------------------------------------------------------------------
code=$(fetch_status)
case $code in
    200) ;;
    000) step_fail 1 bridge "no answer from $bridge_url/api/status: $(head -n 1 "$tmp/curl.err")" ;;
    401) step_fail 1 bridge "$bridge_url/api/status answered 401: set BRIDGE_TOKEN to the bridge's BRIDGE_HTTP__AUTH_TOKEN" ;;
    *) step_fail 1 bridge "$bridge_url/api/status answered HTTP $code" ;;
esac
before=$(last_seen 2>/dev/null) || step_fail 1 bridge "$bridge_url/api/status did not answer with the bridge's status JSON"
connected=$(jq -r '.broker.connected' "$tmp/status.json")
echo "smoke: [1/3] bridge   ok: $bridge_url/api/status answers (broker connected: $connected)"

# --- 2 publish -------------------------------------------------------------------------------
# The password reaches the simulator through its environment, not its command line.
if ! SIM_MQTT_USERNAME=$MQTT_USERNAME SIM_MQTT_PASSWORD=$MQTT_PASSWORD \
    "$bin" simulate --url "$broker_url" --robots 1 --count 1 --robot-prefix smoke- \
    --rate 1 --connect-timeout 15 --drain-timeout 10 >"$tmp/publish.log" 2>&1; then
    reason=$(grep -v '^[[:space:]]*$' "$tmp/publish.log" | tail -n 1 || true)
    step_fail 2 publish "the broker at $broker_url did not acknowledge the message: ${reason:-no output}"
fi
echo "smoke: [2/3] publish  ok: ati/$robot/status acknowledged by $broker_url"

# --- 3 confirm -------------------------------------------------------------------------------
started=$SECONDS
while :; do
    code=$(fetch_status)
    if [ "$code" = 200 ] && seen=$(last_seen 2>/dev/null) && [ "$seen" -gt "$before" ]; then
        break
    fi
    if [ $((SECONDS - started)) -ge "$timeout" ]; then
        step_fail 3 confirm "$robot did not show up in $bridge_url/api/status within $timeout s (last answer: HTTP $code); see the bridge's log and dashboard"
    fi
    sleep 1
done
summary=$(jq -r --arg d "$robot" '.robots[] | select(.device == $d)
    | "login \(.login), sector \(.sector_id), x \(.twinzo_x) mm, y \(.twinzo_y) mm"' \
    "$tmp/status.json")
twinzo=$(jq -r 'if .twinzo.ok then "ok" else "not ok: \(.twinzo.last_error // "no answer yet")" end' \
    "$tmp/status.json")
echo "smoke: [3/3] confirm  ok: the bridge saw $robot ($summary); Twinzo $twinzo"
echo "smoke: PASS"
