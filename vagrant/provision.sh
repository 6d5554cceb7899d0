#!/usr/bin/env bash
# Provision a host with dynod: the README's install path, nothing more. Vagrant runs it as root
# inside the VM with the synced checkout as $1; it also runs as is on any Debian 12/13 host
# (CI may): without an argument it uses the checkout it lives in.
set -euo pipefail
CHECKOUT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
[ -x "$CHECKOUT/install.sh" ] || { echo "error: no install.sh in $CHECKOUT: pass the dynod checkout." >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
cd "$CHECKOUT"
./install.sh
