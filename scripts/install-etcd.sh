#!/usr/bin/env bash
# Installs etcd 3.4 from Debian's `etcd-server` package, for `npm run bench:rpc` (the comparison
# server of test/bench/rpc.bench.ts) and the tests of the etcd storage backend (CI runs it).
# Only Debian's package archive is used.
#
# Idempotent: when an `etcd` binary is already on PATH nothing is installed. `apt-get update` runs
# at most once, and only when apt does not know the package yet. The package's systemd unit is
# not started (no init here); the benchmark and the tests start their own etcd on 127.0.0.1.
# Prints the etcd version on stdout as its last line. Needs root (apt-get) on first run.
set -euo pipefail

log() { printf 'install-etcd: %s\n' "$*" >&2; }

if ! command -v etcd >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]]; then
    log "etcd is not on PATH and installing it needs root: run 'apt-get install etcd-server' as root"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show etcd-server >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -qq
  fi
  log "apt-get install etcd-server"
  # policy-rc.d keeps the package's maintainer scripts from starting a system-wide etcd.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends etcd-server >/dev/null || status=$?
  if [[ "$created_policy" == 1 ]]; then rm -f "$policy"; fi
  if [[ "$status" != 0 ]]; then
    log "apt-get install etcd-server failed (exit $status)"
    exit "$status"
  fi
fi

# The first line only ("etcd Version: 3.4.23"); no pipe into head, which can SIGPIPE etcd and,
# under pipefail, fail this script.
version="$(etcd --version)"
printf '%s\n' "${version%%$'\n'*}"
