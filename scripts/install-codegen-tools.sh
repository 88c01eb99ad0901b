#!/usr/bin/env bash
# Installs the code generators that buf.gen.yaml runs as local plugins, into .tools/ (git-ignored).
#
#   .tools/bin/protoc-gen-go           go install, pinned below
#   .tools/bin/protoc-gen-go-grpc      go install, pinned below
#   .tools/venv/                       Python venv with grpcio-tools (its protoc has the Python
#                                      generators built in), protobuf and grpcio, pinned below
#   .tools/bin/protoc-gen-python       wrappers that run clients/python/codegen/protoc_gen_grpc_tools.py
#   .tools/bin/protoc-gen-pyi          in that venv; see that file for why they exist
#   .tools/bin/protoc-gen-grpc_python
#
# protoc-gen-es and buf come from node_modules/.bin (package.json pins them).
#
# Idempotent: a tool that is already present at its pinned version is left alone, so a warm run
# takes well under a second and needs no network. Changing a pin below reinstalls that tool.
# Needs: go (>= 1.24) and python3 (>= 3.9) on PATH, and the Go module proxy and PyPI on first run.
set -euo pipefail

PROTOC_GEN_GO_VERSION="v1.36.12"      # module google.golang.org/protobuf
PROTOC_GEN_GO_GRPC_VERSION="v1.6.2"   # module google.golang.org/grpc/cmd/protoc-gen-go-grpc
# grpcio-tools 1.85.1 bundles libprotoc 35.1 and requires protobuf >=7.35.1,<8 and grpcio >=1.85.1.
PYTHON_PINS=(grpcio-tools==1.85.1 grpcio==1.85.1 protobuf==7.36.2)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin"
venv="$tools/venv"
mkdir -p "$bin"

log() { printf 'install-codegen-tools: %s\n' "$*" >&2; }

# go_tool NAME PACKAGE VERSION: go install PACKAGE@VERSION into .tools/bin unless NAME --version
# already reports VERSION (protoc-gen-go prints "v1.36.12", protoc-gen-go-grpc prints "1.6.2").
go_tool() {
  local name="$1" pkg="$2" version="$3"
  # The version is read whole before matching (grep -q in a pipe could SIGPIPE the tool under pipefail).
  if [[ -x "$bin/$name" ]] && grep -qwF -e "$version" -e "${version#v}" <<<"$("$bin/$name" --version 2>/dev/null || true)"; then
    return
  fi
  log "go install $pkg@$version"
  GOBIN="$bin" GOFLAGS=-mod=mod go install "$pkg@$version"
}

go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# The venv records its pins in .pins; a venv whose pins differ (or that is broken) is rebuilt.
pins="${PYTHON_PINS[*]}"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]] ||
  ! "$venv/bin/python" -c "import grpc_tools.protoc, google.protobuf.compiler.plugin_pb2" 2>/dev/null; then
  log "python venv with $pins"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PYTHON_PINS[@]}"
  printf '%s\n' "$pins" >"$venv/.pins"
fi

# Wrappers are rewritten on every run (cheap) so that they always match this script. They locate
# the repository from their own path, so a moved checkout keeps working.
for generator in python pyi grpc_python; do
  cat >"$bin/protoc-gen-$generator.tmp" <<EOF
#!/bin/sh
# Written by scripts/install-codegen-tools.sh: runs grpcio-tools' built-in "$generator" generator as a protoc plugin.
root="\$(cd "\$(dirname "\$0")/../.." && pwd)"
exec "\$root/.tools/venv/bin/python" "\$root/clients/python/codegen/protoc_gen_grpc_tools.py" $generator "\$@"
EOF
  chmod +x "$bin/protoc-gen-$generator.tmp"
  mv -f "$bin/protoc-gen-$generator.tmp" "$bin/protoc-gen-$generator"
done
