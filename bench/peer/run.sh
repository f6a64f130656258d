#!/usr/bin/env bash
# The side-by-side of BENCHMARKS.md: the same caseload synced through Tether and through
# the reference automerge-repo sync server, on this machine, in one run.
#
#   bash bench/peer/run.sh            # TETHER_PEER_EPISODES=200 TETHER_PEER_RECORDS=10
#
# Installs the Node side (npm ci), starts the automerge-repo sync server on a free
# loopback port, runs Tether's side (cargo bench -p tests --bench peer: a real server and
# a real device, which also writes the caseload), then the automerge-repo side on the
# same caseload (records as maps, then as JSON strings), and prints one table for each.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cd "$here"
npm ci --no-audit --no-fund >/dev/null

port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
mkdir -p "$work/amrg"
PORT="$port" DATA_DIR="$work/amrg" node node_modules/@automerge/automerge-repo-sync-server/src/index.js >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q "Listening on port" "$work/server.log" && break
  sleep 0.1
done
grep -q "Listening on port" "$work/server.log" || { cat "$work/server.log"; echo "the sync server did not start" >&2; exit 1; }

echo "== Tether"
(cd "$root" && TETHER_PEER_OUT="$work" cargo bench -q -p tests --bench peer)

for layout in maps strings; do
  echo "== automerge-repo ($layout), sync server on 127.0.0.1:$port"
  node "$here/peer.mjs" "$work/caseload.json" "$port" "$work/tether.json" "$layout"
done
