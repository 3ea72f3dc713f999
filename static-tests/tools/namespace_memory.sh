#!/usr/bin/env bash
# What a namespace costs: the resident memory of a registry holding COUNT instances (100,000 by
# default) all in one namespace, then each in a namespace of its own, and its CPU while idle
# after that (ticks of 10 ms over 10 s, from /proc/<pid>/stat); then once more after one read of
# the service of each namespace (a body the registry caches: one of COUNT instances, or COUNT of
# one). Not a test.
#
#   static-tests/tools/namespace_memory.sh [BINARY] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/a8registry}
COUNT=${2:-100000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for mode in one spread; do
  "$BIN" --api_bind 127.0.0.1 --api_port 0 --auth_mode trusted --max_ttl 10m --default_ttl 10m \
    </dev/null >/dev/null 2>"$log" &
  pid=$!
  until grep -qs 'msg="listening"' "$log"; do sleep 0.01; done
  port=$(grep -m1 -o 'address="127.0.0.1:[0-9]*"' "$log" | grep -o '[0-9]*"$' | tr -d '"')
  before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  python3 static-tests/tools/namespace_register.py "$port" "$COUNT" "$mode"
  sleep 2
  after=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  sleep 10
  idle=$(( $(awk '{ print $14 + $15 }' "/proc/$pid/stat") - ticks ))
  echo "$mode namespace(s): RSS $((before / 1024)) MiB -> $((after / 1024)) MiB; idle CPU $idle ticks in 10 s"
  # One namespace: its one service, read once (a body of COUNT instances).
  reads=$([ "$mode" = one ] && echo 1 || echo "$COUNT")
  python3 static-tests/tools/namespace_register.py "$port" "$reads" "$mode" read
  sleep 2
  read=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  echo "$mode namespace(s), after a read of each namespace's service: RSS $((read / 1024)) MiB"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
