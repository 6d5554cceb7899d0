#!/usr/bin/env bash
# Install dynod from this checkout and start it serving the example app (as root, Debian 12 or 13).
#
#   ./install.sh              packages, venv, default stack, settings, service, the "hello" app
#   ./install.sh --deps-only  packages, venv and default stack only: starts nothing (test.sh uses it)
#
# Every step checks before it acts, so running it again is quick and changes nothing that is
# already right. docs/operations.md explains what it puts where.
set -euo pipefail

usage() { echo "usage: ./install.sh [--deps-only]"; }
DEPS_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --deps-only) DEPS_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option '$arg' ($(usage))" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
CONFIG=/etc/dynod/dynod.toml
UNIT=/etc/systemd/system/dynod.service
LOG=/var/log/dynod.log
PIDFILE=/run/dynod.pid
APP=hello

step() { printf '\n-----> %s\n' "$*"; }
die() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "install.sh needs root (it installs packages and a service): run it with sudo."
command -v apt-get >/dev/null || die "no apt-get here: dynod installs on Debian 12 or 13."
# shellcheck source=/dev/null
. /etc/os-release
case "${ID:-}:${VERSION_ID:-}" in
    debian:12|debian:13) ;;
    *) echo "warning: tested on Debian 12 and 13, this is ${PRETTY_NAME:-unknown}; continuing." >&2 ;;
esac

# --- packages --------------------------------------------------------------------------------
# dynod itself: python3-venv (the venv), python3-dev gcc libcap-dev (python-prctl builds from
# source), debootstrap (the stack), iproute2 (dyno networking), tini (PID 1 of a dyno), git and
# openssh-server (git push deploys), curl, libseccomp2 (the dynos' seccomp filter), nftables and
# python3-nftables (dynod's host firewall, through libnftables' JSON API). The tests
# and benches: runc and bubblewrap (peers and test containers), wrk and hyperfine (benches), nginx
# (router peer), redis and postgresql (add-ons), pebble (the ACME test CA that ACM's tests run).
PACKAGES=(python3 python3-venv python3-dev gcc libcap-dev debootstrap iproute2 tini git curl
          openssh-server ca-certificates util-linux libseccomp2 nftables python3-nftables
          runc bubblewrap wrk redis-server postgresql hyperfine pebble
          e2fsprogs  # mkfs.ext4: each Postgres add-on's plan-sized storage volume (docs/addons.md)
          chromium chromium-driver)  # the dashboard's browser tests (Selenium), no download at run time
# Services an install may start that the tests start privately on their own ports instead.
CLASHING_SERVICES=(nginx redis-server postgresql)

service_running() {
    if [ -d /run/systemd/system ]; then
        systemctl is-active --quiet "$1"
    else
        service "$1" status >/dev/null 2>&1
    fi
}

installed() {  # true if any of the named packages is installed
    local status
    status="$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null || true)"
    [[ "$status" == *"install ok installed"* ]]
}

missing_packages() {
    local p
    for p in "$@"; do
        installed "$p" || echo "$p"
    done
}

step "Debian packages"
mapfile -t MISSING < <(missing_packages "${PACKAGES[@]}")
# Debian 13 dropped nginx-light; plain nginx is the same server with more modules.
if ! installed nginx-light nginx; then
    MISSING+=(nginx-light)
fi
if [ "${#MISSING[@]}" -gt 0 ]; then
    declare -A RUNNING_BEFORE=()
    for s in "${CLASHING_SERVICES[@]}"; do service_running "$s" && RUNNING_BEFORE[$s]=1; done
    apt-get update -qq
    if [[ " ${MISSING[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
        MISSING=("${MISSING[@]/nginx-light/nginx}")
    fi
    echo "installing: ${MISSING[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" \
        </dev/null >/dev/null
    # Stop what this install started (nginx would hold :80, redis :6379, postgres :5432); a
    # service the admin already ran before is theirs and left alone.
    for s in "${CLASHING_SERVICES[@]}"; do
        if [ -z "${RUNNING_BEFORE[$s]:-}" ] && service_running "$s"; then
            echo "stopping and disabling $s (started by the package install; tests run their own)"
            if [ -d /run/systemd/system ]; then
                systemctl disable --now --quiet "$s"
            else
                service "$s" stop >/dev/null 2>&1 || true
                update-rc.d "$s" disable >/dev/null 2>&1 || true
            fi
        fi
    done
else
    echo "all installed"
fi

# --- venv ------------------------------------------------------------------------------------
step "Python venv at $VENV"
# Debian's interpreter, never a pyenv shim on PATH: a shim adds ~76 ms to every start.
if [ ! -x "$VENV/bin/python" ] || ! grep -qx "home = /usr/bin" "$VENV/pyvenv.cfg"; then
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
STAMP="$VENV/.dynod-installed"
# The router's C extension (dynod/router/cplane.c) is built by this pip install too, so its source
# is part of what the stamp covers: a checkout whose .c changed must rebuild it.
WANT="$(cat pyproject.toml dynod/router/*.c | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] ||
   ! "$VENV/bin/python" -c "import dynod, dynod.router.cplane" 2>/dev/null; then
    # A running router has the old extension mapped: pip's build copies over it in place, which would
    # crash it. Unlinked first, the old file lives on for whoever has it open; pip writes a new one.
    rm -f dynod/router/cplane.*.so
    # setuptools prints pages of deprecation notices while building: shown only if pip fails.
    pip_log="$(mktemp)"
    if ! "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]' >"$pip_log" 2>&1; then
        cat "$pip_log" >&2; rm -f "$pip_log"
        die "pip install -e '.[test]' failed (output above)."
    fi
    rm -f "$pip_log"
    echo "$WANT" > "$STAMP"
    echo "installed dynod and its dependencies"
else
    echo "up to date"
fi
# libnftables' Python module is Debian's (python3-nftables), not on PyPI: link that one package
# into the venv rather than opening the venv to every system package.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$(readlink "$SITE/nftables" 2>/dev/null)" != /usr/lib/python3/dist-packages/nftables ]; then
    ln -sfn /usr/lib/python3/dist-packages/nftables "$SITE/nftables"
fi
"$VENV/bin/python" -c 'import nftables' || die "the venv cannot import nftables (python3-nftables)."
# pip's dynoctl console script starts Python with site, whose editable-install finder costs ~13 ms
# of every start: replace it (after every install, which rewrites it) with a launcher without site.
"$VENV/bin/python" -m dynod.cli.launcher "$VENV/bin/dynoctl" || die "cannot write $VENV/bin/dynoctl."
# dynod's own bytecode, written now: users of the dynod group run dynoctl without write access
# to the checkout, and a host with PYTHONDONTWRITEBYTECODE never caches it, so each start would
# compile every module it imports again (~0.3 s for the daemon's). Stale files are recompiled
# by Python itself (it checks each source's mtime).
"$VENV/bin/python" -m compileall -q -j 0 "$REPO/dynod" >/dev/null || die "cannot compile dynod's bytecode."

# --- the stack -------------------------------------------------------------------------------
step "Default stack (run image) and its build image"
# `build` makes the default stack (dynos run on it) and its build image (debian-13-build: builds
# run on it), a few minutes each on a first install (docs/stacks.md).
# Per-package lines are hundreds; the stack tool's own lines and debootstrap's stages remain.
# (pipefail: a failed build stops the install; the filter's own status is masked.)
"$VENV/bin/python" -m dynod.stack build \
    | { grep --line-buffered -v -E '^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ' || true; }

if [ "$DEPS_ONLY" -eq 1 ]; then
    step "Dependencies ready (--deps-only: nothing started)"
    exit 0
fi

# --- settings, group, service ----------------------------------------------------------------
step "Settings and group"
getent group dynod >/dev/null || groupadd --system dynod
if [ ! -e "$CONFIG" ]; then
    mkdir -p "$(dirname "$CONFIG")"
    cat > "$CONFIG" <<'EOF'
# dynod settings (docs/operations.md lists every key). Written once by install.sh; edit freely.
# The quick start uses high ports so nothing else on the host has to move; for production
# use http = ["0.0.0.0:80"] and https = ["0.0.0.0:443"].
[router]
http = ["0.0.0.0:8080"]
https = ["0.0.0.0:8443"]
EOF
    echo "wrote $CONFIG"
else
    echo "$CONFIG exists, kept"
fi
# Commands on PATH, unless the admin has their own there.
for cmd in dynod dynoctl; do
    link="/usr/local/bin/$cmd"
    if [ ! -e "$link" ] || [ "$(readlink "$link")" = "$VENV/bin/$cmd" ]; then
        ln -sfn "$VENV/bin/$cmd" "$link"
    fi
done

SETTINGS="$("$VENV/bin/python" - "$CONFIG" <<'EOF'
import sys
from pathlib import Path
from dynod.settings import load_settings
s = load_settings(Path(sys.argv[1]))
print(s.api_socket, s.router.http[0].rsplit(":", 1)[1] if s.router.http else "", s.router.base_domain)
EOF
)"
read -r SOCKET HTTP_PORT BASE_DOMAIN <<<"$SETTINGS"
export DYNOD_SOCKET="$SOCKET"
dynoctl() { "$VENV/bin/dynoctl" "$@"; }

step "dynod service"
if [ -d /run/systemd/system ]; then
    unit_text="[Unit]
Description=dynod: Heroku-style dynos on this host
Documentation=file://$REPO/docs/operations.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$VENV/bin/dynod --config $CONFIG
Environment=DYNOD_ROOTFS_DIR=$REPO/rootfs
# dynod makes each dyno's cgroup beneath its own: systemd hands it that subtree.
Delegate=yes
# Stopping or restarting dynod must not kill dynos: it re-adopts them when it starts again.
KillMode=process
Restart=on-failure
RestartSec=2
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target"
    if [ "$(cat "$UNIT" 2>/dev/null)" != "$unit_text" ]; then
        printf '%s\n' "$unit_text" > "$UNIT"
        systemctl daemon-reload
        systemctl enable --quiet dynod
        systemctl restart dynod
        echo "installed and (re)started $UNIT"
    else
        systemctl enable --quiet dynod
        systemctl is-active --quiet dynod || systemctl start dynod
        echo "dynod.service is running"
    fi
else
    # No systemd (a container, a chroot): run it in the background, detached from this shell.
    if dynoctl status >/dev/null 2>&1; then
        echo "dynod is already running"
    elif [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
            && grep -q dynod "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; then
        echo "dynod (pid $(cat "$PIDFILE")) is starting"
    else
        DYNOD_ROOTFS_DIR="$REPO/rootfs" setsid "$VENV/bin/dynod" --config "$CONFIG" \
            >>"$LOG" 2>&1 </dev/null &
        echo $! > "$PIDFILE"
        echo "started dynod (pid $!), output in $LOG"
    fi
fi

step "Waiting for the API at $SOCKET"
for _ in $(seq 1 60); do
    dynoctl status >/dev/null 2>&1 && break
    sleep 0.5
done
dynoctl status >/dev/null 2>&1 \
    || die "dynod did not answer on $SOCKET within 30 s; see $( [ -d /run/systemd/system ] && echo 'journalctl -u dynod' || echo "$LOG")."

# --- the example app -------------------------------------------------------------------------
step "Example app '$APP'"
dynoctl apps:info -a "$APP" >/dev/null 2>&1 || dynoctl apps:create "$APP"
# Deploy once: a second install run must not pile up releases.
if ! dynoctl releases -a "$APP" 2>/dev/null | grep -q "Deploy "; then
    dynoctl deploy examples/hello-python -a "$APP"
fi
dynoctl ps:scale web=1 -a "$APP"

URL="http://$APP.$BASE_DOMAIN:$HTTP_PORT/"
for _ in $(seq 1 40); do
    curl -fsS --max-time 2 -H "Host: $APP.$BASE_DOMAIN" "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null && break
    sleep 0.5
done

cat <<EOF

dynod is running; the example app answers at $URL
  curl $URL

Try next:
  dynoctl ps -a $APP                    # its dynos
  dynoctl ps:scale web=3 worker=1 -a $APP
  dynoctl logs --tail -a $APP           # the log stream (Ctrl-C to stop)
  dynoctl run -a $APP bash              # a one-off dyno with a terminal
  dynoctl config:set GREETING=hi -a $APP
  dynoctl releases -a $APP
  dynoctl releases:rollback -a $APP
More: $REPO/README.md and $REPO/docs/operations.md
EOF
