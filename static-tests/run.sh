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

# Prometheus, whose Eureka service discovery is another real third-party client: Debian's
# package, installed when missing (CI runs as root on a fresh Debian machine; elsewhere sudo).
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "run.sh: prometheus is missing; install it as root: apt-get install prometheus" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends prometheus
  # Where systemd runs, the package starts its own service on port 9090 of every interface; the
  # tests start their own process on 127.0.0.1 and need no service.
  if [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# The web page's test drives Debian's Chromium with playwright-core (npm, pinned by the lock file).
if [ ! -x /usr/bin/chromium ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "run.sh: chromium is missing; install it as root: apt-get install chromium" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: node and npm are required for the web page's test (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d static-tests/ui/node_modules/playwright-core ]; then
  (cd static-tests/ui && npm ci --no-audit --no-fund --loglevel=error)
fi

# kubectl reads the suite's mock Kubernetes API server, to show it speaks the real format; openssl
# makes the test CA of the Kubernetes TLS tests. Debian's packages, installed when missing; a
# machine where that fails still runs everything else (those tests then fail and say why).
missing=()
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  fi
  if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${missing[@]}"; }; then
    echo "run.sh: could not install ${missing[*]}; the Kubernetes tests that need them will fail" >&2
  fi
fi

# Real Redis servers for the Redis store's tests (standalone, Sentinel, Cluster): Debian's
# packages, installed when missing.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1 \
  || ! command -v redis-cli >/dev/null 2>&1; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "run.sh: redis is missing; install it as root: apt-get install redis-server redis-sentinel" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends redis-server redis-sentinel redis-tools
  # The tests start their own servers on free loopback ports and need no service.
  if [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now redis-server redis-sentinel >/dev/null 2>&1 || true
  fi
fi

cargo build --release --bin a8registry
export A8REGISTRY_BIN="$PWD/target/release/a8registry"

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
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{n += $1} END {print n + 0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{n += $1} END {print n + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
