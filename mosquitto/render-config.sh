#!/bin/sh
# Renders the broker's configuration from the environment.
#
# Usage: render-config.sh OUT_DIR
#
# Writes OUT_DIR/mosquitto.conf, OUT_DIR/passwd, OUT_DIR/acl and OUT_DIR/probe.env. Every file
# is mode 0600. The container entrypoint runs this at each start; the integration tests run the
# very same script outside a container.
#
# Environment (see docs/broker.md):
#   MQTT_USERNAME, MQTT_PASSWORD                publisher account (the robot fleet)
#   MQTT_BRIDGE_USERNAME, MQTT_BRIDGE_PASSWORD  bridge account
#   MQTT_PORT (1883), MQTT_WS_PORT (9001)        MQTT and WebSocket listeners
#   MQTT_PUBLISH_TOPICS (ati/#,ati_fm/#)         filters the publisher may write, comma separated
#   MOSQUITTO_DATA_DIR (/mosquitto/data)         persistence directory
#   MOSQUITTO_RUN_USER (mosquitto)               account Mosquitto switches to when started as root
#
# The health probe account is not configurable: it gets a fresh random password at each render,
# written to OUT_DIR/probe.env for the container health check.
#
# On bad input the script prints one line to stderr naming the variable, never its value, and
# exits with status 64.
set -eu

PROBE_USERNAME=healthprobe

fail() {
    printf 'render-config: %s\n' "$1" >&2
    exit 64
}

# Passwords that show up in examples, tutorials and default configs. Compared in lower case.
WELL_KNOWN_PASSWORDS='
ati_password_123
ati_fm_password_123
password
password1
password123
password1234
password12345678
passw0rd
p@ssw0rd
p@ssword
changeme
change_me
changeit
change-me-please
replace_me
mosquitto
mosquitto_password
mqtt
mqtt_password
mqtt_password_123
bridge_password
bridge_password_123
twinzo
twinzo_password
twinzo_password_123
secret
supersecret
supersecretpassword
admin
administrator
admin123
admin1234567890
root
guest
test
testtest
test_password
example
example_password
default
letmein
letmeinletmein
qwerty
qwertyuiop
qwertyuiopasdfgh
12345678
123456789
1234567890
12345678901
123456789012
1234567890123
12345678901234
123456789012345
1234567890123456
12345678901234567
123456789012345678
1234567890123456789
12345678901234567890
0123456789abcdef
abcdefghijklmnop
abcdefghijklmnopqrstuvwxyz
aaaaaaaaaaaaaaaa
your_password
your_password_here
yourpassword
yourpasswordhere
'

# A user name goes into the password file (before a colon) and the ACL file (rest of a line),
# so it is restricted to characters that cannot break either.
check_username() {
    name=$1
    value=$2
    [ -n "$value" ] || fail "$name is not set"
    case $value in
        *[!A-Za-z0-9._@-]*)
            fail "$name may only contain letters, digits and . _ @ -" ;;
    esac
    [ "$value" != "$PROBE_USERNAME" ] || fail "$name must not be $PROBE_USERNAME, the health probe's account"
}

# Checks a password without ever printing it.
check_password() {
    name=$1
    value=$2
    user_name=$3
    user_value=$4
    [ -n "$value" ] || fail "$name is not set"

    nl='
'
    case $value in
        *"$nl"*) fail "$name must be a single line" ;;
    esac

    lower=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
    for known in $WELL_KNOWN_PASSWORDS; do
        [ "$lower" != "$known" ] || fail "$name is a well-known example: generate a random one"
    done

    [ "$value" != "$user_value" ] || fail "$name must not equal $user_name"
    [ "${#value}" -ge 16 ] || fail "$name is shorter than 16 characters"
}

check_port() {
    name=$1
    value=$2
    case $value in
        '' | *[!0-9]*) fail "$name must be a port number" ;;
    esac
    if [ "$value" -lt 1 ] || [ "$value" -gt 65535 ]; then
        fail "$name must be between 1 and 65535"
    fi
}

# A filter the publisher may write to. Its first level must be a plain name other than
# `bridge`, so the publisher can never write the bridge's own topics or $SYS.
check_filter() {
    filter=$1
    [ -n "$filter" ] || fail "MQTT_PUBLISH_TOPICS contains an empty filter"
    case $filter in
        *[[:space:]]*) fail "MQTT_PUBLISH_TOPICS filters must not contain whitespace" ;;
        *'#'?*) fail "MQTT_PUBLISH_TOPICS: # must be the last level of a filter" ;;
        *[!/]'#'*) fail "MQTT_PUBLISH_TOPICS: # must be a whole level" ;;
        *[!/]+* | *+[!/]*) fail "MQTT_PUBLISH_TOPICS: + must be a whole level" ;;
    esac
    first=${filter%%/*}
    case $first in
        '' | '#' | + | '$'* | bridge)
            fail "MQTT_PUBLISH_TOPICS filters must start with a plain level other than bridge" ;;
    esac
}

# Absolute path without whitespace: Mosquitto's config parser would split it otherwise.
check_path() {
    name=$1
    value=$2
    case $value in
        /*) ;;
        *) fail "$name must be an absolute path" ;;
    esac
    case $value in
        *[[:space:]]*) fail "$name must not contain whitespace" ;;
    esac
}

# Escapes a value for the replacement side of a sed s||| command.
sed_escape() {
    printf '%s' "$1" | sed 's/[\\&|]/\\&/g'
}

# --- Arguments and tools -------------------------------------------------------------------
[ "$#" -eq 1 ] || fail "usage: render-config.sh OUT_DIR"
out_dir=$1
script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
template=$script_dir/mosquitto.conf.template
[ -r "$template" ] || fail "template not found next to the script: $template"
command -v mosquitto_passwd >/dev/null 2>&1 \
    || fail "mosquitto_passwd not found: apt-get install -y mosquitto (or apk add mosquitto)"

# --- Check everything before writing anything ----------------------------------------------
publisher_user=${MQTT_USERNAME-}
publisher_pass=${MQTT_PASSWORD-}
bridge_user=${MQTT_BRIDGE_USERNAME-}
bridge_pass=${MQTT_BRIDGE_PASSWORD-}
mqtt_port=${MQTT_PORT:-1883}
ws_port=${MQTT_WS_PORT:-9001}
topics=${MQTT_PUBLISH_TOPICS:-ati/#,ati_fm/#}
data_dir=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
run_user=${MOSQUITTO_RUN_USER:-mosquitto}

check_username MQTT_USERNAME "$publisher_user"
check_username MQTT_BRIDGE_USERNAME "$bridge_user"
[ "$publisher_user" != "$bridge_user" ] || fail "MQTT_USERNAME and MQTT_BRIDGE_USERNAME must differ"
check_password MQTT_PASSWORD "$publisher_pass" MQTT_USERNAME "$publisher_user"
check_password MQTT_BRIDGE_PASSWORD "$bridge_pass" MQTT_BRIDGE_USERNAME "$bridge_user"
[ "$publisher_pass" != "$bridge_pass" ] || fail "MQTT_PASSWORD and MQTT_BRIDGE_PASSWORD must differ"

check_port MQTT_PORT "$mqtt_port"
check_port MQTT_WS_PORT "$ws_port"
[ "$mqtt_port" -ne "$ws_port" ] || fail "MQTT_PORT and MQTT_WS_PORT must differ"

# Split on commas with globbing off, trimming blanks around each filter. Field splitting drops
# a trailing empty field, so an empty filter at either end is caught here.
case $topics in
    ,* | *, | *,,*) fail "MQTT_PUBLISH_TOPICS contains an empty filter" ;;
esac
filters=''
set -f
old_ifs=$IFS
IFS=,
for raw in $topics; do
    IFS=$old_ifs
    filter=$(printf '%s' "$raw" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    check_filter "$filter"
    filters="$filters $filter"
done
IFS=$old_ifs
[ -n "$filters" ] || fail "MQTT_PUBLISH_TOPICS has no filter"

check_path MOSQUITTO_DATA_DIR "$data_dir"
[ -n "${data_dir%/}" ] || fail "MOSQUITTO_DATA_DIR must not be the root directory"
case $run_user in
    '' | *[!A-Za-z0-9._-]*) fail "MOSQUITTO_RUN_USER must be a plain account name" ;;
esac

# When started as root Mosquitto switches to run_user, which must exist to own the files.
as_root=false
[ "$(id -u)" -ne 0 ] || as_root=true
if $as_root && [ "$run_user" != root ] && ! id -u "$run_user" >/dev/null 2>&1; then
    fail "MOSQUITTO_RUN_USER names an account that does not exist"
fi

mkdir -p "$out_dir"
out_dir=$(CDPATH='' cd -- "$out_dir" && pwd)
check_path OUT_DIR "$out_dir"

# --- Write the files -------------------------------------------------------------------------
umask 077
conf=$out_dir/mosquitto.conf
passwd=$out_dir/passwd
acl=$out_dir/acl
probe_env=$out_dir/probe.env

# Mosquitto 2.0 adds the separator before mosquitto.db itself.
persistence_location=${data_dir%/}

sed \
    -e "s|@RUN_USER@|$(sed_escape "$run_user")|g" \
    -e "s|@PASSWORD_FILE@|$(sed_escape "$passwd")|g" \
    -e "s|@ACL_FILE@|$(sed_escape "$acl")|g" \
    -e "s|@MQTT_PORT@|$mqtt_port|g" \
    -e "s|@MQTT_WS_PORT@|$ws_port|g" \
    -e "s|@PERSISTENCE_LOCATION@|$(sed_escape "$persistence_location")|g" \
    "$template" >"$conf.tmp"
mv -f "$conf.tmp" "$conf"

# 24 random bytes as hex: safe to source from a shell and to pass on a command line.
probe_pass=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
[ "${#probe_pass}" -eq 48 ] || fail "could not read /dev/urandom for the probe password"

# mosquitto_passwd -b takes the password as an argument, so it is briefly visible to other
# processes of the same host or container; that is the only way to script it.
rm -f "$passwd.tmp"
mosquitto_passwd -c -b "$passwd.tmp" "$publisher_user" "$publisher_pass" >/dev/null
mosquitto_passwd -b "$passwd.tmp" "$bridge_user" "$bridge_pass" >/dev/null
mosquitto_passwd -b "$passwd.tmp" "$PROBE_USERNAME" "$probe_pass" >/dev/null
chmod 0600 "$passwd.tmp"
mv -f "$passwd.tmp" "$passwd"

# The $ in these lines is literal: $SYS is Mosquitto's topic tree, not a shell variable.
# shellcheck disable=SC2016
{
    echo '# Rendered by mosquitto/render-config.sh at each start: edit the script, not this file.'
    echo '# Whatever is not granted here is refused, $SYS topics included.'
    echo
    echo '# Publisher (the robot fleet): writes its own topics, reads nothing.'
    echo "user $publisher_user"
    for filter in $filters; do
        echo "topic write $filter"
    done
    echo
    echo '# Bridge: reads everything (# does not match $SYS, hence the second line) and'
    echo '# writes only its own status and last will under bridge/.'
    echo "user $bridge_user"
    echo 'topic read #'
    echo 'topic read $SYS/#'
    echo 'topic readwrite bridge/#'
    echo
    echo '# Health probe: one topic, read only.'
    echo "user $PROBE_USERNAME"
    echo 'topic read $SYS/broker/uptime'
} >"$acl.tmp"
mv -f "$acl.tmp" "$acl"
set +f

{
    echo '# Rendered by mosquitto/render-config.sh; the password changes at every start.'
    echo "PROBE_USERNAME=$PROBE_USERNAME"
    echo "PROBE_PASSWORD=$probe_pass"
    echo "PROBE_PORT=$mqtt_port"
} >"$probe_env.tmp"
mv -f "$probe_env.tmp" "$probe_env"

# Mosquitto reads everything but probe.env after switching to run_user; probe.env stays with
# root, which runs the health check.
if $as_root && [ "$run_user" != root ]; then
    chown "$run_user" "$out_dir" "$conf" "$passwd" "$acl"
fi
chmod 0700 "$out_dir"
