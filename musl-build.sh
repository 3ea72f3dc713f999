#!/usr/bin/env bash
# Builds a fully static a8registry.
#
# Prefers the x86_64-unknown-linux-musl target (asking rustup for it when rustup exists); falls back
# to a static glibc build (crt-static on x86_64-unknown-linux-gnu) when the musl standard library
# cannot be had. Checks that the result has no interpreter and no dynamic section, then prints the
# target, the path and the size. Exits non-zero if the binary is not static.
set -euo pipefail
cd "$(dirname "$0")"

MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu

musl_std_installed() {
  local dir
  dir=$(rustc --print target-libdir --target "$MUSL" 2>/dev/null) || return 1
  compgen -G "$dir/libstd-*.rlib" >/dev/null
}

if ! musl_std_installed && command -v rustup >/dev/null 2>&1; then
  # Bounded: where nothing can be downloaded this must fail, not hang.
  timeout 300 rustup target add "$MUSL" >/dev/null 2>&1 || true
fi

# Crates that compile C for the target need a C compiler for it.
if [ -z "${CC_x86_64_unknown_linux_musl:-}" ]; then
  if command -v musl-gcc >/dev/null 2>&1; then
    export CC_x86_64_unknown_linux_musl=musl-gcc
  elif command -v cc >/dev/null 2>&1; then
    export CC_x86_64_unknown_linux_musl=cc
  fi
fi

# A static position-dependent executable: a static PIE carries ~80 KB of relocations and GOT
# indirections that the 3 MB budget cannot spare. The cost is that the kernel cannot place the
# program's own code at a random address (ASLR still covers the stack, the heap and mmap).
flags="-C relocation-model=static"

# No unwind tables. The release build aborts on panic (Cargo.toml), so nothing ever unwinds; the
# tables (260 KB, most of them the standard library's, which fat LTO compiles with them whatever
# -C force-unwind-tables says) would serve only a backtrace in the default panic message, and the
# registry's own panic hook logs none. The linker drops every .eh_frame but the C runtime's (its
# start-up code refers to its own) and writes no .eh_frame_hdr; a backtrace then has no frames.
# The cost: debuggers and profilers cannot walk the stack of this binary without its debug
# information (profile the ordinary release build instead).
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
mkdir -p "$target_dir"
unwind_script=$target_dir/no-unwind-tables.ld
cat >"$unwind_script" <<'EOF'
SECTIONS {
  /DISCARD/ : {
    EXCLUDE_FILE(*crtbegin*.o *crtend*.o) *(.eh_frame)
    EXCLUDE_FILE(*crtbegin*.o *crtend*.o) *(.eh_frame.*)
  }
} INSERT AFTER .rodata;
EOF
flags="$flags -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$unwind_script"

# Linked with its symbols, which are then stripped from the binary users get and kept in a copy
# beside it (a8registry.symbols): callgrind and perf read that copy (static-tests/bench.sh
# instructions), and it runs exactly the same code.
export CARGO_PROFILE_RELEASE_STRIP=false
if musl_std_installed; then
  target=$MUSL
  RUSTFLAGS="${RUSTFLAGS:-} $flags" cargo build --release --bin a8registry --target "$target"
else
  target=$GNU
  echo "musl-build.sh: the $MUSL standard library is not available; building a static glibc binary" >&2
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static $flags" \
    cargo build --release --bin a8registry --target "$target"
fi

binary="$target_dir/$target/release/a8registry"
if ! [ -x "$binary" ]; then
  echo "musl-build.sh: $binary was not built" >&2
  exit 1
fi
# Only when cargo linked anew: stripping again an already stripped binary would lose the copy.
if [ "$binary" -nt "$binary.symbols" ] || ! [ -e "$binary.symbols" ]; then
  cp -p "$binary" "$binary.symbols.tmp"
  strip --strip-all "$binary"
  mv "$binary.symbols.tmp" "$binary.symbols"
  touch -r "$binary" "$binary.symbols"
fi
# A static executable has neither a program interpreter nor a dynamic section.
if command -v readelf >/dev/null 2>&1; then
  if readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
    echo "musl-build.sh: $binary has a program interpreter: not static" >&2
    exit 1
  fi
  if readelf -d "$binary" 2>/dev/null | grep -q '(NEEDED)'; then
    echo "musl-build.sh: $binary needs shared libraries: not static" >&2
    exit 1
  fi
fi
if command -v ldd >/dev/null 2>&1; then
  if ldd "$binary" 2>&1 | grep -qv -e 'not a dynamic executable' -e 'statically linked'; then
    echo "musl-build.sh: ldd lists libraries for $binary: not static" >&2
    ldd "$binary" >&2 || true
    exit 1
  fi
fi
size=$(stat -c %s "$binary")
echo "target: $target"
echo "binary: $binary"
echo "size: $size bytes"
echo "symbols: $binary.symbols"
