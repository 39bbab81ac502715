#!/bin/sh
# Container entrypoint of the broker: renders the configuration from the environment, prepares
# the data directory (a Railway volume is mounted owned by root) and replaces itself with
# Mosquitto, so that Mosquitto is PID 1 and receives SIGTERM directly: on SIGTERM it writes its
# database and exits.
set -eu

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
conf_dir=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config-rendered}
data_dir=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
run_user=${MOSQUITTO_RUN_USER:-mosquitto}

# render-config.sh prints its own one-line reason and exits 64 on a bad variable.
"$script_dir/render-config.sh" "$conf_dir"

mkdir -p "$data_dir"
if [ "$(id -u)" -eq 0 ] && [ "$run_user" != root ]; then
    chown -R "$run_user" "$data_dir"
fi

exec mosquitto -c "$conf_dir/mosquitto.conf"
