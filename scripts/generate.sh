#!/usr/bin/env bash
# Regenerates every client from proto/ with `buf generate` (plugins and outputs: buf.gen.yaml).
#
#   scripts/generate.sh           install the local plugins if missing, then regenerate
#   scripts/generate.sh --check   the same, then fail if the generated code differs from git
#                                 (a change to a tracked file, or a file git does not know yet)
#
# `npm run generate` and `npm run check:generated` call this. Generated code is committed, so a
# fresh clone builds without running it; CI runs the --check form. Output is deterministic: two
# runs in a row leave no diff. buf.gen.yaml has `clean: true`, so each gen/ folder below is
# emptied and rewritten whole; nothing hand-written may live in one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Every `out` of buf.gen.yaml.
gen_dirs=(clients/ts/gen clients/go/gen clients/python/src/commonware_metadata/gen)

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

bash scripts/install-codegen-tools.sh
# Local plugins resolve from .tools/bin (Go, Python) and node_modules/.bin (protoc-gen-es, buf).
PATH="$root/.tools/bin:$root/node_modules/.bin:$PATH" buf generate
# The descriptors with their source comments, served by reflection (server/rpc/reflection.ts).
# Written after `buf generate`, whose `clean: true` empties clients/ts/gen.
descriptor_set="$(mktemp)"
trap 'rm -f "$descriptor_set"' EXIT
node_modules/.bin/buf build --as-file-descriptor-set -o "$descriptor_set#format=binpb"
node scripts/embed-descriptor-set.mjs "$descriptor_set" clients/ts/gen/descriptor_set.ts

if [[ "$check" == true ]]; then
  status=0
  if ! git diff --exit-code --stat -- "${gen_dirs[@]}"; then
    status=1
  fi
  untracked="$(git ls-files --others --exclude-standard -- "${gen_dirs[@]}")"
  if [[ -n "$untracked" ]]; then
    printf 'untracked generated files:\n%s\n' "$untracked"
    status=1
  fi
  if [[ "$status" -ne 0 ]]; then
    echo "generated code is out of date: run \`npm run generate\` and commit the result" >&2
    exit 1
  fi
  echo "generated code is up to date"
fi
