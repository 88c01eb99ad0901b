#!/usr/bin/env bash
# Checks the Go client (clients/go): `go vet` over the module (generated code, tests, example),
# then `go test`, whose tests run the real server (node --import tsx server/main.ts) on free
# 127.0.0.1 ports and exercise the generated client against it, and build and run the example;
# then builds the example as another project would: a new module in a temporary directory
# outside the repository that requires this one through a `replace` to the local checkout.
#
#   scripts/test-go-client.sh [extra go test flags, e.g. -run TestKeys -v]
#
# Needs: go >= 1.26 (google.golang.org/grpc v1.85.0), node >= 20 with the repository's
# node_modules (npm ci). Bounded: go test -timeout (GO_TEST_TIMEOUT, default 5m) and an outer
# `timeout` around each step. -count=1: results are never taken from the test cache, since the
# tests depend on the server's TypeScript sources, which go does not track.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/clients/go"

GO_TEST_TIMEOUT="${GO_TEST_TIMEOUT:-5m}"

if ! command -v go >/dev/null 2>&1; then
  echo "test-go-client: go not found on PATH" >&2
  exit 1
fi
if [[ ! -d "$root/node_modules/tsx" ]]; then
  echo "test-go-client: node_modules/tsx missing: run npm ci at the repository root" >&2
  exit 1
fi

echo "test-go-client: $(go version)"
echo "test-go-client: go vet ./..."
timeout --kill-after=30s 600 go vet ./...
echo "test-go-client: go test ./..."
timeout --kill-after=30s 900 go test -count=1 -timeout "$GO_TEST_TIMEOUT" "$@" ./...

# Another project using the client from a local checkout (clients/go/README.md, "Use from another
# module"). go.sum starts as the client's, so no checksum lookup is needed for what it requires.
outside="$(mktemp -d)"
trap 'rm -rf "$outside"' EXIT
module="$(go list -m)"
cp example/main.go go.sum "$outside/"
(
  cd "$outside"
  go mod init example.com/metadata-try >/dev/null 2>&1
  go mod edit -require="$module@v0.0.0" -replace="$module=$root/clients/go"
  timeout --kill-after=30s 300 go mod tidy
  timeout --kill-after=30s 300 go build -o metadata-try .
  # Read the whole usage before matching: grep -q would stop reading at the first match and,
  # under pipefail, a usage still being written would end the script with SIGPIPE (141).
  usage="$(./metadata-try -h 2>&1 || true)"
  grep -q -- "-addr" <<<"$usage"
)
echo "test-go-client: the example builds outside the repository with replace $module => clients/go"
