#!/usr/bin/env bash
# Builds the metadata-interop release binary (reference Rust implementation driver) and prints
# its absolute path as the last line of stdout.
#
# The cargo target directory lives outside the repository clone so that repeated builds (and
# CI runs in fresh clones) reuse the compiled dependencies:
#   METADATA_INTEROP_TARGET (default: $HOME/.cache/metadata-interop-target)
# Cargo's own progress output goes to stderr; pass METADATA_INTEROP_VERBOSE=1 to see it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${METADATA_INTEROP_TARGET:-${HOME:-/root}/.cache/metadata-interop-target}"
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

CARGO_TARGET_DIR="$target" cargo build --release --locked "${quiet[@]}" \
  --manifest-path "$here/Cargo.toml" --bin metadata-interop >&2

bin="$target/release/metadata-interop"
if [ ! -x "$bin" ]; then
  echo "build.sh: expected binary not found at $bin" >&2
  exit 1
fi
echo "$bin"
