#!/usr/bin/env bash
# Installs the independent clients used by tests/interop/run.sh:
#   - Debian's libimobiledevice-utils (ideviceinfo, idevice_id, idevicepair, idevicename)
#   - openssl (CLI)
#   - pymobiledevice3 in a venv at ${CARTPREP_VENV:-/var/tmp/cartprep-venv}
#   - tidevice (Alibaba's client, which makes X.509 v1 host and device certificates when it
#     pairs) in its own venv at ${CARTPREP_TIDEVICE_VENV:-/var/tmp/cartprep-tidevice-venv}
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
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
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
    constraints="$(mktemp)"
    trap 'rm -f "$constraints"' EXIT
    # The dependency set resolved when this script was written (all wheels for
    # cp311/x86_64, no compiler needed). Pinned so CI does not drift when a
    # dependency publishes a new release. Set CARTPREP_PIP_UNPINNED=1 to skip.
    cat >"$constraints" <<'EOF_CONSTRAINTS'
aiofiles==25.1.0
annotated-doc==0.0.7
annotated-types==0.8.0
ansilogs==1.1.0
anyio==4.16.0
arrow==1.4.0
ASGIMiddlewareStaticFile==0.7.0
asgiref==3.13.0
ASGIWebDAV==2.1.0
asn1==2.8.0
asttokens==3.0.2
av==18.1.0
backports.zstd==1.8.0
bpylist2==4.1.1
bytestruct==0.2.0
certifi==2026.10.19.post1
cffi==2.1.1
chardet==7.7.0
charset-normalizer==3.5.3
click==8.5.1
construct==2.10.70
cryptography==50.0.2
daemonize==2.5.0
dataclass-wizard==1.0.0
defusedxml==0.7.1
developer_disk_image==0.3.0
enum-compat==0.0.3
executing==2.3.0
fastapi==0.165.0
h11==0.16.0
hyperframe==6.1.0
idna==3.20
ifaddr==0.2.0
ipsw-parser==1.8.4
ipython==9.18.1
ipython_pygments_lexers==1.1.1
jedi==0.20.1
lzfse==0.4.2.post1
markdown-it-py==4.3.0
matplotlib-inline==0.2.2
mdurl==0.1.2
opack2==0.1.0
opentelemetry-api==1.45.2
packaging==26.4
parso==0.8.7
pexpect==4.9.0
pillow==13.0.0
pmd-net-addr==0.0.3
pmd-net-proto==0.0.3
pmd-pytcp==0.3.8
prompt_toolkit==3.0.53
psutil==7.2.2
ptyprocess==0.7.0
pure_eval==0.2.4
pycparser==3.12
pycrashreport==2.0.0
pycryptodome==4.4.0
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
pygnuutils==0.1.1
pyimg4==0.8.8
pyiosbackup==0.2.4
pykdebugparser==1.10.0
pylzss==0.3.4
python-dateutil==4.0.0
python-dotenv==1.2.4
python-pcapng==2.1.1
pytun-pmd3==3.0.3
pyusb==1.3.1
qh3==1.9.4
questionary==2.1.1
remotezip2==0.0.2
requests==2.34.2
rich==15.0.0
shellingham==1.5.4
srptools==2.0.0
sslpsk-pmd3==1.0.3
stack-data==0.6.3
starlette==1.10.0
termcolor==3.3.0
traitlets==5.16.1
typer==0.29.2
typer-injector==0.3.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
uvicorn==0.54.0
wcwidth==0.9.4
wsproto==1.3.2
xmltodict==1.0.4
EOF_CONSTRAINTS
    pin=(-c "$constraints")
    [[ -n "${CARTPREP_PIP_UNPINNED:-}" ]] && pin=()
    "$VENV/bin/python" -m pip install -q --prefer-binary "pymobiledevice3==$PMD3_VERSION" "${pin[@]}" </dev/null
    pmd3_ok || { log "pymobiledevice3 $PMD3_VERSION import check failed"; exit 1; }
fi

# ---------------------------------------------------------------- tidevice
# Its own venv: tidevice pairs with pyOpenSSL's X509Req.set_version(2), which pyOpenSSL
# refuses from 23.x on, so it needs the older pyOpenSSL/cryptography pair (wheels exist).
TIDEVICE_VERSION="0.12.11"
TIDEVICE_VENV="${CARTPREP_TIDEVICE_VENV:-/var/tmp/cartprep-tidevice-venv}"
tidevice_ok() {
    [[ -x "$TIDEVICE_VENV/bin/tidevice" ]] &&
        "$TIDEVICE_VENV/bin/python" -c 'import tidevice._ca' 2>/dev/null &&
        [[ "$("$TIDEVICE_VENV/bin/tidevice" version 2>/dev/null)" == *"$TIDEVICE_VERSION"* ]]
}
if tidevice_ok; then
    log "venv: tidevice $TIDEVICE_VERSION already installed in $TIDEVICE_VENV"
else
    [[ -x "$TIDEVICE_VENV/bin/python" ]] || "$PYTHON" -m venv "$TIDEVICE_VENV" </dev/null
    log "venv: installing tidevice==$TIDEVICE_VERSION"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$TIDEVICE_VENV/bin/python" -m pip install -q \
        --prefer-binary "tidevice==$TIDEVICE_VERSION" "pyOpenSSL==22.1.0" "cryptography==38.0.4" \
        "pyasn1==0.6.5" </dev/null
    tidevice_ok || { log "tidevice $TIDEVICE_VERSION check failed"; exit 1; }
fi

log "done: $(ideviceinfo --version 2>/dev/null || echo 'ideviceinfo ?'), pymobiledevice3 $PMD3_VERSION at $VENV/bin/pymobiledevice3"
