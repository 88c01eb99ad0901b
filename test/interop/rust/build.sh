#!/usr/bin/env bash
# Builds the interop driver of one commonware-storage release and prints its absolute path as
# the last line of stdout:
#   build.sh            (or build.sh 2026.4.0)   test/interop/rust         -> metadata-interop
#   build.sh 2026.10.0                           test/interop/rust-2026.10 -> metadata-interop-2026-10
#
# Each release has its own locked Cargo project and its own cargo target directory outside the
# repository clone, so that repeated builds (and CI runs in fresh clones) reuse the compiled
# dependencies:
#   2026.4.0:  METADATA_INTEROP_TARGET         (default: $HOME/.cache/metadata-interop-target)
#   2026.10.0: METADATA_INTEROP_2026_10_TARGET (default: $HOME/.cache/metadata-interop-2026.10-target)
# Cargo's own progress output goes to stderr; pass METADATA_INTEROP_VERBOSE=1 to see it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
release="${1:-2026.4.0}"
case "$release" in
  2026.4.0)
    project="$here"
    bin_name="metadata-interop"
    target="${METADATA_INTEROP_TARGET:-${HOME:-/root}/.cache/metadata-interop-target}"
    ;;
  2026.10.0)
    project="$here/../rust-2026.10"
    bin_name="metadata-interop-2026-10"
    target="${METADATA_INTEROP_2026_10_TARGET:-${HOME:-/root}/.cache/metadata-interop-2026.10-target}"
    ;;
  *)
    echo "build.sh: unknown release $release (use 2026.4.0 or 2026.10.0)" >&2
    exit 1
    ;;
esac
mkdir -p "$target"
target="$(cd "$target" && pwd)"

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
  else
    echo "build.sh: cargo not found (install a Rust toolchain)" >&2
    exit 1
  fi
fi

quiet=(--quiet)
if [ "${METADATA_INTEROP_VERBOSE:-0}" = "1" ]; then
  quiet=()
fi

bin="$target/release/$bin_name"
if [ ! -x "$bin" ]; then
  echo "build.sh: building the commonware-storage $release interop driver from scratch (about 3 minutes on 2 cores; cached in $target afterwards)" >&2
fi

CARGO_TARGET_DIR="$target" cargo build --release --locked "${quiet[@]}" \
  --manifest-path "$project/Cargo.toml" --bin "$bin_name" >&2

if [ ! -x "$bin" ]; then
  echo "build.sh: expected binary not found at $bin" >&2
  exit 1
fi
echo "$bin"
