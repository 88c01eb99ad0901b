#!/usr/bin/env bash
# Installs promtool from Debian's `prometheus` package, for the tests that check /metrics
# (`promtool check metrics`) and the alert rules in deploy/prometheus (`promtool check rules`,
# `promtool test rules`). Only Debian's package archive is used; CI runs it.
#
# Idempotent: when a `promtool` binary is already on PATH nothing is installed. `apt-get update`
# runs at most once, and only when apt does not know the package yet. The package's systemd unit
# is not started (no init here). Prints the promtool version on stdout as its last line. Needs
# root (apt-get) on first run.
set -euo pipefail

log() { printf 'install-promtool: %s\n' "$*" >&2; }

if ! command -v promtool >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]]; then
    log "promtool is not on PATH and installing it needs root: run 'apt-get install prometheus' as root"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -qq
  fi
  log "apt-get install prometheus"
  # policy-rc.d keeps the package's maintainer scripts from starting a system-wide Prometheus.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null || status=$?
  if [[ "$created_policy" == 1 ]]; then rm -f "$policy"; fi
  if [[ "$status" != 0 ]]; then
    log "apt-get install prometheus failed (exit $status)"
    exit "$status"
  fi
fi

# The first line only ("promtool, version 2.45.3+ds (branch: ...)"); no pipe into head, which can
# SIGPIPE promtool and, under pipefail, fail this script.
version="$(promtool --version 2>&1)"
printf '%s\n' "${version%%$'\n'*}"
