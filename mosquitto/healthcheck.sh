#!/bin/sh
# Health check of the broker: logs in as the probe account and reads $SYS/broker/uptime, so it
# proves that the listener accepts connections and that authentication and the ACL work.
#
# Usage: healthcheck.sh [PROBE_ENV]   (default /mosquitto/config-rendered/probe.env)
#
# PROBE_ENV is written by render-config.sh with a password that changes at every start.
set -eu

probe_env=${1:-${MOSQUITTO_CONFIG_DIR:-/mosquitto/config-rendered}/probe.env}
case $probe_env in
    /*) ;;
    *) probe_env=./$probe_env ;;
esac
# shellcheck source=/dev/null
. "$probe_env"

# shellcheck disable=SC2016
exec mosquitto_sub -h 127.0.0.1 -p "$PROBE_PORT" -u "$PROBE_USERNAME" -P "$PROBE_PASSWORD" \
    -t '$SYS/broker/uptime' -C 1 -W 5
