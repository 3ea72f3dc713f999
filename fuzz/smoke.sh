#!/usr/bin/env bash
# A fuzz smoke, not a campaign: every target for FUZZ_SECONDS (30 by default), from its seeds,
# two at a time (FUZZ_PARALLEL). Needs cargo-fuzz. The stable toolchain builds it with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags); `--sanitizer none` keeps the builds
# short. A crash fails the script and leaves its input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build --release --sanitizer none

# One target: its seeds copied into a scratch corpus, its summary printed when it ends.
run_target() {
  local target=$1 corpus log status=0
  corpus="$(mktemp -d)"
  log="$(mktemp)"
  cp -r "seeds/$target/." "$corpus/"
  cargo fuzz run --release --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$FUZZ_SECONDS" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
  {
    echo "fuzz: $target ran ${FUZZ_SECONDS}s"
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE|ERROR|panicked|SUMMARY' "$log" | tail -n 4 || true
  } | sed "s/^/[$target] /"
  rm -rf "$corpus" "$log"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (see fuzz/artifacts/$target/)" >&2
    return 1
  fi
}
export -f run_target

# xargs exits non-zero when any target failed.
printf '%s\n' $targets | xargs -P "${FUZZ_PARALLEL:-2}" -I{} bash -c 'run_target "$1"' _ {}
echo "fuzz: every target ran ${FUZZ_SECONDS}s without a crash"
