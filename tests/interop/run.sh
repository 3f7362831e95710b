#!/usr/bin/env bash
# Interop checks: independent clients (Debian's libimobiledevice 1.3.0 tools and
# pymobiledevice3 11.45.0) against `cartprep sim`.
#
#   tests/interop/run.sh path/to/cartprep
#
# Needs the tools from tests/interop/install.sh. Stage 1 starts
#   cartprep sim --devices 3 --listen 127.0.0.1:$PORT --state $DIR
# takes the expected values from its `plugged slot=N udid=... serial=... model=...
# ios=... name="..."` lines, and checks what the clients report (listing, pairing,
# sessions, names). Stage 2 (tests/interop/supervision.sh, sourced from here) starts a
# second simulator with --activated --devices 2 (own port, state and HOME) and checks
# MCInstall: supervision, escalation, silent Wi-Fi install, activation state, erase.
# Prints one `ok - NAME` / `not ok - NAME` line per check and ends with
# `N passed, M failed`; exits 1 if any check failed (and prints the simulator logs).
#
# Environment: CARTPREP_VENV (default /var/tmp/cartprep-venv), INTEROP_PORT and
# INTEROP_PORT2 (default: free ports), INTEROP_KEEP=1 keeps the work directory,
# INTEROP_EXTRA=1 adds stage-1 profile/activation smoke checks, INTEROP_SKIP_SUPERVISION=1
# skips stage 2, INTEROP_STARTUP_TIMEOUT (seconds, default 30).
set -uo pipefail

BIN="${1:?usage: $0 path/to/cartprep}"
VENV="${CARTPREP_VENV:-/var/tmp/cartprep-venv}"
PMD3="$VENV/bin/pymobiledevice3"
PY="$VENV/bin/python"
STARTUP_TIMEOUT="${INTEROP_STARTUP_TIMEOUT:-30}"
CMD_TIMEOUT=60

passed=0
failed=0
SIM_PID=""
SIM2_PID=""   # stage 2 (supervision.sh)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cartprep-interop.XXXXXX")"
STATE="$WORK/state"
SIM_OUT="$WORK/sim.stdout"
SIM_ERR="$WORK/sim.stderr"
mkdir -p "$STATE" "$WORK/home" "$WORK/logs"

stop_sim() {
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
}

cleanup() {
    stop_sim "$SIM2_PID"
    stop_sim "$SIM_PID"
    if [[ -n "${INTEROP_KEEP:-}" ]]; then
        echo "# work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# SIM_LOGS: "label stdout stderr" per simulator started so far (stage 2 adds its own).
SIM_LOGS=("stage-1 $SIM_OUT $SIM_ERR")
print_sim_log() {
    local entry label out err
    for entry in "${SIM_LOGS[@]}"; do
        read -r label out err <<<"$entry"
        echo "# ---- $label simulator stdout ($out)"
        sed 's/^/# /' "$out" 2>/dev/null
        echo "# ---- $label simulator stderr (last 200 lines)"
        tail -n 200 "$err" 2>/dev/null | sed 's/^/# /'
    done
    echo "# ----"
}

finish() {
    echo "$passed passed, $failed failed"
    if ((failed > 0)); then
        print_sim_log
        exit 1
    fi
    exit 0
}

ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() {
    echo "not ok - $1"
    failed=$((failed + 1))
    shift
    local f
    for f in "$@"; do
        [[ -s "$f" ]] && sed "s|^|#   $(basename "$f"): |" "$f" | head -n 40
    done
}

# ---------------------------------------------------------------- preflight
for tool in idevice_id ideviceinfo idevicepair idevicename openssl; do
    command -v "$tool" >/dev/null || { echo "not ok - preflight: $tool missing (run tests/interop/install.sh)"; failed=1; finish; }
done
[[ -x "$PMD3" ]] || { echo "not ok - preflight: $PMD3 missing (run tests/interop/install.sh)"; failed=1; finish; }

# wait_for_bin: a concurrent `cargo build` replaces the binary (unlink + relink), so it
# can be missing for a moment. Waits up to 60 s.
wait_for_bin() {
    local i
    for i in $(seq 600); do
        [[ -x "$BIN" ]] && return 0
        ((i == 1)) && echo "# waiting for $BIN to (re)appear"
        sleep 0.1
    done
    return 1
}
wait_for_bin || { echo "not ok - preflight: $BIN is not executable"; failed=1; finish; }

if [[ -n "${INTEROP_PORT:-}" ]]; then
    PORT="$INTEROP_PORT"
else
    PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
ADDR="127.0.0.1:$PORT"

# Client environment: throw-away HOME (pymobiledevice3 keeps pair records under
# $XDG_DATA_HOME/pymobiledevice3, else ~/.local/share/pymobiledevice3, and prefers a legacy
# ~/.pymobiledevice3), no colour, nothing inherited that picks a device or another usbmuxd.
export HOME="$WORK/home"
unset XDG_DATA_HOME SUDO_USER SUDO_UID SUDO_GID PYMOBILEDEVICE3_UDID PYMOBILEDEVICE3_USBMUX \
      PYMOBILEDEVICE3_TUNNEL PYMOBILEDEVICE3_USERSPACE PYMOBILEDEVICE3_NATIVE
export USBMUXD_SOCKET_ADDRESS="$ADDR"
export NO_COLOR=1 PYTHONUTF8=1 LC_ALL=C.UTF-8

# ---------------------------------------------------------------- simulator
wait_for_bin
"$BIN" sim --devices 3 --listen "$ADDR" --state "$STATE" </dev/null >"$SIM_OUT" 2>"$SIM_ERR" &
SIM_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
ready=""
while ((SECONDS < deadline)); do
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        break
    fi
    if grep -qF "$ADDR" "$SIM_OUT" && (($(grep -c '^plugged ' "$SIM_OUT") >= 3)); then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    if kill -0 "$SIM_PID" 2>/dev/null; then
        not_ok "simulator announces $ADDR and 3 plugged devices within ${STARTUP_TIMEOUT}s"
    else
        wait "$SIM_PID"; rc=$?
        not_ok "simulator starts (it exited with status $rc)"
    fi
    finish
fi
ok "simulator announces $ADDR and 3 plugged devices"

# Expected values, one TSV line per device in slot order: udid serial model ios name
EXPECTED="$WORK/expected.tsv"
if ! "$PY" - "$SIM_OUT" >"$EXPECTED" 2>"$WORK/logs/expected.err" <<'EOF'
import shlex, sys
rows = {}  # slot -> values; a later plug line for the same slot wins
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.startswith("plugged "):
        continue
    # name is Rust {:?}-quoted ("..." with \" and \\ escapes): POSIX shlex undoes that.
    fields = dict(t.split("=", 1) for t in shlex.split(line)[1:] if "=" in t)
    rows[int(fields["slot"])] = [fields[k] for k in ("udid", "serial", "model", "ios", "name")]
for _, r in sorted(rows.items())[:3]:
    assert all(r) and not any("\t" in v for v in r), r
    print("\t".join(r))
EOF
then
    not_ok "parse the plugged lines" "$WORK/logs/expected.err"
    finish
fi
mapfile -t UDID   < <(cut -f1 "$EXPECTED")
mapfile -t SERIAL < <(cut -f2 "$EXPECTED")
mapfile -t MODEL  < <(cut -f3 "$EXPECTED")
mapfile -t IOS    < <(cut -f4 "$EXPECTED")
mapfile -t NAME   < <(cut -f5 "$EXPECTED")
if ((${#UDID[@]} != 3)); then
    not_ok "parse the plugged lines (got ${#UDID[@]} devices)" "$EXPECTED"
    finish
fi
ok "parse the plugged lines"

# ---------------------------------------------------------------- helpers
n=0
# run NAME CMD...: runs CMD with a timeout; leaves $OUT, $ERR, $RC.
run() {
    n=$((n + 1))
    local tag
    tag="$(printf '%02d-%s' "$n" "$1" | tr -c 'A-Za-z0-9_.-' '_')"
    shift
    OUT="$WORK/logs/$tag.out"
    ERR="$WORK/logs/$tag.err"
    { printf '%q ' "$@"; echo; } >"$WORK/logs/$tag.cmd"
    timeout "$CMD_TIMEOUT" "$@" </dev/null >"$OUT" 2>"$ERR"
    RC=$?
}

# check NAME PYTHON-EXPR: evaluates EXPR with out (stdout text), err, rc, json(),
# plist(), lines(), args (list of the extra arguments) in scope.
check() {
    local name="$1" expr="$2"
    shift 2
    if "$PY" - "$OUT" "$ERR" "$RC" "$expr" "$@" >"$WORK/logs/check.err" 2>&1 <<'EOF'
import json as _json, plistlib, re, sys
out = open(sys.argv[1], encoding="utf-8", errors="replace").read()
err = open(sys.argv[2], encoding="utf-8", errors="replace").read()
rc = int(sys.argv[3])
args = sys.argv[5:]
def json(): return _json.loads(out)
def plist(): return plistlib.loads(out.encode())
def lines(): return out.splitlines()
ok = eval("(\n" + sys.argv[4] + "\n)")
if not ok:
    print(f"assertion failed: {sys.argv[4]}  args={args}  rc={rc}")
sys.exit(0 if ok else 1)
EOF
    then
        ok "$name"
    else
        not_ok "$name" "$WORK/logs/check.err" "$WORK/logs/$(basename "$OUT" .out).cmd" "$OUT" "$ERR"
    fi
}

U0="${UDID[0]}" U1="${UDID[1]}" U2="${UDID[2]}"

# ---------------------------------------------------------------- device list
run idevice_id-l idevice_id -l
check "idevice_id -l lists the 3 UDIDs" \
    'rc == 0 and sorted(lines()) == sorted(args)' "${UDID[@]}"

run pmd3-usbmux-list-simple "$PMD3" usbmux list --simple
check "pymobiledevice3 usbmux list --simple lists the 3 UDIDs" \
    'rc == 0 and sorted(json()) == sorted(args)' "${UDID[@]}"

run pmd3-usbmux-list "$PMD3" usbmux list
check "pymobiledevice3 usbmux list: model, iOS, name, UDID of each device (unpaired view)" \
    'rc == 0 and sorted((d["UniqueDeviceID"], d["Identifier"], d["ProductType"], d["ProductVersion"], d["DeviceName"], d.get("ConnectionType")) for d in json())
     == sorted((a[i], a[i], a[i+1], a[i+2], a[i+3], "USB") for a in [args] for i in range(0, len(args), 4))' \
    "$U0" "${MODEL[0]}" "${IOS[0]}" "${NAME[0]}" \
    "$U1" "${MODEL[1]}" "${IOS[1]}" "${NAME[1]}" \
    "$U2" "${MODEL[2]}" "${IOS[2]}" "${NAME[2]}"

# ---------------------------------------------------------------- unpaired reads (libimobiledevice)
for i in 0 1 2; do
    run "ideviceinfo-s-$i" ideviceinfo -s -u "${UDID[$i]}" -x
    check "ideviceinfo -s (no pairing), slot $i: ProductType, ProductVersion, DeviceName, UDID" \
        'rc == 0 and [plist().get(k) for k in ("UniqueDeviceID", "ProductType", "ProductVersion", "DeviceName")] == args' \
        "${UDID[$i]}" "${MODEL[$i]}" "${IOS[$i]}" "${NAME[$i]}"
done

# ---------------------------------------------------------------- pairing + session (libimobiledevice, slot 0)
run idevicepair-validate-0 idevicepair -u "$U0" validate
check "idevicepair -u UDID validate (pairs on first use), slot 0" \
    'rc == 0 and out.strip() == f"SUCCESS: Validated pairing with device {args[0]}"' "$U0"

run ideviceinfo-0 ideviceinfo -u "$U0" -x
check "ideviceinfo (session), slot 0: SerialNumber, ProductType, ProductVersion, DeviceName, UDID" \
    'rc == 0 and [plist().get(k) for k in ("UniqueDeviceID", "SerialNumber", "ProductType", "ProductVersion", "DeviceName")] == args' \
    "$U0" "${SERIAL[0]}" "${MODEL[0]}" "${IOS[0]}" "${NAME[0]}"

run ideviceinfo-k-0 ideviceinfo -u "$U0" -k SerialNumber
check "ideviceinfo -k SerialNumber, slot 0" 'rc == 0 and out == args[0] + "\n"' "${SERIAL[0]}"

run idevicepair-validate-0b idevicepair -u "$U0" validate
check "idevicepair validate again reuses the stored pair record, slot 0" \
    'rc == 0 and out.strip().startswith("SUCCESS: Validated pairing")'

# ---------------------------------------------------------------- pairing + session (pymobiledevice3, slot 1)
run pmd3-lockdown-info-1 "$PMD3" lockdown info --udid "$U1"
check "pymobiledevice3 lockdown info (autopair + session), slot 1" \
    'rc == 0 and [json().get(k) for k in ("UniqueDeviceID", "SerialNumber", "ProductType", "ProductVersion", "DeviceName")] == args' \
    "$U1" "${SERIAL[1]}" "${MODEL[1]}" "${IOS[1]}" "${NAME[1]}"

run pmd3-pair-record-1 test -s "$HOME/.local/share/pymobiledevice3/$U1.plist"
check "pymobiledevice3 kept its pair record under the throw-away HOME, slot 1" 'rc == 0'

# cross-client: each uses the pair record the other one stored in usbmuxd
run pmd3-lockdown-info-0 "$PMD3" lockdown info --udid "$U0"
check "pymobiledevice3 lockdown info with libimobiledevice's pair record, slot 0" \
    'rc == 0 and json().get("SerialNumber") == args[0] and "Creating host key" not in err' "${SERIAL[0]}"

run ideviceinfo-k-1 ideviceinfo -u "$U1" -k SerialNumber
check "ideviceinfo -k SerialNumber with pymobiledevice3's pair record, slot 1" \
    'rc == 0 and out == args[0] + "\n"' "${SERIAL[1]}"

# ---------------------------------------------------------------- device name
NEW1="Interop’s iPad Two"
run pmd3-set-name-1 "$PMD3" lockdown device-name --udid "$U1" "$NEW1"
check "pymobiledevice3 lockdown device-name NEW, slot 1" 'rc == 0 and out == ""'

run pmd3-get-name-1 "$PMD3" lockdown device-name --udid "$U1"
check "pymobiledevice3 lockdown device-name reads the new name, slot 1" 'rc == 0 and out == args[0] + "\n"' "$NEW1"

run idevicename-get-1 idevicename -u "$U1"
check "idevicename reads the name set by pymobiledevice3, slot 1" 'rc == 0 and out == args[0] + "\n"' "$NEW1"

NEW2="Interop iPad \"Three\""
run idevicename-set-2 idevicename -u "$U2" "$NEW2"
check "idevicename NEWNAME (pairs on first use), slot 2" \
    "rc == 0 and out == \"device name set to '\" + args[0] + \"'\\n\"" "$NEW2"

run ideviceinfo-k-name-2 ideviceinfo -u "$U2" -k DeviceName
check "ideviceinfo -k DeviceName reads the new name, slot 2" 'rc == 0 and out == args[0] + "\n"' "$NEW2"

run pmd3-get-name-2 "$PMD3" lockdown device-name --udid "$U2"
check "pymobiledevice3 reads the name set by idevicename, slot 2" 'rc == 0 and out == args[0] + "\n"' "$NEW2"

run pmd3-usbmux-list-after "$PMD3" usbmux list
check "usbmux list shows the new names, untouched slot 0 keeps its name" \
    'rc == 0 and {d["UniqueDeviceID"]: d["DeviceName"] for d in json()} == dict(zip(args[0::2], args[1::2]))' \
    "$U0" "${NAME[0]}" "$U1" "$NEW1" "$U2" "$NEW2"

# ---------------------------------------------------------------- tidevice (X.509 v1 certificates)
# tidevice pairs with X.509 v1 host and device certificates (no extensions) and saves its pair
# record through usbmuxd; iOS accepts them (docs/fidelity.md §3). Slot 2, after the name checks.
TIDEVICE="${CARTPREP_TIDEVICE_VENV:-/var/tmp/cartprep-tidevice-venv}/bin/tidevice"
if [[ -x "$TIDEVICE" ]]; then
    run tidevice-list "$TIDEVICE" --socket "$ADDR" list --json
    check "tidevice list --json lists the 3 UDIDs" \
        'rc == 0 and sorted(d["udid"] for d in json()) == sorted(args)' "${UDID[@]}"

    # tidevice saves its record through usbmuxd in place of the one idevicename made; that
    # one is put back afterwards for the later stages.
    PAIR_RECORD="$(dirname "${BASH_SOURCE[0]}")/pair_record.py"
    run pair-record-save-2 "$PY" "$PAIR_RECORD" "$ADDR" read "$U2" "$WORK/u2-record.plist"
    check "usbmuxd ReadPairRecord keeps slot 2's record aside" 'rc == 0'

    run tidevice-pair-2 "$TIDEVICE" --socket "$ADDR" -u "$U2" pair
    check "tidevice pair (X.509 v1 certificates, SavePairRecord), slot 2" \
        'rc == 0 and ("Paired with device " + args[0]) in out' "$U2"

    run tidevice-cert-versions-2 "$PY" "$PAIR_RECORD" "$ADDR" cert-versions "$U2"
    check "the pair record tidevice saved holds X.509 v1 host and device certificates, slot 2" \
        'rc == 0 and lines() == ["HostCertificate Version: 1 (0x0)", "DeviceCertificate Version: 1 (0x0)"]'

    run tidevice-info-2 "$TIDEVICE" --socket "$ADDR" -u "$U2" info --json
    check "tidevice info --json (TLS session with its v1 certificates): SerialNumber, ProductType, UDID, slot 2" \
        'rc == 0 and (json().get("SerialNumber"), json().get("ProductType"), json().get("UniqueDeviceID")) == tuple(args)' \
        "${SERIAL[2]}" "${MODEL[2]}" "$U2"

    run tidevice-name-2 "$TIDEVICE" --socket "$ADDR" -u "$U2" info -k DeviceName
    check "tidevice reads the name idevicename set (a second session), slot 2" 'rc == 0 and args[0] in out' "$NEW2"

    run pair-record-restore-2 "$PY" "$PAIR_RECORD" "$ADDR" write "$U2" "$WORK/u2-record.plist"
    check "usbmuxd SavePairRecord puts slot 2's earlier record back" 'rc == 0'
else
    not_ok "tidevice installed at $TIDEVICE (run tests/interop/install.sh)"
fi

# ---------------------------------------------------------------- later: services
if [[ -n "${INTEROP_EXTRA:-}" ]]; then
    run pmd3-activation-1 "$PMD3" activation state --udid "$U1"
    check "pymobiledevice3 activation state, slot 1" 'rc == 0 and out.strip() in ("Activated", "Unactivated")'

    # Stage 1's iPads are unactivated: lockdownd refuses MCInstall (docs/fidelity.md §4).
    run pmd3-profile-list-1 "$PMD3" profile list --udid "$U1"
    check "pymobiledevice3 profile list on an unactivated iPad fails (StartService MCInstall -> InvalidService: \"Failed to start service\"), slot 1" 'rc != 0 and "Failed to start service" in err'

    run pmd3-cloud-config-1 "$PMD3" profile cloud-configuration --udid "$U1"
    check "pymobiledevice3 profile cloud-configuration on an unactivated iPad fails (StartService MCInstall -> InvalidService: \"Failed to start service\"), slot 1" 'rc != 0 and "Failed to start service" in err'
fi

# ---------------------------------------------------------------- stage 2: supervision
# Sourced so that it shares the helpers, the counters, the cleanup trap and the stage-1
# simulator (still running: its unactivated devices are used for the activation checks).
if [[ -z "${INTEROP_SKIP_SUPERVISION:-}" ]]; then
    # shellcheck source=tests/interop/supervision.sh
    source "$(dirname "${BASH_SOURCE[0]}")/supervision.sh"
fi

if [[ -z "${INTEROP_SKIP_STATION:-}" ]]; then
    # Stage 3: the station daemon prepares a cart; pymobiledevice3 reads the result back.
    # shellcheck source=tests/interop/station.sh
    source "$(dirname "${BASH_SOURCE[0]}")/station.sh"
fi

finish
