#!/usr/bin/env bash
# Benchmarks the release a8registry on this machine. Not a test: it asserts no timings, it prints
# figures (throughput and latency with wrk, memory, startup time, binary sizes) beside the machine
# they were taken on, so they can be compared between changes on the same machine.
#
#   static-tests/bench.sh                    # 10 s per wrk run
#   BENCH_DURATION=30s static-tests/bench.sh # longer runs, steadier figures
#   BENCH_ONLY=instructions static-tests/bench.sh # instructions and allocations per request
#   BENCH_ONLY=compare static-tests/bench.sh # the static and the glibc binary, alternately
#   BENCH_ONLY=gzip static-tests/bench.sh # bytes and CPU per full fetch, plain and gzip
#     (BENCH_STATIC=<path> BENCH_GLIBC=<path> to compare binaries built before)
#   BENCH_ONLY=scale static-tests/bench.sh   # 1,000,000 instances in 1,000 services
#     (BENCH_SCALE="INSTANCES SERVICES" for another size)
#   BENCH_ONLY=soak static-tests/bench.sh    # 100,000 instances heartbeating for 30 minutes
#     (BENCH_SOAK="MINUTES INSTANCES" for another length or size)
#
# BENCH_BINARY chooses what is measured: `static` (the default: the binary users run, built by
# ./musl-build.sh), `release` (the glibc `cargo build --release`), or the path of a binary.
#
# Needs wrk, python3 and curl; installs wrk with apt-get when it runs as root. Every server it starts
# binds 127.0.0.1 and is killed by its PID when the script exits, however it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND="static-tests/bench.sh${*:+ $*}"
DURATION=${BENCH_DURATION:-10s}
# The same load for every throughput row: 2 client threads, 64 keep-alive connections.
WRK=(wrk -t2 -c64 -d"$DURATION" --latency)

# --- Tools -----------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "bench.sh: installing wrk" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "bench.sh: wrk is required; install it (e.g. 'sudo apt-get install wrk') and rerun" >&2
    exit 1
  fi
fi
for tool in python3 curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench.sh: $tool is required; install it and rerun" >&2
    exit 1
  fi
done
# 64 connections per run plus the fixture loaders: keep descriptors from being the limit.
ulimit -n 65536 2>/dev/null || ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true

# --- Scratch space and process bookkeeping ---------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/a8bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- The binaries --------------------------------------------------------------------------------
RELEASE_BIN=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")/release/a8registry
build_release() {
  cargo build --release --bin a8registry >&2
}
# Sets STATIC_BIN (what users run) and STATIC_SYMBOLS (the same code with its symbols).
build_static() {
  echo "bench.sh: ./musl-build.sh" >&2
  if ! ./musl-build.sh >"$WORK/musl.log" 2>&1; then
    cat "$WORK/musl.log" >&2
    echo "bench.sh: musl-build.sh failed" >&2
    exit 1
  fi
  STATIC_BIN=$(sed -n 's/^binary: //p' "$WORK/musl.log")
  STATIC_SYMBOLS=$(sed -n 's/^symbols: //p' "$WORK/musl.log")
  STATIC_SIZE=$(sed -n 's/^size: \([0-9]*\) bytes/\1/p' "$WORK/musl.log")
}
BENCH_BINARY=${BENCH_BINARY:-static}
if [ "${BENCH_ONLY:-}" = compare ]; then
  # BENCH_STATIC and BENCH_GLIBC: binaries built before (of the same commit), instead of building.
  if [ -n "${BENCH_STATIC:-}" ]; then
    STATIC_BIN=$(realpath "$BENCH_STATIC")
    STATIC_SYMBOLS=$STATIC_BIN
    STATIC_SIZE=$(stat -c %s "$STATIC_BIN")
  else
    build_static
  fi
  if [ -n "${BENCH_GLIBC:-}" ]; then RELEASE_BIN=$(realpath "$BENCH_GLIBC"); else build_release; fi
  BIN=$STATIC_BIN
  SYMBOLS=$STATIC_SYMBOLS
else
  case $BENCH_BINARY in
    static)
      build_static
      BIN=$STATIC_BIN
      SYMBOLS=$STATIC_SYMBOLS
      ;;
    release)
      build_release
      # Stripped, but its allocator is libc.so's, whose symbols callgrind reads.
      BIN=$RELEASE_BIN
      SYMBOLS=$BIN
      ;;
    *)
      BIN=$(realpath "$BENCH_BINARY")
      SYMBOLS=$BIN
      if [ -x "$BIN.symbols" ]; then SYMBOLS=$BIN.symbols; fi
      ;;
  esac
fi
machine_line() {
  echo "- machine: $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load average before: $LOAD_BEFORE"
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- One registry at scale (BENCH_ONLY=scale): static-tests/tools/scale.py ----------------------
if [ "${BENCH_ONLY:-}" = scale ]; then
  echo
  echo "## a8registry benchmark: scale"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); binary: $BIN"
  machine_line
  echo "- command: BENCH_ONLY=scale $COMMAND (BENCH_SCALE=${BENCH_SCALE:-1000000 1000})"
  echo
  # shellcheck disable=SC2086 # two numbers, split on purpose
  python3 static-tests/tools/scale.py "$BIN" ${BENCH_SCALE:-1000000 1000}
  exit 0
fi

# --- A long run (BENCH_ONLY=soak): static-tests/tools/soak.py -----------------------------------
if [ "${BENCH_ONLY:-}" = soak ]; then
  echo
  echo "## a8registry benchmark: soak"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); binary: $BIN"
  machine_line
  echo "- command: BENCH_ONLY=soak $COMMAND (BENCH_SOAK=${BENCH_SOAK:-30 100000})"
  echo
  # shellcheck disable=SC2086 # two numbers, split on purpose
  python3 static-tests/tools/soak.py "$BIN" ${BENCH_SOAK:-30 100000}
  exit 0
fi

# --- Instructions and allocations per request (BENCH_ONLY=instructions) --------------------------
# Each request kind runs the server twice under callgrind (one worker, one keep-alive connection
# pipelining 100 requests at a time after the same fixture of 100 instances), with 1,000 and 6,000
# requests: the difference divided by 5,000 is what one request costs, with the fixture, startup
# and shutdown cancelled out. Repeatable on a busy machine, unlike requests per second.
instructions_run() { # kind requests -> "instructions allocations" of the whole run
  local out=$WORK/callgrind-$1-$2 log=$WORK/callgrind-$1-$2.log pid port tries=0
  valgrind --tool=callgrind --callgrind-out-file="$out" "$SYMBOLS" \
    --api_bind 127.0.0.1 --api_port 0 --workers 1 </dev/null >/dev/null 2>"$log" &
  pid=$!
  PIDS+=("$pid")
  until port=$(grep -m1 -o 'address="127.0.0.1:[0-9]*"' "$log" | grep -o '[0-9]*"$' | tr -d '"'); do
    tries=$((tries + 1))
    if [ "$tries" -gt 3000 ] || ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      echo "bench.sh: the server did not start under callgrind" >&2
      exit 1
    fi
    sleep 0.01
  done
  python3 "$ROOT/static-tests/tools/instruction_client.py" 127.0.0.1 "$port" "$1" "$2"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  local pid_left kept=()
  for pid_left in "${PIDS[@]}"; do
    if [ "$pid_left" != "$pid" ]; then kept+=("$pid_left"); fi
  done
  PIDS=(${kept[@]+"${kept[@]}"})
  python3 "$ROOT/static-tests/tools/callgrind_counts.py" "$out"
}

if [ "${BENCH_ONLY:-}" = instructions ]; then
  command -v valgrind >/dev/null || { echo "bench.sh: valgrind is required" >&2; exit 1; }
  rows=()
  for kind in hb svc reg new renew; do
    echo "bench.sh: instructions, $kind" >&2
    read -r small_instructions small_allocations < <(instructions_run "$kind" 1000)
    read -r large_instructions large_allocations < <(instructions_run "$kind" 6000)
    case $kind in
      hb) name='`PUT /api/v1/instances/{id}/heartbeat`' ;;
      svc) name='`GET /api/v1/services/{name}`, 100 instances (cached)' ;;
      reg) name='`POST /api/v1/instances`, the same instance again' ;;
      new) name='`POST /api/v1/instances`, a new instance each' ;;
      renew) name='Eureka `PUT /eureka/v2/apps/{app}/{id}` (renew)' ;;
    esac
    rows+=("$(awk -v name="$name" -v si="$small_instructions" -v li="$large_instructions" \
      -v sa="$small_allocations" -v la="$large_allocations" 'BEGIN {
        allocations = (la - sa) / 5000
        if (allocations < 0.05 && allocations > -0.05) allocations = 0 # no "-0.0"
        printf "| %s | %d | %.1f |", name, (li - si) / 5000, allocations }')")
  done
  echo
  echo "## a8registry benchmark: instructions and allocations per request"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: BENCH_ONLY=instructions BENCH_BINARY=$BENCH_BINARY $COMMAND; $(valgrind --version)"
  echo "- binary: $BIN${STATIC_SIZE:+ ($STATIC_SIZE bytes)}; counted on $SYMBOLS"
  machine_line
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git --no-optional-locks diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
  echo
  echo "| Request | Instructions | Allocations |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
  exit 0
fi

# Starts a server in the background (extra options after its name) and sets SERVER_PID and PORT.
# Port 0 lets the kernel pick a
# free port; the server says which in its startup line. Logging stays at its default level (info),
# as an operator would run it. TTLs of 10 minutes: nothing expires during the run.
start_server() {
  local log=$WORK/server-$1.log
  "$BIN" --api_bind 127.0.0.1 --api_port 0 --max_ttl 10m --default_ttl 10m "${@:2}" \
    </dev/null >/dev/null 2>"$log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  local tries=0
  until grep -qs 'msg="listening"' "$log"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 1000 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "bench.sh: the server did not start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.01
  done
  PORT=$(grep -m1 -o 'address="127.0.0.1:[0-9]*"' "$log" | grep -o '[0-9]*"$' | tr -d '"')
  STARTUP_MICROS=$(grep -m1 -o 'startup_micros="[0-9]*"' "$log" | grep -o '[0-9]*')
}

# Stops a server this script started and forgets its PID, so the exit trap never signals a PID
# the system may have handed to some other process since.
stop_server() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local pid kept=()
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    if [ "$pid" != "$1" ]; then kept+=("$pid"); fi
  done
  PIDS=(${kept[@]+"${kept[@]}"})
}

rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# --- Helpers written to the scratch directory --------------------------------------------------

# Registers COUNT instances of SERVICE (endpoint values derived from indexes FIRST..FIRST+COUNT-1)
# over a few keep-alive connections, pipelining a batch of requests per write: ten thousand
# registrations take well under a second, a hundred thousand a few seconds. Writes the ids to
# IDS_FILE (if given) and fails on any answer other than 201.
cat >"$WORK/register.py" <<'EOF'
import json, socket, sys, threading, time

port, service, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids_path = sys.argv[5] if len(sys.argv) > 5 else None
CONNECTIONS, BATCH = 4, 256

def request(i):
    value = "10.%d.%d.%d:%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255, 1024 + (i >> 24))
    body = json.dumps({"service_name": service, "endpoint": {"type": "tcp", "value": value},
                       "ttl": 600})
    return ("POST /api/v1/instances HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)).encode()

def read_response(reader):
    status = int(reader.readline().split()[1])
    length = 0
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)

results, errors = [[] for _ in range(CONNECTIONS)], []

def worker(n):
    indexes = range(first + n, first + count, CONNECTIONS)
    with socket.create_connection(("127.0.0.1", int(port))) as conn:
        reader = conn.makefile("rb")
        for start in range(0, len(indexes), BATCH):
            batch = indexes[start:start + BATCH]
            conn.sendall(b"".join(request(i) for i in batch))
            for _ in batch:
                status, body = read_response(reader)
                if status != 201:
                    errors.append("%d %r" % (status, body))
                    return
                results[n].append(json.loads(body)["id"])

began = time.perf_counter()
threads = [threading.Thread(target=worker, args=(n,)) for n in range(CONNECTIONS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    sys.exit("register.py: %s" % errors[0])
ids = [i for r in results for i in r]
if len(ids) != count:
    sys.exit("register.py: %d of %d registered" % (len(ids), count))
print("register.py: %d instances of %s in %.2f s" % (count, service, time.perf_counter() - began),
      file=sys.stderr)
if ids_path:
    with open(ids_path, "w") as f:
        f.write("\n".join(ids) + "\n")
EOF

# Counts the instances of every status the server holds (ids only, to keep the body small).
count_instances() {
  curl -sf "http://127.0.0.1:$1/api/v1/instances?status=ALL&fields=id" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["instances"]))'
}

# Time from exec to the first answered request: spawn the binary on a port picked just before, poll
# GET / over raw sockets (a refused connect costs microseconds; a 0.2 ms pause leaves the CPU to
# the starting server) and take the median of the runs. Also the startup_micros the server logs.
cat >"$WORK/startup.py" <<'EOF'
import re, socket, statistics, subprocess, sys, time

binary, logdir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def answered(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return c.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

millis, micros = [], []
for run in range(runs):
    port, log = free_port(), "%s/startup-%d.log" % (logdir, run)
    with open(log, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([binary, "--api_bind", "127.0.0.1", "--api_port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            while not answered(port):
                if proc.poll() is not None or time.perf_counter() - start > 10:
                    sys.exit("startup.py: no answer from the server; see its log above")
                time.sleep(0.0002)
            millis.append((time.perf_counter() - start) * 1000)
        finally:
            proc.kill()
            proc.wait()
    found = re.search(r'startup_micros="(\d+)"', open(log).read())
    if found:
        micros.append(int(found.group(1)))
print("%.1f ms (runs: %s)" % (statistics.median(millis), ", ".join("%.1f" % m for m in millis)))
print("%d us (runs: %s)" % (statistics.median(micros), ", ".join(map(str, micros)))
      if micros else "not logged")
EOF

# --- wrk scripts -----------------------------------------------------------------------------

# Every wrk run ends with this done(): one machine-readable line, so the table needs no scraping
# of wrk's human output. Latencies are in microseconds.
cat >"$WORK/report.lua" <<'EOF'
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH rps=%.0f p50=%d p99=%d non2xx=%d sockerr=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF

# (b) heartbeats cycling over the registered ids; each thread starts at its own offset. The ids are
# only known after registering, so this part is put behind an `ids = {...}` table below.
cat >"$WORK/heartbeat-body.lua" <<'EOF'
local thread_count = 0
function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end
local next_index
function init(args)
  next_index = (id or 0) * math.floor(#ids / 2)
end
function request()
  next_index = next_index + 1
  return wrk.format("PUT", "/api/v1/instances/" .. ids[next_index % #ids + 1] .. "/heartbeat")
end
EOF
cat "$WORK/report.lua" >>"$WORK/heartbeat-body.lua"

# (c) registrations of new instances: a counter per thread, each thread in its own range of
# 2^24 values, so every request is a new endpoint and therefore a new id.
cat >"$WORK/register.lua" <<'EOF'
local thread_count = 0
function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end
local counter
function init(args)
  counter = ((id or 0) + 1) * 16777216
end
local headers = { ["Content-Type"] = "application/json" }
function request()
  counter = counter + 1
  local value = string.format("10.%d.%d.%d:%d", math.floor(counter / 65536) % 256,
    math.floor(counter / 256) % 256, counter % 256, 1024 + math.floor(counter / 16777216))
  local body = '{"service_name":"bench-post","endpoint":{"type":"tcp","value":"' .. value ..
    '"},"ttl":600}'
  return wrk.format("POST", "/api/v1/instances", headers, body)
end
EOF
cat "$WORK/report.lua" >>"$WORK/register.lua"

# Runs wrk and turns its report line into a table row: name | req/s | p50 | p99 | errors.
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
bench() {
  local name=$1 script=$2 url=$3
  shift 3
  local out=$WORK/wrk-$(echo "$name" | tr -c 'a-z0-9' '_').txt
  echo "bench.sh: $name ($DURATION)" >&2
  "${WRK[@]}" -s "$script" "$@" "$url" >"$out" 2>&1
  local line rps p50 p99 non2xx sockerr
  line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; echo "bench.sh: wrk failed" >&2; exit 1; }
  rps=$(echo "$line" | sed 's/.*rps=\([0-9]*\).*/\1/')
  p50=$(echo "$line" | sed 's/.*p50=\([0-9]*\).*/\1/')
  p99=$(echo "$line" | sed 's/.*p99=\([0-9]*\).*/\1/')
  non2xx=$(echo "$line" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
  sockerr=$(echo "$line" | sed 's/.*sockerr=\([0-9]*\).*/\1/')
  # bench runs in a command substitution: what callers need next goes through files.
  echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/' >"$WORK/last-requests"
  echo "$rps" >"$WORK/last-rps"
  printf '| %s | %s | %s | %s | %s non-2xx, %s socket |\n' \
    "$name" "$rps" "$(ms "$p50")" "$(ms "$p99")" "$non2xx" "$sockerr"
}

# --- The Redis store -------------------------------------------------------------------------
# The same rows (a), (b), (c) against --store redis with redis-server on loopback, the in-memory
# store's (a) in the same run for the ratio, redis-benchmark's SET rate, and the Redis commands
# each route costs, from INFO commandstats (commands inside scripts included).
REDIS_PORT=
start_redis() {
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    </dev/null >"$WORK/redis.log" 2>&1 &
  PIDS+=("$!")
  REDIS_PID=$!
  local tries=0
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 500 ]; then echo "bench.sh: redis-server did not start" >&2; exit 1; fi
    sleep 0.01
  done
}

# "N calls/request (cmd a, cmd b, ...)" for the commands Redis ran since the last reset.
commands_per_request() {
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
    awk -F'[:=,]' -v n="$1" '/^cmdstat_/ {
        name = substr($1, 9); if (name == "config" || name == "info") next
        calls[name] = $3; total += $3 }
      END {
        printf "%.1f commands/request:", total / n
        for (c in calls) if (calls[c] / n >= 0.05) printf " %s %.2f", c, calls[c] / n
        printf "\n" }'
}

redis_rows() {
  start_redis
  echo "bench.sh: redis-benchmark SET" >&2
  SET_RPS=$(redis-benchmark -p "$REDIS_PORT" -t set -n 200000 -c 64 -q 2>/dev/null | tr '\r' '\n' |
    grep -o 'SET: [0-9.]*' | tail -1 | grep -o '[0-9.]*$')
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  local log=$WORK/server-redis.log
  "$BIN" --api_bind 127.0.0.1 --api_port 0 --max_ttl 10m --default_ttl 10m \
    --store redis --store_address "127.0.0.1:$REDIS_PORT" </dev/null >/dev/null 2>"$log" &
  local pid=$!
  PIDS+=("$pid")
  until grep -qs 'msg="listening"' "$log"; do sleep 0.01; done
  local port url
  port=$(grep -m1 -o 'address="127.0.0.1:[0-9]*"' "$log" | grep -o '[0-9]*"$' | tr -d '"')
  url=http://127.0.0.1:$port
  python3 "$WORK/register.py" "$port" bench-a 0 100
  python3 "$WORK/register.py" "$port" bench-hb 0 10000 "$WORK/heartbeat-ids-redis"
  {
    echo 'ids = {'
    sed 's/.*/"&",/' "$WORK/heartbeat-ids-redis"
    echo '}'
    cat "$WORK/heartbeat-body.lua"
  } >"$WORK/heartbeat-redis.lua"
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  REDIS_ROW_A=$(bench "(a) GET /api/v1/services/{name}, 100 instances, redis" "$WORK/report.lua" \
    "$url/api/v1/services/bench-a")
  REDIS_RPS_A=$(cat "$WORK/last-rps")
  REDIS_CMDS_A=$(commands_per_request "$(cat "$WORK/last-requests")")
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  REDIS_ROW_B=$(bench "(b) PUT /api/v1/instances/{id}/heartbeat, 10,000 ids, redis" \
    "$WORK/heartbeat-redis.lua" "$url")
  REDIS_RPS_B=$(cat "$WORK/last-rps")
  REDIS_CMDS_B=$(commands_per_request "$(cat "$WORK/last-requests")")
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  REDIS_ROW_C=$(bench "(c) POST /api/v1/instances, a new instance each, redis" "$WORK/register.lua" "$url")
  REDIS_CMDS_C=$(commands_per_request "$(cat "$WORK/last-requests")")
  stop_server "$pid"
}

redis_report() {
  echo
  echo "| Request (--store redis) | Requests/s | p50 | p99 | Errors |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "$REDIS_ROW_A" "$REDIS_ROW_B" "$REDIS_ROW_C"
  echo
  echo "- redis-benchmark SET (-c 64, same machine): $SET_RPS requests/s"
  awk -v r="$REDIS_RPS_A" -v m="$MEMORY_RPS_A" -v h="$REDIS_RPS_B" -v s="$SET_RPS" 'BEGIN {
    printf "- (a) on Redis / (a) in memory: %.2f; (b) heartbeats on Redis / SET rate: %.2f\n", r / m, h / s }'
  echo "- Redis commands per request, (a): $REDIS_CMDS_A"
  echo "- Redis commands per request, (b): $REDIS_CMDS_B"
  echo "- Redis commands per request, (c): $REDIS_CMDS_C"
}

# BENCH_ONLY=redis: the Redis rows and the in-memory (a) they are compared with, nothing else.
if [ "${BENCH_ONLY:-}" = redis ]; then
  start_server memory-a
  python3 "$WORK/register.py" "$PORT" bench-a 0 100
  MEMORY_ROW_A=$(bench "(a) GET /api/v1/services/{name}, 100 instances, in memory" \
    "$WORK/report.lua" "http://127.0.0.1:$PORT/api/v1/services/bench-a")
  MEMORY_RPS_A=$(cat "$WORK/last-rps")
  stop_server "$SERVER_PID"
  redis_rows
  echo
  echo "## a8registry benchmark: the Redis store"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- command: BENCH_ONLY=redis $COMMAND (BENCH_DURATION=$DURATION); $(redis-server --version | cut -d' ' -f3)"
  echo
  echo "| Request (in memory) | Requests/s | p50 | p99 | Errors |"
  echo "|---|---|---|---|---|"
  echo "$MEMORY_ROW_A"
  redis_report
  exit 0
fi

# --- A merged read of catalog instances --------------------------------------------------------
# One server holding 1,000 registered instances of one service and mirroring 1,000 instances of
# another from a file catalog: GET of each, alternately, twice.
catalog_rows() {
  mkdir -p "$WORK/catalog"
  python3 - "$WORK/catalog/default.json" <<'EOF'
import json, sys
instances = [{"service_name": "bench-cat", "endpoint": {"type": "tcp", "value": f"10.2.{i // 250}.{i % 250}:80"}}
             for i in range(1000)]
json.dump({"instances": instances}, open(sys.argv[1], "w"))
EOF
  start_server catalog --fs_catalog "$WORK/catalog"
  local url=http://127.0.0.1:$PORT
  python3 "$WORK/register.py" "$PORT" bench-reg 0 1000
  local tries=0
  until [ "$(curl -s "$url/api/v1/services/bench-cat" | grep -o '"id"' | wc -l)" = 1000 ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 500 ]; then echo "bench.sh: the file catalog was not loaded" >&2; exit 1; fi
    sleep 0.01
  done
  local round rows=()
  for round in 1 2; do
    rows+=("$(bench "(f) GET /api/v1/services/{name}, 1,000 registered instances, run $round" \
      "$WORK/report.lua" "$url/api/v1/services/bench-reg")")
    rows+=("$(bench "(g) GET /api/v1/services/{name}, 1,000 file catalog instances, run $round" \
      "$WORK/report.lua" "$url/api/v1/services/bench-cat")")
  done
  stop_server "$SERVER_PID"
  CATALOG_ROWS=$(printf '%s\n' "${rows[@]}")

  # Pick-up times: a file rewritten in place, and an instance registered on a remote registry
  # that this one mirrors with --catalog_poll 1s; 10 trials each at random moments.
  mkdir -p "$WORK/pickup"
  start_server remote
  local remote_pid=$SERVER_PID remote_port=$PORT
  start_server mirror --fs_catalog "$WORK/pickup" --catalog_poll 1s \
    --eureka_url "http://127.0.0.1:$remote_port/eureka/v2"
  local files eureka
  files=$(python3 "$ROOT/static-tests/tools/catalog_pickup.py" files "$WORK/pickup" "$PORT" 10)
  eureka=$(python3 "$ROOT/static-tests/tools/catalog_pickup.py" eureka "$remote_port" "$PORT" 10)
  stop_server "$SERVER_PID"
  stop_server "$remote_pid"
  PICKUP_ROWS=$(printf '| files (--fs_catalog) | %s |\n| remote Eureka (--catalog_poll 1s) | %s |' \
    "$(echo "$files" | sed 's/ / ms \/ /g') ms" "$(echo "$eureka" | sed 's/ / ms \/ /g') ms")
}

catalog_report() {
  echo
  echo "| Request (--fs_catalog) | Requests/s | p50 | p99 | Errors |"
  echo "|---|---|---|---|---|"
  echo "$CATALOG_ROWS"
  echo
  echo "| Change at the source to listed (10 trials) | min / median / max |"
  echo "|---|---|"
  echo "$PICKUP_ROWS"
}

# BENCH_ONLY=catalogs: the merged-read rows alone.
if [ "${BENCH_ONLY:-}" = catalogs ]; then
  catalog_rows
  echo
  echo "## a8registry benchmark: catalog reads"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- command: BENCH_ONLY=catalogs $COMMAND (BENCH_DURATION=$DURATION)"
  catalog_report
  exit 0
fi

# --- Full fetches at 100,000 instances, plain and gzip (BENCH_ONLY=gzip) ------------------------
# 100 services of 1,000 instances; the bytes and the server's CPU per full fetch, each encoding
# (static-tests/tools/full_fetch.py says how it counts).
if [ "${BENCH_ONLY:-}" = gzip ]; then
  start_server gzip
  for service in $(seq 0 99); do
    python3 "$WORK/register.py" "$PORT" "bench-$service" $((service * 1000)) 1000 2>/dev/null
  done
  echo
  echo "## a8registry benchmark: full fetches, plain and gzip"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: BENCH_ONLY=gzip $COMMAND"
  machine_line
  echo "- $(count_instances "$PORT") instances in 100 services; RSS $(rss_kib "$SERVER_PID") KiB"
  echo
  echo "| Full fetch | Coding | Body bytes | Server CPU, built | Server CPU, again (cached when the namespace is small) | Wall, built |"
  echo "|---|---|---|---|---|---|"
  python3 "$ROOT/static-tests/tools/full_fetch.py" "$PORT" "$SERVER_PID" "${BENCH_ROUNDS:-5}"
  echo "- RSS after: $(rss_kib "$SERVER_PID") KiB"
  stop_server "$SERVER_PID"
  exit 0
fi

# --- The static binary against the glibc one (BENCH_ONLY=compare) -------------------------------
# One server of each, with the same fixtures, measured alternately (static, glibc, static,
# glibc) row by row, so that a change in the machine's load falls on both.
if [ "${BENCH_ONLY:-}" = compare ]; then
  declare -A COMPARE_PORT
  for kind in static glibc; do
    if [ "$kind" = static ]; then BIN=$STATIC_BIN; else BIN=$RELEASE_BIN; fi
    start_server "compare-$kind"
    COMPARE_PORT[$kind]=$PORT
    python3 "$WORK/register.py" "$PORT" bench-a 0 100
    python3 "$WORK/register.py" "$PORT" bench-hb 0 10000 "$WORK/heartbeat-ids-$kind"
    {
      echo 'ids = {'
      sed 's/.*/"&",/' "$WORK/heartbeat-ids-$kind"
      echo '}'
      cat "$WORK/heartbeat-body.lua"
    } >"$WORK/heartbeat-$kind.lua"
  done
  rows=()
  for row in a b d c; do
    declare -A rps=()
    for round in 1 2; do
      for kind in static glibc; do
        url=http://127.0.0.1:${COMPARE_PORT[$kind]}
        case $row in
          a) name="(a) GET /api/v1/services/{name}, 100 instances"
            bench "$name, $kind" "$WORK/report.lua" "$url/api/v1/services/bench-a" >/dev/null ;;
          b) name="(b) PUT /api/v1/instances/{id}/heartbeat, 10,000 ids"
            bench "$name, $kind" "$WORK/heartbeat-$kind.lua" "$url" >/dev/null ;;
          c) name="(c) POST /api/v1/instances, a new instance each"
            bench "$name, $kind" "$WORK/register.lua" "$url" >/dev/null ;;
          d) name="(d) GET /api/v1/instances?service_name={name}, 100 instances"
            bench "$name, $kind" "$WORK/report.lua" "$url/api/v1/instances?service_name=bench-a" >/dev/null ;;
        esac
        rps[$kind$round]=$(cat "$WORK/last-rps")
      done
    done
    rows+=("$(awk -v name="$name" -v s1="${rps[static1]}" -v s2="${rps[static2]}" \
      -v g1="${rps[glibc1]}" -v g2="${rps[glibc2]}" 'BEGIN {
        printf "| %s | %d, %d | %d, %d | %.2f |", name, s1, s2, g1, g2, (s1 + s2) / (g1 + g2) }')")
  done
  echo
  echo "## a8registry benchmark: the static binary against the glibc one"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: BENCH_ONLY=compare $COMMAND (BENCH_DURATION=$DURATION); ${WRK[*]}, alternately"
  machine_line
  echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- static: $STATIC_BIN ($STATIC_SIZE bytes); glibc: $RELEASE_BIN"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git --no-optional-locks diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
  echo
  echo "| Request | static, requests/s (run 1, 2) | glibc, requests/s (run 1, 2) | static / glibc |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  exit 0
fi

# --- Throughput and latency ------------------------------------------------------------------
START_SECONDS=$SECONDS
start_server main
MAIN_PID=$SERVER_PID
MAIN_PORT=$PORT
MAIN_STARTUP_MICROS=$STARTUP_MICROS
URL=http://127.0.0.1:$MAIN_PORT

echo "bench.sh: registering fixtures" >&2
python3 "$WORK/register.py" "$MAIN_PORT" bench-a 0 100
python3 "$WORK/register.py" "$MAIN_PORT" bench-hb 0 10000 "$WORK/heartbeat-ids"
{
  echo 'ids = {'
  sed 's/.*/"&",/' "$WORK/heartbeat-ids"
  echo '}'
  cat "$WORK/heartbeat-body.lua"
} >"$WORK/heartbeat.lua"

ROW_A=$(bench "(a) GET /api/v1/services/{name}, 100 instances" "$WORK/report.lua" \
  "$URL/api/v1/services/bench-a")
ROW_B=$(bench "(b) PUT /api/v1/instances/{id}/heartbeat, 10,000 ids" "$WORK/heartbeat.lua" "$URL")
ROW_D=$(bench "(d) GET /api/v1/instances?service_name={name}, 100 instances" "$WORK/report.lua" \
  "$URL/api/v1/instances?service_name=bench-a")

# (e) only once the Eureka API exists; on a fresh server holding exactly 1,000 instances.
EUREKA_STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' \
  "$URL/eureka/v2/apps")
if [ "$EUREKA_STATUS" = 200 ]; then
  start_server eureka
  for app in 0 1 2 3 4 5 6 7 8 9; do
    python3 "$WORK/register.py" "$PORT" "bench-e$app" "$((app * 100))" 100
  done
  ROW_E=$(bench "(e) GET /eureka/v2/apps (JSON), 1,000 instances" "$WORK/report.lua" \
    "http://127.0.0.1:$PORT/eureka/v2/apps" -H 'Accept: application/json')
  stop_server "$SERVER_PID"
else
  ROW_E="| (e) GET /eureka/v2/apps (JSON), 1,000 instances | n/a (no Eureka API yet) | | | GET answered $EUREKA_STATUS |"
fi

# (c) last: it adds an instance per request, which would change the store under the other rows.
ROW_C=$(bench "(c) POST /api/v1/instances, a new instance each" "$WORK/register.lua" "$URL")
POST_COUNT=$(count_instances "$MAIN_PORT")
MAIN_RSS_AFTER=$(rss_kib "$MAIN_PID")
stop_server "$MAIN_PID"

MEMORY_RPS_A=$(echo "$ROW_A" | awk -F'|' '{ gsub(/ /, "", $3); print $3 }')
if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
  redis_rows
  HAVE_REDIS=1
fi

catalog_rows

# --- Memory ------------------------------------------------------------------------------------
echo "bench.sh: memory" >&2
start_server memory
sleep 0.2 # let the fresh server settle before calling it idle
RSS_IDLE=$(rss_kib "$SERVER_PID")
python3 "$WORK/register.py" "$PORT" bench-mem 0 10000
COUNT_10K=$(count_instances "$PORT")
RSS_10K=$(rss_kib "$SERVER_PID")
python3 "$WORK/register.py" "$PORT" bench-mem 10000 90000
COUNT_100K=$(count_instances "$PORT")
RSS_100K=$(rss_kib "$SERVER_PID")
stop_server "$SERVER_PID"

# --- Startup -----------------------------------------------------------------------------------
echo "bench.sh: startup" >&2
mapfile -t STARTUP < <(python3 "$WORK/startup.py" "$BIN" "$WORK" 5)

# --- Binary sizes --------------------------------------------------------------------------------
echo "bench.sh: binary sizes" >&2
if [ -z "${STATIC_SIZE:-}" ]; then build_static; fi
if [ -x "$RELEASE_BIN" ]; then RELEASE_SIZE="$(stat -c %s "$RELEASE_BIN") bytes"; else RELEASE_SIZE="not built"; fi

# --- Watchers ------------------------------------------------------------------------------------
# 10,000 blocking queries woken by one change: the black-box test that checks it prints its
# figures (RSS, wake latency percentiles, the server's CPU for the wake).
echo "bench.sh: 10,000 watchers" >&2
WATCH_FIGURES=$(A8REGISTRY_BIN="$BIN" cargo test --release -q -p a8registry-static-tests --test suite \
  -- --exact watches::ten_thousand_watchers_are_woken_by_one_change --nocapture 2>&1 |
  sed -n 's/.*watch figures: //p')

# --- Report --------------------------------------------------------------------------------------
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f MiB", kib / 1024 }'; }
echo
echo "## a8registry benchmark"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- command: $COMMAND (BENCH_DURATION=$DURATION)"
machine_line
echo "- load: ${WRK[*]} (client and server share the machine), server logging at info"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git --no-optional-locks diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
echo
echo "| Request | Requests/s | p50 | p99 | Errors |"
echo "|---|---|---|---|---|"
printf '%s\n' "$ROW_A" "$ROW_B" "$ROW_C" "$ROW_D" "$ROW_E"
echo
echo "- (c) left $POST_COUNT instances in that server, $(mib "$MAIN_RSS_AFTER") RSS"
echo "- memory (VmRSS): idle $(mib "$RSS_IDLE"); $COUNT_10K instances $(mib "$RSS_10K"); $COUNT_100K instances $(mib "$RSS_100K")"
echo "- exec to first answered GET /, median of 5: ${STARTUP[0]}"
echo "- startup_micros logged: ${STARTUP[1]}; main server ${MAIN_STARTUP_MICROS} us"
echo "- measured: $BIN (BENCH_BINARY=$BENCH_BINARY)"
echo "- release (glibc) binary: $RELEASE_SIZE ($RELEASE_BIN)"
echo "- static binary: $STATIC_SIZE bytes ($STATIC_BIN)"
echo "- watchers: ${WATCH_FIGURES:-the watch test failed; run it alone to see why}"
catalog_report
if [ -n "${HAVE_REDIS:-}" ]; then
  redis_report
else
  echo "- the Redis store: not measured (redis-server and redis-benchmark are missing)"
fi
echo "- bench.sh took $SECONDS s in all, $((SECONDS - START_SECONDS)) s after the release build"
