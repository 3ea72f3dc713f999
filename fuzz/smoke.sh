#!/usr/bin/env bash
# A fuzz smoke, not a campaign: every target for FUZZ_SECONDS (30 by default), from its seeds.
# Needs cargo-fuzz. The stable toolchain builds it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes
# nightly-only flags); `--sanitizer none` keeps the builds short. A crash fails the script and
# leaves its input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build --release --sanitizer none
for target in $targets; do
  corpus="$(mktemp -d)"
  cp -r "seeds/$target/." "$corpus/"
  echo "fuzz: $target for ${seconds}s"
  log="$(mktemp)"
  status=0
  cargo fuzz run --release --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^stat::number_of_executed_units|^#[0-9]+.*(DONE|cov:)|ERROR|panicked|SUMMARY' "$log" | tail -n 4 || true
  rm -f "$log"
  rm -rf "$corpus"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (see fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
