#!/usr/bin/env bash
# The Railway deployment of twinzo-bridge, as Railway CLI steps: two services from this
# repository, `broker` (Dockerfile.railway) and `bridge` (bridge/Dockerfile), each with a volume,
# the bridge reaching the broker over the private network. docs/railway.md explains each step.
#
# Usage: scripts/railway-setup.sh [--apply] [--tcp-proxy]
#
#   (default)    print every step; the CLI ones as commands to copy, the rest as instructions
#   --apply      run the CLI steps against the project this directory is linked to (run
#                `railway login` and `railway init` or `railway link` first), print the others
#   --tcp-proxy  also give the broker a TCP proxy for plain MQTT on 1883 (not encrypted)
#
# Values come from the environment (the names are those of .env.example):
#   MQTT_USERNAME (ati-fleet), MQTT_BRIDGE_USERNAME (twinzo-bridge), MQTT_PUBLISH_TOPICS
#   MQTT_PASSWORD, MQTT_BRIDGE_PASSWORD, BRIDGE_HTTP__AUTH_TOKEN   generated when unset
#   BRIDGE_TWINZO__BASE_URL (https://api.platform.twinzo.eu), BRIDGE_TWINZO__AUTH (device),
#   BRIDGE_TWINZO__SECTOR_ID (1), and for device mode BRIDGE_TWINZO__CLIENT and
#   BRIDGE_TWINZO__DEVICE_PASSWORD, for api_key mode BRIDGE_TWINZO__API_KEY,
#   BRIDGE_TWINZO__CLIENT_GUID and BRIDGE_TWINZO__BRANCH_GUID
#
# Secrets are never printed: commands show them as "$NAME". With --apply they are passed to
# `railway variables --set`, so they are briefly visible in this machine's process list.
# Only the CLI verbs login, init, link, up, variables, domain and tcp-proxy are used; whatever
# else is needed (services from the repository, volumes, config file path) is printed as an
# instruction for the dashboard.
set -euo pipefail

apply=false
tcp_proxy=false
while [ "$#" -gt 0 ]; do
    case $1 in
        --apply) apply=true ;;
        --tcp-proxy) tcp_proxy=true ;;
        -h | --help)
            sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "railway-setup: unknown argument: $1 (see --help)" >&2
            exit 64
            ;;
    esac
    shift
done

fail() {
    echo "railway-setup: $1" >&2
    exit 1
}

secrets=(MQTT_PASSWORD MQTT_BRIDGE_PASSWORD BRIDGE_HTTP__AUTH_TOKEN
    BRIDGE_TWINZO__DEVICE_PASSWORD BRIDGE_TWINZO__API_KEY)

is_secret() {
    local s
    for s in "${secrets[@]}"; do
        [ "$s" != "$1" ] || return 0
    done
    return 1
}

random_secret() {
    local value
    value=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c 1-32)
    [ "${#value}" -eq 32 ] || fail "could not read /dev/urandom"
    printf '%s' "$value"
}

# --- Values ----------------------------------------------------------------------------------
publisher_user=${MQTT_USERNAME:-ati-fleet}
bridge_user=${MQTT_BRIDGE_USERNAME:-twinzo-bridge}
topics=${MQTT_PUBLISH_TOPICS:-ati/#,ati_fm/#}
twinzo_url=${BRIDGE_TWINZO__BASE_URL:-https://api.platform.twinzo.eu}
twinzo_auth=${BRIDGE_TWINZO__AUTH:-device}
sector=${BRIDGE_TWINZO__SECTOR_ID:-1}
case $twinzo_auth in
    device) twinzo_needs=(BRIDGE_TWINZO__CLIENT BRIDGE_TWINZO__DEVICE_PASSWORD) ;;
    api_key) twinzo_needs=(BRIDGE_TWINZO__API_KEY BRIDGE_TWINZO__CLIENT_GUID BRIDGE_TWINZO__BRANCH_GUID) ;;
    *) fail "BRIDGE_TWINZO__AUTH must be device or api_key" ;;
esac

generated=()
if $apply; then
    command -v railway >/dev/null 2>&1 \
        || fail "the Railway CLI is not installed (npm install -g @railway/cli), or run without --apply to print the steps"
    missing=()
    for name in "${twinzo_needs[@]}"; do
        [ -n "${!name:-}" ] || missing+=("$name")
    done
    [ "${#missing[@]}" -eq 0 ] || fail "set ${missing[*]} in the environment first ($twinzo_auth mode)"
    for name in MQTT_PASSWORD MQTT_BRIDGE_PASSWORD BRIDGE_HTTP__AUTH_TOKEN; do
        if [ -z "${!name:-}" ]; then
            printf -v "$name" '%s' "$(random_secret)"
            generated+=("$name")
        fi
    done
fi

# --- Output helpers --------------------------------------------------------------------------
n=0
heading() {
    n=$((n + 1))
    echo
    echo "## $n. $1"
}

note() {
    echo "   $1"
}

manual() {
    echo "   [dashboard] $1"
}

# One argument as the printed command shows it: a secret as "NAME=$NAME", anything with
# shell characters single-quoted (Railway's ${{...}} references must reach it unexpanded).
shown() {
    local arg=$1 name=${1%%=*}
    if [ "$name" != "$arg" ] && is_secret "$name"; then
        printf '"%s=$%s"' "$name" "$name"
    elif [[ $arg =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
        printf '%s' "$arg"
    else
        printf "'%s'" "${arg//\'/\'\\\'\'}"
    fi
}

# Prints a Railway CLI command and, with --apply, runs it. Secret values are only ever in the
# arguments that are run, never in what is printed.
cli() {
    local line='  $' arg
    for arg in "$@"; do
        # One variable a line, so that the printed command stays readable and can be pasted.
        [ "$arg" != --set ] || line+=$' \\\n     '
        line+=" $(shown "$arg")"
    done
    echo "$line"
    if $apply; then
        "$@" || fail "step $n failed: railway $2"
    fi
}

# NAME=VALUE for `railway variables --set`; a secret's value is "$NAME" when printing only.
var() {
    local name=$1 value=${2-}
    if is_secret "$name" && ! $apply; then
        value="\$$name"
    fi
    printf '%s=%s' "$name" "$value"
}

# --- Steps -----------------------------------------------------------------------------------
if $apply; then
    echo "# Applying the Railway setup of twinzo-bridge to the linked project."
else
    echo "# Railway setup of twinzo-bridge: the steps, printed. Run with --apply to perform"
    echo "# the CLI ones. Secrets appear as \$NAME: export them first, for example"
    echo "#   export MQTT_PASSWORD=\"\$(head -c 96 /dev/urandom | base64 | tr -dc A-Za-z0-9 | cut -c 1-32)\""
    echo "# and the same for MQTT_BRIDGE_PASSWORD and BRIDGE_HTTP__AUTH_TOKEN."
fi

heading "Log in and pick the project"
note "railway login; then railway init (a new project) or railway link (an existing one),"
note "in this repository's root. --apply does neither: it works on the linked project."

heading "Create the services broker and bridge from this repository"
manual "New -> GitHub Repo -> this repository, twice; name the services exactly broker and"
manual "bridge (the bridge's variables refer to \${{broker.*}}). Without GitHub: New -> Empty"
manual "Service with those names, then deploy with railway up (step 11)."

heading "Tell each service which Dockerfile it builds"
note "Config as code: the broker reads /railway.json (the default), the bridge needs"
manual "bridge -> Settings -> Config-as-code -> Railway config file: /bridge/railway.json"
note "Where Railway no longer reads config files (new services from 2026-12-01), the"
note "RAILWAY_DOCKERFILE_PATH variables set in steps 5 and 6 choose the Dockerfile instead."

heading "Volumes: one per service"
manual "broker -> Add volume -> mount path /mosquitto/data  (Mosquitto's sessions and queues)"
manual "bridge -> Add volume -> mount path /data            (the outbox: undelivered locations)"
note "A service with a volume runs one replica, and a redeploy has a short outage."

heading "Variables of the broker"
cli railway variables --service broker \
    --set "$(var MQTT_USERNAME "$publisher_user")" \
    --set "$(var MQTT_PASSWORD "${MQTT_PASSWORD:-}")" \
    --set "$(var MQTT_BRIDGE_USERNAME "$bridge_user")" \
    --set "$(var MQTT_BRIDGE_PASSWORD "${MQTT_BRIDGE_PASSWORD:-}")" \
    --set "$(var MQTT_PUBLISH_TOPICS "$topics")" \
    --set "$(var RAILWAY_DOCKERFILE_PATH Dockerfile.railway)" \
    --set "$(var RAILWAY_DEPLOYMENT_DRAINING_SECONDS 30)"
note "Draining: Mosquitto gets 30 s after SIGTERM to save its database (default: SIGKILL at once)."

heading "Variables of the bridge"
twinzo_vars=()
case $twinzo_auth in
    device)
        twinzo_vars+=(--set "$(var BRIDGE_TWINZO__CLIENT "${BRIDGE_TWINZO__CLIENT:-your-twinzo-client}")")
        twinzo_vars+=(--set "$(var BRIDGE_TWINZO__DEVICE_PASSWORD "${BRIDGE_TWINZO__DEVICE_PASSWORD:-}")")
        ;;
    api_key)
        twinzo_vars+=(--set "$(var BRIDGE_TWINZO__API_KEY "${BRIDGE_TWINZO__API_KEY:-}")")
        twinzo_vars+=(--set "$(var BRIDGE_TWINZO__CLIENT_GUID "${BRIDGE_TWINZO__CLIENT_GUID:-}")")
        twinzo_vars+=(--set "$(var BRIDGE_TWINZO__BRANCH_GUID "${BRIDGE_TWINZO__BRANCH_GUID:-}")")
        ;;
esac
# shellcheck disable=SC2016 # ${{...}} are Railway references, not shell expansions.
cli railway variables --service bridge \
    --set 'BRIDGE_MQTT__URL=ws://${{broker.RAILWAY_PRIVATE_DOMAIN}}:9001/mqtt' \
    --set 'BRIDGE_MQTT__USERNAME=${{broker.MQTT_BRIDGE_USERNAME}}' \
    --set 'BRIDGE_MQTT__PASSWORD=${{broker.MQTT_BRIDGE_PASSWORD}}' \
    --set "$(var BRIDGE_TWINZO__BASE_URL "$twinzo_url")" \
    --set "$(var BRIDGE_TWINZO__AUTH "$twinzo_auth")" \
    "${twinzo_vars[@]}" \
    --set "$(var BRIDGE_TWINZO__SECTOR_ID "$sector")" \
    --set "$(var BRIDGE_HTTP__AUTH_TOKEN "${BRIDGE_HTTP__AUTH_TOKEN:-}")" \
    --set "$(var BRIDGE_OUTBOX__PATH /data/outbox.redb)" \
    --set "$(var BRIDGE_LOG__FORMAT json)" \
    --set "$(var BRIDGE_SHUTDOWN__GRACE_SECS 10)" \
    --set "$(var RAILWAY_DEPLOYMENT_DRAINING_SECONDS 15)" \
    --set "$(var RAILWAY_DOCKERFILE_PATH bridge/Dockerfile)" \
    --set "$(var RAILWAY_RUN_UID 0)" \
    --set "$(var PORT 8080)"
note "The broker is reached over the private network (broker.railway.internal), no TLS needed."
note "Grace 10 s < draining 15 s: the bridge flushes its batches before Railway's SIGKILL."
note "RAILWAY_RUN_UID=0: Railway mounts the volume owned by root, which the image's uid 10001"
note "could not write. Devices and sector transforms: BRIDGE_DEVICES and BRIDGE_SECTORS, one"
note "line each (.env.example shows the form)."

heading "Public WebSocket endpoint of the broker, for ATI"
cli railway domain --service broker --port 9001
note "Robots connect to wss://NAME.up.railway.app/mqtt on port 443 (the name printed above)."

heading "Optional: plain MQTT through a TCP proxy"
if $tcp_proxy; then
    cli railway tcp-proxy create --service broker --port 1883
else
    echo "  \$ railway tcp-proxy create --service broker --port 1883    (only with --tcp-proxy)"
fi
note "WARNING: the TCP proxy (mqtt://NAME.proxy.rlwy.net:PORT) is not encrypted: the fleet's"
note "password and every message travel in clear. Prefer wss:// whenever the client can."

heading "Public domain of the bridge's dashboard"
cli railway domain --service bridge --port 8080
note "The dashboard and /api ask for BRIDGE_HTTP__AUTH_TOKEN (set in step 6; /live and /ready"
note "stay open for Railway's health check). Open it once as https://NAME.up.railway.app/?token=..."

heading "Health check and restarts"
note "bridge/railway.json: healthcheckPath /live, restart ON_FAILURE (10 retries). Without config"
note "files, set the same under bridge -> Settings -> Deploy. /live, not /ready: Railway checks"
note "only during a deploy, and /ready waits for robots and Twinzo, which a deploy must not."

heading "Deploy"
note "From GitHub, a push deploys both services. From this checkout:"
echo "  \$ railway up --service broker"
echo "  \$ railway up --service bridge"

heading "Check it end to end"
note "MQTT_USERNAME=... MQTT_PASSWORD=... BRIDGE_URL=https://BRIDGE.up.railway.app \\"
note "BRIDGE_TOKEN=... scripts/smoke.sh wss://BROKER.up.railway.app/mqtt"

if [ "${#generated[@]}" -gt 0 ]; then
    echo
    echo "# Generated and stored in Railway only: ${generated[*]}."
    echo "# Read them in the services' Variables tabs (ATI needs MQTT_PASSWORD)."
fi
