#!/usr/bin/env bash
# Counts the user-space instructions the release a8registry spends per request, with valgrind's
# callgrind: repeatable on a busy machine, unlike requests per second. Not a test.
#
#   static-tests/instructions.sh [BINARY]
#
# For each request kind it runs the server twice under callgrind (one worker, one pipelined
# client on 127.0.0.1), with 2,000 and 12,000 requests after the same fixture, and prints the
# difference divided by 10,000: the fixture, startup and shutdown cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-$PWD/target/release/a8registry}
if [ "$#" -eq 0 ]; then cargo build --release --bin a8registry >&2; fi
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is required" >&2; exit 1; }
CLIENT=$PWD/static-tests/tools/instruction_client.py

total() { # mode requests -> instructions of the whole run
  local work pid port
  work=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$BIN" \
    --api_bind 127.0.0.1 --api_port 0 --workers 1 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 150); do
    port=$(grep -o 'address="127.0.0.1:[0-9]*' "$work/err" | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.2
  done
  python3 "$CLIENT" 127.0.0.1 "$port" "$1" "$2"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  grep -E '^(summary|totals):' "$work/out" | head -1 | awk '{print $2}'
  rm -rf "$work"
}

echo "| Request | Instructions per request |"
echo "|---|---|"
for mode in hb svc reg renew; do
  small=$(total "$mode" 2000)
  large=$(total "$mode" 12000)
  case $mode in
    hb) name='PUT /api/v1/instances/{id}/heartbeat' ;;
    svc) name='GET /api/v1/services/{name}, 100 instances' ;;
    reg) name='POST /api/v1/instances, the same instance again' ;;
    renew) name='PUT /eureka/v2/apps/{app}/{id}' ;;
  esac
  echo "| $name | $(((large - small) / 10000)) |"
done
