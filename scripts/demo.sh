#!/usr/bin/env bash
# The whole chain on this machine, without Docker: Mosquitto with the project's broker
# configuration, the Twinzo stand-in, the bridge, and a simulated fleet of 5 robots sending
# 2 status messages a second each. Prints the dashboard's URL; Ctrl-C stops everything.
#
# Usage: scripts/demo.sh [OPTIONS]
#
#   --duration SECS   stop by itself after SECS seconds (for CI); default: run until Ctrl-C
#   --mqtt-port N     broker's MQTT port            (default: a free port)
#   --ws-port N       broker's WebSocket port       (default: a free port)
#   --http-port N     bridge's dashboard and API    (default: a free port)
#   --stub-port N     Twinzo stand-in               (default: a free port)
#   --keep-logs       keep the temporary directory (logs, data) after a clean stop
#
# Environment:
#   TWINZO_BRIDGE_BIN  run this twinzo-bridge binary instead of building one
#   DEMO_PROFILE       cargo profile to build: release (default) or debug
#
# Needs mosquitto (Debian: apt-get install mosquitto) and curl. Every password is random and
# lives only in the temporary directory, which is removed on a clean stop; after a failure it
# is kept, with the logs, and its path printed.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
robots=5
rate=2
ready_timeout=60

duration=''
mqtt_port=''
ws_port=''
http_port=0
stub_port=0
keep_logs=false

say() { echo "demo: $*" >&2; }

fail() {
    say "$1"
    exit "${2:-1}"
}

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

check_port() {
    case $2 in
        '' | *[!0-9]*) fail "$1 needs a port number, got '$2'" 64 ;;
    esac
    if [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
        fail "$1 must be between 1 and 65535" 64
    fi
}

while [ "$#" -gt 0 ]; do
    [ "$1" = -h ] || [ "$1" = --help ] || [ "$1" = --keep-logs ] || [ "$#" -ge 2 ] \
        || fail "$1 needs a value (see --help)" 64
    case $1 in
        --duration)
            case $2 in
                '' | *[!0-9]* | 0) fail "--duration needs a whole number of seconds above 0" 64 ;;
            esac
            duration=$2
            shift
            ;;
        --mqtt-port | --ws-port | --http-port | --stub-port)
            check_port "$1" "$2"
            case $1 in
                --mqtt-port) mqtt_port=$2 ;;
                --ws-port) ws_port=$2 ;;
                --http-port) http_port=$2 ;;
                --stub-port) stub_port=$2 ;;
            esac
            shift
            ;;
        --keep-logs) keep_logs=true ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) fail "unknown argument: $1 (see --help)" 64 ;;
    esac
    shift
done

# --- Tools -----------------------------------------------------------------------------------
# Debian installs the broker as /usr/sbin/mosquitto, Homebrew in its sbin: directories a
# user's PATH often lacks.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/opt/homebrew/sbin"
command -v mosquitto >/dev/null 2>&1 \
    || fail "mosquitto is not installed: sudo apt-get install mosquitto (Debian, Ubuntu) or brew install mosquitto (macOS)"
command -v mosquitto_passwd >/dev/null 2>&1 \
    || fail "mosquitto_passwd is not installed: it comes with the mosquitto package"
command -v curl >/dev/null 2>&1 || fail "curl is not installed: sudo apt-get install curl"

if [ -n "${TWINZO_BRIDGE_BIN:-}" ]; then
    bin=$TWINZO_BRIDGE_BIN
    [ -x "$bin" ] || fail "TWINZO_BRIDGE_BIN is not an executable file: $bin"
else
    command -v cargo >/dev/null 2>&1 || fail "cargo is not installed: see https://rustup.rs"
    profile=${DEMO_PROFILE:-release}
    case $profile in
        release) build_flags=(--release) ;;
        debug) build_flags=() ;;
        *) fail "DEMO_PROFILE must be release or debug, got '$profile'" 64 ;;
    esac
    say "building twinzo-bridge ($profile)"
    (cd "$repo_root" && cargo build --locked -p twinzo-bridge ${build_flags[@]+"${build_flags[@]}"})
    target_dir=${CARGO_TARGET_DIR:-target}
    case $target_dir in
        /*) ;;
        *) target_dir=$repo_root/$target_dir ;;
    esac
    bin=$target_dir/$profile/twinzo-bridge
    [ -x "$bin" ] || fail "cargo build did not leave a binary at $bin"
fi

# --- Temporary directory and cleanup ---------------------------------------------------------
tmp=$(mktemp -d)
chmod 0700 "$tmp"

names=()
pids=()
stub_url=''

# Stops the processes in the reverse order of their start, each with SIGTERM and up to 15 s to
# flush (the bridge needs its grace period, Mosquitto saves its database), then SIGKILL.
stop_all() {
    local i pid waited
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        waited=0
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "${names[i]} did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$stub_url" ]; then
        local stats
        if stats=$(curl -fsS --max-time 2 "$stub_url/_stub/stats" 2>/dev/null); then
            say "twinzo stand-in stats: $stats"
        fi
    fi
    stop_all
    # A stop by Ctrl-C (130) or SIGTERM (143) is as clean as the end of --duration.
    case $status in
        0 | 130 | 143) $keep_logs || rm -rf "$tmp" ;;
    esac
    [ ! -d "$tmp" ] || say "logs and data kept in $tmp"
    say "stopped"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ctrl-C signals the terminal's whole process group. Each process gets a session of its own
# (setsid, where there is one), so that only this script sees it and stops them in order.
detach=()
if command -v setsid >/dev/null 2>&1; then
    detach=(setsid)
fi

# Starts NAME in the background with its output in $tmp/NAME.log.
start() {
    local name=$1
    shift
    # ${a[@]+...}: an empty array is "unbound" to set -u in bash before 4.4.
    ${detach[@]+"${detach[@]}"} "$@" >"$tmp/$name.log" 2>&1 &
    names+=("$name")
    pids+=("$!")
}

# Whether the last process started is still running.
alive() {
    kill -0 "${pids[${#pids[@]} - 1]}" 2>/dev/null
}

died() {
    say "$1 exited; the end of $tmp/$1.log:"
    tail -n 20 "$tmp/$1.log" >&2 || true
    exit 1
}

# The address in the first `LINE ... addr=HOST:PORT` log line of NAME, waiting up to 20 s.
logged_addr() {
    local name=$1 line=$2 addr i
    for ((i = 0; i < 200; i++)); do
        addr=$(grep -m 1 "$line" "$tmp/$name.log" 2>/dev/null | grep -o 'addr=[^ ]*' | cut -d= -f2 || true)
        if [ -n "$addr" ]; then
            printf '%s' "$addr"
            return 0
        fi
        alive || died "$name"
        sleep 0.1
    done
    fail "$name did not report its address within 20 s (see $tmp/$name.log)"
}

accepts_tcp() {
    (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

random_port() {
    local port
    while :; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        accepts_tcp "$port" || break
    done
    printf '%s' "$port"
}

random_password() {
    local value
    value=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c 1-32)
    [ "${#value}" -eq 32 ] || fail "could not read /dev/urandom"
    printf '%s' "$value"
}

# --- Credentials (throwaway, never printed) --------------------------------------------------
publisher_user=ati-fleet
publisher_pass=$(random_password)
bridge_user=twinzo-bridge
bridge_pass=$(random_password)
stub_pass=$(random_password)
(
    umask 077
    cat >"$tmp/credentials.env" <<EOF
# Throwaway credentials of this demo run.
MQTT_USERNAME=$publisher_user
MQTT_PASSWORD=$publisher_pass
MQTT_BRIDGE_USERNAME=$bridge_user
MQTT_BRIDGE_PASSWORD=$bridge_pass
TWINZO_STUB_DEVICE_PASSWORD=$stub_pass
EOF
)

# --- Broker ----------------------------------------------------------------------------------
# With ports of our own choosing another process may take one first: Mosquitto then exits,
# and we try again with other ports.
mkdir -p "$tmp/broker-data"
for attempt in 1 2 3; do
    mqtt=${mqtt_port:-$(random_port)}
    ws=${ws_port:-$(random_port)}
    [ "$mqtt" != "$ws" ] || continue
    env MQTT_USERNAME="$publisher_user" MQTT_PASSWORD="$publisher_pass" \
        MQTT_BRIDGE_USERNAME="$bridge_user" MQTT_BRIDGE_PASSWORD="$bridge_pass" \
        MQTT_PORT="$mqtt" MQTT_WS_PORT="$ws" MQTT_PUBLISH_TOPICS='ati/#,ati_fm/#' \
        MOSQUITTO_DATA_DIR="$tmp/broker-data" MOSQUITTO_RUN_USER="$(id -un)" \
        sh "$repo_root/mosquitto/render-config.sh" "$tmp/broker-config"
    start broker mosquitto -c "$tmp/broker-config/mosquitto.conf"
    up=false
    for ((i = 0; i < 100; i++)); do
        alive || break
        if grep -qs ' running' "$tmp/broker.log" && accepts_tcp "$mqtt" && accepts_tcp "$ws"; then
            up=true
            break
        fi
        sleep 0.1
    done
    $up && break
    if alive; then
        fail "mosquitto did not open its ports within 10 s (see $tmp/broker.log)"
    fi
    last=$((${#pids[@]} - 1))
    wait "${pids[last]}" 2>/dev/null || true
    unset "pids[$last]" "names[$last]"
    if [ -n "$mqtt_port" ] && [ -n "$ws_port" ] || [ "$attempt" -eq 3 ]; then
        died broker
    fi
    mv "$tmp/broker.log" "$tmp/broker-attempt-$attempt.log"
done

# --- Twinzo stand-in, bridge, simulator ------------------------------------------------------
# The password goes in a file, not on the command line where any local user could read it.
(
    umask 077
    cat >"$tmp/stub.toml" <<EOF
client = "demo"
device_globs = ["sim-*", "smoke-*"]
device_password = "$stub_pass"
EOF
)
start stub "$bin" stub --listen "127.0.0.1:$stub_port" --config "$tmp/stub.toml"
stub_url=http://$(logged_addr stub 'stub listening')

# The bridge reads only the variables set here: any BRIDGE_ or SIM_ variable of the caller's
# environment would change the demo, so they are removed.
clean_env=(env)
while IFS= read -r var; do
    case $var in
        BRIDGE_* | SIM_* | PORT) clean_env+=(-u "$var") ;;
    esac
done < <(compgen -e)

start bridge "${clean_env[@]}" \
    BRIDGE_MQTT__URL="ws://127.0.0.1:$ws/mqtt" \
    BRIDGE_MQTT__USERNAME="$bridge_user" \
    BRIDGE_MQTT__PASSWORD="$bridge_pass" \
    BRIDGE_MQTT__CLIENT_ID=twinzo-bridge-demo \
    BRIDGE_TWINZO__BASE_URL="$stub_url" \
    BRIDGE_TWINZO__AUTH=device \
    BRIDGE_TWINZO__CLIENT=demo \
    BRIDGE_TWINZO__DEVICE_PASSWORD="$stub_pass" \
    BRIDGE_TWINZO__SECTOR_ID=1 \
    BRIDGE_HTTP__LISTEN="127.0.0.1:$http_port" \
    BRIDGE_OUTBOX__PATH="$tmp/outbox.redb" \
    BRIDGE_LOG__FORMAT=text \
    BRIDGE_SHUTDOWN__GRACE_SECS=5 \
    "$bin" run
bridge_url=http://$(logged_addr bridge 'http listening')

start simulator "${clean_env[@]}" \
    SIM_MQTT_USERNAME="$publisher_user" SIM_MQTT_PASSWORD="$publisher_pass" \
    "$bin" simulate --url "mqtt://127.0.0.1:$mqtt" --robots "$robots" --rate "$rate"

say "waiting for $bridge_url/ready"
for ((i = 0; i < ready_timeout * 10; i++)); do
    for j in "${!pids[@]}"; do
        kill -0 "${pids[j]}" 2>/dev/null || died "${names[j]}"
    done
    curl -fsS --max-time 2 -o /dev/null "$bridge_url/ready" 2>/dev/null && break
    sleep 0.1
done
curl -fsS --max-time 2 -o /dev/null "$bridge_url/ready" 2>/dev/null \
    || fail "the bridge was not ready within $ready_timeout s (see $tmp/bridge.log)"

# --- Running ---------------------------------------------------------------------------------
pid_list=''
for j in "${!pids[@]}"; do
    pid_list+="${names[j]}=${pids[j]} "
done
echo "demo: dashboard  $bridge_url/"
echo "demo: stub       $stub_url/_stub/accepted"
echo "demo: broker     mqtt://127.0.0.1:$mqtt  ws://127.0.0.1:$ws/mqtt"
echo "demo: accounts   $tmp/credentials.env"
echo "demo: logs       $tmp/broker.log $tmp/stub.log $tmp/bridge.log $tmp/simulator.log"
echo "demo: pids       ${pid_list% }"
if [ -n "$duration" ]; then
    echo "demo: stopping by itself in $duration s"
else
    echo "demo: Ctrl-C stops everything"
fi

started=$SECONDS
while [ -z "$duration" ] || [ $((SECONDS - started)) -lt "$duration" ]; do
    for j in "${!pids[@]}"; do
        kill -0 "${pids[j]}" 2>/dev/null || died "${names[j]}"
    done
    sleep 1
done
