#!/usr/bin/env bash
# Container start of /bin/true on dynod's own stack, by the peers, side by side in one run:
#   runc run        (an OCI runtime: the bundle's config.json from `runc spec`, rootfs read-only)
#   bwrap           (bubblewrap --unshare-all with the stack bound read-only as /)
# Prints each median and the ratio. The lead adds dynod's dyno start and `dynoctl run -- true`.
#
#   bench/start/peers.sh [RUNS]      (root; default 200 runs each, after 20 warm-ups)
set -euo pipefail
RUNS="${1:-200}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="$REPO/.venv/bin/python"

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (runc needs it)." >&2; exit 1; }
for tool in runc bwrap hyperfine; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing: run ./install.sh --deps-only." >&2; exit 1; }
done
STACK="$("$PY" -m dynod.stack path)"  # one error line if the default stack is not built

BUNDLE="$(mktemp -d /var/tmp/dynod-bench-start.XXXXXX)"
ID="dynod-bench-start-$$"
cleanup() {
    runc delete --force "$ID" >/dev/null 2>&1 || true
    rm -rf "$BUNDLE"
}
trap cleanup EXIT

# runc's own default spec (namespaces pid, net, ipc, uts, mount, cgroup; /proc, /dev, /sys), changed only
# where a dyno differs: the stack as a read-only root, no terminal, the command.
(cd "$BUNDLE" && runc spec)
"$PY" - "$BUNDLE/config.json" "$STACK" <<'PYEOF'
import json, sys
path, stack = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["root"] = {"path": stack, "readonly": True}
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/true"]
json.dump(spec, open(path, "w"), indent=2)
PYEOF

RUNC=(runc run --bundle "$BUNDLE" "$ID")
BWRAP=(bwrap --unshare-all --ro-bind "$STACK" / --proc /proc --dev /dev --die-with-parent /bin/true)
if ! "${RUNC[@]}" || ! "${BWRAP[@]}"; then
    echo "error: a peer cannot run /bin/true on $STACK." >&2; exit 1
fi

echo "stack: $STACK"
echo "runs: $RUNS each (hyperfine -N, 20 warm-ups), $(nproc) CPUs, kernel $(uname -r)"
hyperfine -N --warmup 20 --runs "$RUNS" --style basic --export-json "$BUNDLE/times.json" \
    -n "runc run" "${RUNC[*]}" \
    -n "bwrap --unshare-all" "${BWRAP[*]}"

"$PY" - "$BUNDLE/times.json" <<'PYEOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
median = {r["command"]: r["median"] * 1000 for r in results}
print()
for name, ms in median.items():
    print(f"median {name:<22} {ms:7.2f} ms")
runc, bwrap = median["runc run"], median["bwrap --unshare-all"]
print(f"ratio runc / bwrap        {runc / bwrap:7.1f}x")
PYEOF
