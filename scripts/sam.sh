#!/usr/bin/env bash
# Run the SAM CLI from its own virtualenv (.venv-tools/sam, made by `make tools`), with a Python 3.13
# interpreter on PATH when one can be found: `sam build` runs pip with the Lambda runtime's Python.
#
#   scripts/sam.sh build | validate --lint | deploy --guided | ...
#   scripts/sam.sh --find-python    prints the Python 3.13 it would use, or fails
set -euo pipefail
cd "$(dirname "$0")/.."

SAM=${SAM:-.venv-tools/sam/bin/sam}
export SAM_CLI_TELEMETRY=0

# The first working python3.13: on PATH, else a pyenv or system install. A pyenv shim is on PATH even
# when 3.13 is not the selected version, and then fails to run: such a candidate is skipped.
find_python313() {
    local candidate
    for candidate in "$(command -v python3.13 || true)" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
        /usr/local/bin/python3.13 /usr/bin/python3.13; do
        if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" -c "import pip" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ "${1:-}" == "--find-python" ]]; then
    find_python313
    exit
fi

if [[ ! -x "$SAM" ]]; then
    echo "The SAM CLI is not installed: run 'make tools'." >&2
    exit 2
fi

if python313=$(find_python313); then
    # Only python3.13 goes on PATH, not the rest of its bin folder (its python3, pip).
    shim=.aws-sam/python3.13-path
    mkdir -p "$shim"
    ln -sf "$python313" "$shim/python3.13"
    PATH="$PWD/$shim:$PATH"
fi

exec "$SAM" "$@"
