#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, builds the release
# binary, and runs every test (unit tests beside the code and the black-box suite in
# static-tests/, which starts the built binary on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "run.sh: cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# The suite opens ten thousand concurrent connections; give it descriptors to spare (where the
# hard limit is below 65536, raise the soft limit to it rather than lower both).
ulimit -n 65536 2>/dev/null || ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true

# A real third-party Eureka client for the compatibility tests, in a venv of its own.
PY_EUREKA_CLIENT=py_eureka_client==0.13.3
venv=static-tests/.venv
if ! "$venv/bin/python" -c 'import py_eureka_client' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$PY_EUREKA_CLIENT"
fi

# Debian's packages the tests drive, installed when missing (CI runs as root on a fresh Debian
# machine; elsewhere sudo), all in one apt-get run:
# - prometheus: its Eureka service discovery is a real third-party client, and it scrapes /metrics;
# - chromium: the web page's test drives it with playwright-core (npm, pinned by the lock file);
# - kubernetes-client: kubectl reads the suite's mock Kubernetes API server, to show it speaks the
#   real format; openssl makes the test CA of the Kubernetes TLS tests;
# - redis-server, redis-sentinel, redis-tools: the Redis store's tests start their own
#   standalone, Sentinel and Cluster servers.
packages=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1 &&
  command -v redis-cli >/dev/null 2>&1 || packages+=(redis-server redis-sentinel redis-tools)
if [ "${#packages[@]}" -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "run.sh: missing packages; install them as root: apt-get install ${packages[*]}" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${packages[@]}"
  # Where systemd runs, the packages start their own services on every interface; the tests start
  # their own processes on 127.0.0.1 and need none.
  if [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now prometheus redis-server redis-sentinel >/dev/null 2>&1 || true
  fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: node and npm are required for the web page's test (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d static-tests/ui/node_modules/playwright-core ]; then
  (cd static-tests/ui && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build --release --bin a8registry
export A8REGISTRY_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/a8registry"

# `static-tests/run.sh <filter>...`: only the black-box tests whose names contain a filter.
if [ "$#" -gt 0 ]; then
  exec cargo test --release -p a8registry-static-tests --test suite -- --test-threads=1 "$@"
fi

# Unit tests beside the code, then the black-box suite; one closing line with the totals. One test
# at a time: several suite tests put the 2-core machine under load (a thousand connections,
# 50,000 heartbeats) and must not starve each other.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace --all-targets -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The black-box API suites a second time, against the Redis store (one redis-server started by
# the harness, a database per registry process); tests that pick their store keep it.
A8_TEST_STORE=redis cargo test --release -p a8registry-static-tests --test suite -- \
  --test-threads=1 amalgam8:: auth:: eureka:: expiry:: watches:: hardening:: metrics:: 2>&1 | tee -a "$log"
redis_status=${PIPESTATUS[0]}
if [ "$status" -eq 0 ]; then status=$redis_status; fi
# The binary users run is the static one (musl-build.sh): it must stay under the 3 MB budget,
# and the API suites run once more against it.
static_status=0
static_log=$(mktemp)
if ./musl-build.sh >"$static_log" 2>&1; then
  static_bin=$(sed -n 's/^binary: //p' "$static_log")
  static_size=$(stat -c %s "$static_bin")
  echo "static binary: $static_size bytes ($static_bin)"
  if [ "$static_size" -ge 3000000 ]; then
    echo "run.sh: the static binary is $static_size bytes, over the 3 MB budget" >&2
    static_status=1
  fi
  A8REGISTRY_BIN="$static_bin" cargo test --release -p a8registry-static-tests --test suite -- \
    --test-threads=1 amalgam8:: eureka:: hardening:: 2>&1 | tee -a "$log"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then static_status=1; fi
else
  cat "$static_log" >&2
  static_status=1
fi
rm -f "$static_log"
if [ "$status" -eq 0 ]; then status=$static_status; fi
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{n += $1} END {print n + 0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{n += $1} END {print n + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
