#!/usr/bin/env bash
# Tests the Python client (clients/python): builds it as a wheel, installs the wheel with its test
# extras into a venv OUTSIDE the clone and runs pytest on clients/python/tests, whose tests start the real server
# (node --import tsx server/main.ts) on free 127.0.0.1 ports and use the installed package
# against it (and run clients/python/examples/example.py).
#
#   scripts/test-python-client.sh [extra pytest args, e.g. -k keys -v]
#
# Venv: ${METADATA_PY_VENV:-$HOME/.cache/metadata-py-venv}, reused across runs. Its dependencies
# are (re)installed only when the pins below, the Python version or clients/python/pyproject.toml
# change (recorded in the venv's .stamp); the client itself is reinstalled on every run, from a
# copy of clients/python so the build leaves nothing in the clone. A warm run needs no network.
#
# Pins: the runtime versions match scripts/install-codegen-tools.sh (the generated code checks them
# at import time); googleapis-common-protos provides google.rpc.status_pb2 (WriteResponse.status);
# pytest and pytest-timeout are pinned in pyproject.toml's `test` extra.
#
# Exit status: pytest's, except that "no tests collected" (pytest's 5) is a failure (1), and a
# run cut by the time bound exits 124.
set -euo pipefail

RUNTIME_PINS=(grpcio==1.85.1 protobuf==7.36.2 googleapis-common-protos==1.76.0)
BUILD_PINS=(setuptools==84.2.1)
PYTEST_RUN_TIMEOUT_S="${PYTEST_RUN_TIMEOUT_S:-900}" # the whole pytest run
PYTEST_TEST_TIMEOUT_S="${PYTEST_TEST_TIMEOUT_S:-180}" # each test (pytest-timeout)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
client="$root/clients/python"
venv="${METADATA_PY_VENV:-${HOME:-/root}/.cache/metadata-py-venv}"
python="${PYTHON:-python3}"

log() { printf 'test-python-client: %s\n' "$*" >&2; }

mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
case "$venv/" in
  "$root/"*)
    log "the venv ($venv) must be outside the repository clone ($root): set METADATA_PY_VENV"
    exit 2
    ;;
esac
if [[ ! -d "$root/node_modules/tsx" ]]; then
  log "node_modules/tsx missing: run npm ci at the repository root"
  exit 1
fi

pip_install() {
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check "$@"
}

# The client is built from a copy of clients/python: no build/ or *.egg-info in the clone.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
tar -C "$client" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache -cf - . |
  tar -C "$scratch" -xf -

stamp="$("$python" -c 'import sys; print(sys.version.splitlines()[0])') | ${RUNTIME_PINS[*]} ${BUILD_PINS[*]} | $(sha256sum "$client/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]] ||
  ! "$venv/bin/python" -c "import grpc, google.protobuf, google.rpc.status_pb2, pytest, pytest_timeout, setuptools" 2>/dev/null; then
  log "creating $venv ($stamp)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip_install "${BUILD_PINS[@]}"
  # The dependencies and the test extra, as declared by this checkout's pyproject.toml.
  pip_install --no-build-isolation "${RUNTIME_PINS[@]}" "$scratch[test]"
  printf '%s\n' "$stamp" >"$venv/.stamp"
fi

# Build the client as a wheel and reinstall it from that wheel on every run (its sources may have
# changed), as another project would install it; no network needed: the dependencies are in
# place and setuptools is in the venv.
wheels="$(mktemp -d)"
trap 'rm -rf "$scratch" "$wheels"' EXIT
"$venv/bin/python" -m pip wheel --quiet --no-input --disable-pip-version-check --no-deps \
  --no-build-isolation --wheel-dir "$wheels" "$scratch"
wheel="$(ls "$wheels"/commonware_metadata-*.whl)"
log "built $(basename "$wheel")"
pip_install --no-deps --force-reinstall "$wheel"

installed="$("$venv/bin/python" -c 'import commonware_metadata as m; print(m.__file__)')"
case "$installed" in
  "$venv"/*) ;;
  *)
    log "commonware_metadata imports from $installed, not from the venv"
    exit 1
    ;;
esac
log "$("$venv/bin/python" --version), $("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -Ei '^(grpcio|protobuf|googleapis-common-protos|pytest|pytest-timeout) ' | tr -s ' ' | paste -sd, -)"

# Run from clients/python so pytest's rootdir is the client; no cache or bytecode in the clone.
cd "$client"
status=0
PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=30s "$PYTEST_RUN_TIMEOUT_S" \
  "$venv/bin/python" -m pytest tests -p no:cacheprovider -ra \
  --timeout="$PYTEST_TEST_TIMEOUT_S" "$@" || status=$?
case "$status" in
  0) ;;
  5)
    log "pytest collected no tests: failing"
    exit 1
    ;;
  124)
    log "pytest did not finish within ${PYTEST_RUN_TIMEOUT_S}s"
    exit 124
    ;;
  *) exit "$status" ;;
esac
