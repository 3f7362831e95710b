#!/usr/bin/env bash
# Installs the independent clients used by tests/interop/run.sh:
#   - Debian's libimobiledevice-utils (ideviceinfo, idevice_id, idevicepair, idevicename)
#   - openssl (CLI)
#   - pymobiledevice3 in a venv at ${CARTPREP_VENV:-/var/tmp/cartprep-venv}
# Idempotent; runs as root; never reads stdin.
set -euo pipefail

PMD3_VERSION="11.45.0"
VENV="${CARTPREP_VENV:-/var/tmp/cartprep-venv}"
PYTHON="${CARTPREP_PYTHON:-python3}"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[interop-install] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- apt
APT_PKGS=(libimobiledevice-utils openssl ca-certificates)

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    log "apt: all packages present"
fi

for tool in ideviceinfo idevice_id idevicepair idevicename openssl; do
    command -v "$tool" >/dev/null || { log "missing $tool after install"; exit 1; }
done

# ---------------------------------------------------------------- venv
pmd3_ok() {
    [[ -x "$VENV/bin/python" ]] || return 1
    local v
    v="$("$VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import pymobiledevice3.cli.cli_common  # noqa: F401  (import check, not just metadata)
print(version("pymobiledevice3"))
EOF
)" || return 1
    [[ "$v" == "$PMD3_VERSION" ]]
}

if pmd3_ok; then
    log "venv: pymobiledevice3 $PMD3_VERSION already installed in $VENV"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "venv: creating $VENV with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV" </dev/null
    fi
    log "venv: installing pymobiledevice3==$PMD3_VERSION"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    "$VENV/bin/python" -m pip install -q --upgrade pip wheel </dev/null
    "$VENV/bin/python" -m pip install -q --prefer-binary "pymobiledevice3==$PMD3_VERSION" </dev/null
    pmd3_ok || { log "pymobiledevice3 $PMD3_VERSION import check failed"; exit 1; }
fi

log "done: $(ideviceinfo --version 2>/dev/null || echo 'ideviceinfo ?'), pymobiledevice3 $PMD3_VERSION at $VENV/bin/pymobiledevice3"
