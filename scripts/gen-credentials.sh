#!/usr/bin/env bash
# Writes .env from .env.example with a fresh random password in every password variable, so
# that `docker compose --profile demo up` runs with nothing else to configure.
#
# Usage: scripts/gen-credentials.sh [--force] [--output FILE] [--template FILE]
#
#   --output FILE    where to write (default: .env at the repository root)
#   --template FILE  the template (default: .env.example at the repository root)
#   --force          replace an existing FILE; its other settings are reset to the template's
#
# Sets MQTT_PASSWORD, MQTT_BRIDGE_PASSWORD and TWINZO_STUB_DEVICE_PASSWORD to 32 random letters
# and digits each, and BRIDGE_TWINZO__DEVICE_PASSWORD to the stand-in's, which the bridge
# then uses in the demo. The file is created with mode 0600. The script names the variables
# it set and never prints a value.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
output=$repo_root/.env
template=$repo_root/.env.example
force=false

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

fail() {
    echo "gen-credentials: $1" >&2
    exit "${2:-1}"
}

while [ "$#" -gt 0 ]; do
    case $1 in
        --force) force=true ;;
        --output)
            [ "$#" -ge 2 ] || fail "--output needs a file name" 64
            output=$2
            shift
            ;;
        --template)
            [ "$#" -ge 2 ] || fail "--template needs a file name" 64
            template=$2
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) fail "unknown argument: $1 (see --help)" 64 ;;
    esac
    shift
done

[ -r "$template" ] || fail "template not found: $template"
if [ -e "$output" ] && ! $force; then
    fail "$output exists; keeping it (use --force to replace it with new passwords)"
fi

# 32 characters from A-Z, a-z and 0-9 (about 190 bits). head stops reading by itself, so no
# command in the pipeline dies of SIGPIPE.
random_password() {
    local value
    value=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c 1-32)
    [ "${#value}" -eq 32 ] || fail "could not read enough random bytes from /dev/urandom"
    printf '%s' "$value"
}

# Plain assignments, so that a failing command substitution stops the script.
publisher_password=$(random_password)
bridge_password=$(random_password)
stub_password=$(random_password)
order=(MQTT_PASSWORD MQTT_BRIDGE_PASSWORD TWINZO_STUB_DEVICE_PASSWORD BRIDGE_TWINZO__DEVICE_PASSWORD)

# The new value of NAME; fails for a name that is not generated. (No associative arrays: macOS
# still ships bash 3.2.)
value_of() {
    case $1 in
        MQTT_PASSWORD) printf '%s' "$publisher_password" ;;
        MQTT_BRIDGE_PASSWORD) printf '%s' "$bridge_password" ;;
        TWINZO_STUB_DEVICE_PASSWORD | BRIDGE_TWINZO__DEVICE_PASSWORD) printf '%s' "$stub_password" ;;
        *) return 1 ;;
    esac
}

# The file is written next to its destination and renamed, so a reader never sees half of it,
# and created under umask 077, so the passwords are never readable by others, not even briefly.
umask 077
output_dir=$(dirname "$output")
[ -d "$output_dir" ] || fail "directory not found: $output_dir"
tmp=$(mktemp "$output_dir/.env.tmp.XXXXXX")
trap 'rm -f "$tmp"' EXIT

written=' '
while IFS= read -r line || [ -n "$line" ]; do
    name=${line%%=*}
    if [ "$name" != "$line" ] && value=$(value_of "$name"); then
        printf '%s=%s\n' "$name" "$value"
        written="$written$name "
    else
        printf '%s\n' "$line"
    fi
done <"$template" >"$tmp"

# A template without one of the variables still gets it.
for name in "${order[@]}"; do
    case $written in
        *" $name "*) ;;
        *) printf '%s=%s\n' "$name" "$(value_of "$name")" >>"$tmp" ;;
    esac
done

chmod 0600 "$tmp"
mv -f "$tmp" "$output"
trap - EXIT

echo "gen-credentials: wrote $output (mode 0600) with new random values for:"
for name in "${order[@]}"; do
    echo "  $name"
done
