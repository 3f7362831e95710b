# shellcheck shell=bash
# Stage 3 of tests/interop/run.sh: the station daemon (`cartprep run`) prepares a simulated
# cart of fresh iPads, then independent clients (pymobiledevice3, Debian's ideviceinfo)
# check what it did to them.
#
# Sourced by run.sh, not run on its own: it uses run.sh's helpers (run, check, ok, not_ok,
# finish, stop_sim, wait_for_bin), counters, cleanup trap and work directory.
#
# Starts a third simulator (unactivated iPads in Setup Assistant), with its own port, state
# and HOME:
#   cartprep sim --devices 2 --listen 127.0.0.1:$PORT3 --state $WORK/stage3/sim
# and takes from its standard output, besides the `plugged …` lines, the two lines
#   activation server https://127.0.0.1:PORT/deviceservices/
#   activation CA /path/to/activation-ca.pem
# (the simulated activation server and the CA that signs its certificate).
# Then: `cartprep identity create --org "Springfield Elementary" --state $ST`, a
# station.toml in $ST (Wi-Fi Springfield-Students, manual MDM enrollment, names
# "Cart B - {n:02}", the simulator's activation server), `cartprep run --config` in the
# background until `cartprep status --json` shows both iPads done (INTEROP_STATION_TIMEOUT
# seconds, default 120), SIGTERM (exit 0, summary line), then the checks.
#
# Environment: INTEROP_PORT3 (default: a free port), INTEROP_STATION_TIMEOUT.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "station.sh is sourced by run.sh: run  tests/interop/run.sh path/to/cartprep" >&2
    exit 2
fi

W3="$WORK/stage3"
SIM3_STATE="$W3/sim"
SIM3_OUT="$W3/sim.stdout"
SIM3_ERR="$W3/sim.stderr"
ST="$W3/station"                 # the station's state folder (identity, ledger, config)
CONFIG3="$ST/station.toml"
RUN3_OUT="$W3/run.stdout"
RUN3_ERR="$W3/run.stderr"
STATION_TIMEOUT="${INTEROP_STATION_TIMEOUT:-120}"
ORG="Springfield Elementary"
SSID="Springfield-Students"
ENROLL_URL="https://mdm.example.org/enroll/springfield"
SIM3_PID=""
RUN3_PID=""
HOME_BEFORE3="$HOME"
USBMUXD_BEFORE3="$USBMUXD_SOCKET_ADDRESS"
failed_before3=$failed
stage3_started=$SECONDS
mkdir -p "$SIM3_STATE" "$ST" "$W3/home" "$W3/files"
SIM_LOGS+=("stage-3 $SIM3_OUT $SIM3_ERR")

# run.sh's cleanup knows only its own simulators: stop ours first (the daemon before its usbmuxd).
trap 'stop_sim "$RUN3_PID"; stop_sim "$SIM3_PID"; cleanup' EXIT

# The daemon's output, printed when a stage-3 check failed (run.sh's finish prints the
# simulators' logs only).
print_station_log() {
    echo "# ---- stage-3 cartprep run stdout ($RUN3_OUT)"
    sed 's/^/# /' "$RUN3_OUT" 2>/dev/null
    echo "# ---- stage-3 cartprep run stderr (last 200 lines)"
    tail -n 200 "$RUN3_ERR" 2>/dev/null | sed 's/^/# /'
    echo "# ---- stage-3 station.toml ($CONFIG3)"
    sed 's/^/# /' "$CONFIG3" 2>/dev/null
}
finish_station() {
    ((failed > failed_before3)) && print_station_log
    finish
}

if [[ -n "${INTEROP_PORT3:-}" ]]; then
    PORT3="$INTEROP_PORT3"
else
    PORT3="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
ADDR3="127.0.0.1:$PORT3"
export USBMUXD_SOCKET_ADDRESS="$ADDR3" HOME="$W3/home"

# ---------------------------------------------------------------- stage-3 simulator
wait_for_bin
"$BIN" sim --devices 2 --listen "$ADDR3" --state "$SIM3_STATE" </dev/null >"$SIM3_OUT" 2>"$SIM3_ERR" &
SIM3_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
ready=""
while ((SECONDS < deadline)); do
    kill -0 "$SIM3_PID" 2>/dev/null || break
    if grep -qsF "$ADDR3" "$SIM3_OUT" && (($(grep -sc '^plugged ' "$SIM3_OUT") >= 2)); then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    if kill -0 "$SIM3_PID" 2>/dev/null; then
        not_ok "stage 3: simulator announces $ADDR3 and 2 plugged devices within ${STARTUP_TIMEOUT}s"
    else
        wait "$SIM3_PID"; rc=$?
        not_ok "stage 3: simulator starts (it exited with status $rc)"
    fi
    finish
fi
ok "stage 3: simulator (unactivated iPads) announces $ADDR3 and 2 plugged devices"

# The simulated activation server and its CA (lines printed before the plugged lines).
ACT_URL="$(sed -n 's/^activation server \(https:\/\/.*\)$/\1/p' "$SIM3_OUT" | head -n 1)"
ACT_CA="$(sed -n 's/^activation CA \(.*\)$/\1/p' "$SIM3_OUT" | head -n 1)"
if [[ -z "$ACT_URL" || -z "$ACT_CA" || ! -s "$ACT_CA" ]]; then
    not_ok "stage 3: simulator prints \`activation server https://…\` and \`activation CA PATH\` (an existing file)" "$SIM3_OUT"
    finish
fi
OUT="$ACT_CA" ERR=/dev/null RC=0
check "stage 3: simulator prints its activation server ($ACT_URL) and CA (a PEM certificate)" \
    'out.startswith("-----BEGIN CERTIFICATE-----") and re.fullmatch(r"https://127\.0\.0\.1:\d+/deviceservices/", args[0])' "$ACT_URL"

# "slot<TAB>udid<TAB>serial" per plugged line, in slot order (a later line for a slot wins).
EXPECTED3="$W3/expected.tsv"
"$PY" - "$SIM3_OUT" >"$EXPECTED3" 2>"$W3/expected.err" <<'EOF'
import shlex, sys
rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("plugged "):
        f = dict(t.split("=", 1) for t in shlex.split(line)[1:] if "=" in t)
        rows[int(f["slot"])] = (f["udid"], f["serial"])
for slot, (udid, serial) in sorted(rows.items()):
    print(slot, udid, serial, sep="\t")
EOF
mapfile -t U3 < <(cut -f2 "$EXPECTED3")
mapfile -t SER3 < <(cut -f3 "$EXPECTED3")
if ((${#U3[@]} != 2 || ${#SER3[@]} != 2)); then
    not_ok "stage 3: parse the plugged lines (got ${#U3[@]} devices)" "$W3/expected.err" "$EXPECTED3"
    finish
fi

# ---------------------------------------------------------------- station configuration
run s3-identity-create "$BIN" identity create --org "$ORG" --state "$ST"
check "stage 3: cartprep identity create --org \"$ORG\" --state ST writes supervision.crt.der and a 0600 supervision.key.pem" \
    'rc == 0 and __import__("os").path.getsize(args[0] + "/supervision.crt.der") > 0
     and __import__("os").stat(args[0] + "/supervision.key.pem").st_mode & 0o777 == 0o600' "$ST"

ID_DER="$W3/files/identity.der"
run s3-identity-export "$BIN" identity export --der "$ID_DER" --state "$ST"
check "stage 3: cartprep identity export --der OUT" 'rc == 0 and open(args[0], "rb").read()[:1] == b"\x30"' "$ID_DER"

run s3-identity-openssl openssl x509 -inform DER -in "$ID_DER" -noout -subject
check "stage 3: openssl reads the exported certificate: O = $ORG" 'rc == 0 and re.search(r"O ?= ?" + re.escape(args[0]), out)' "$ORG"

# Written like src/cli/demo.rs writes the demo's: paths absolute, strings escaped by json.dumps
# (a JSON string is a valid TOML basic string for these values).
(umask 077 && printf 'correct horse battery staple\n' >"$ST/wifi-password")
if ! "$PY" - "$CONFIG3" "$ST" "$ADDR3" "$ORG" "$SSID" "$ENROLL_URL" "$ACT_URL" "$ACT_CA" \
        2>"$W3/config.err" <<'EOF'
import json, sys
path, st, usbmuxd, org, ssid, url, act_url, act_ca = sys.argv[1:]
q = json.dumps
open(path, "w", encoding="utf-8").write(f"""# Written by tests/interop/station.sh: a station for the stage-3 simulator.
state_dir = {q(st)}
usbmuxd = {q(usbmuxd)}
max_concurrent = 1

[organization]
name = {q(org)}
department = "IT"
identity = {q(st)}

[wifi]
ssid = {q(ssid)}
security = "wpa2"
password_file = "wifi-password"

[mdm]
name = "Interop MDM"
enrollment_url = {q(url)}
mode = "manual"

[setup]
skip = "all"
language = "en"
locale = "en_US"
time_zone = "America/Chicago"

[naming]
template = "Cart B - {{n:02}}"

[erase]
policy = "never"

[activation]
server_url = {q(act_url)}
extra_ca_file = {q(act_ca)}
""")
EOF
then
    not_ok "stage 3: write station.toml" "$W3/config.err"
    finish
fi

# ---------------------------------------------------------------- the daemon
wait_for_bin
run3_started=$EPOCHREALTIME
"$BIN" run --config "$CONFIG3" </dev/null >"$RUN3_OUT" 2>"$RUN3_ERR" &
RUN3_PID=$!

# Until `cartprep status --json` shows both iPads done; stops early when one needs attention
# or failed, or when the daemon exits.
STATUS3="$W3/status.json"
station_state=""
deadline=$((SECONDS + STATION_TIMEOUT))
while ((SECONDS < deadline)); do
    if ! kill -0 "$RUN3_PID" 2>/dev/null; then
        station_state="exited"
        break
    fi
    if timeout 10 "$BIN" status --state "$ST" --json >"$STATUS3" 2>/dev/null; then
        station_state="$("$PY" - "$STATUS3" "${U3[@]}" <<'EOF' 2>/dev/null
import json, sys
s = json.load(open(sys.argv[1]))
lights = {d["udid"]: d["light"] for d in s["devices"]}
want = sys.argv[2:]
if any(lights.get(u) in ("attention", "failed") for u in want):
    print("stuck")
elif all(lights.get(u) == "done" for u in want):
    print("done")
EOF
)"
        [[ -n "$station_state" ]] && break
    fi
    sleep 0.5
done
took3="$(awk -v a="$EPOCHREALTIME" -v b="$run3_started" 'BEGIN { printf "%.1f", a - b }')"
echo "# cartprep run: status '${station_state:-timeout}' after ${took3}s"
case "$station_state" in
    done)
        ok "stage 3: cartprep run prepares both iPads: cartprep status --json shows both done (${took3}s)" ;;
    exited)
        wait "$RUN3_PID"; rc=$?
        RUN3_PID=""
        not_ok "stage 3: cartprep run keeps running (it exited with status $rc)" "$RUN3_ERR"
        finish_station ;;
    *)
        not_ok "stage 3: cartprep status --json shows both iPads done within ${STATION_TIMEOUT}s (got: ${station_state:-timeout})" "$STATUS3"
        finish_station ;;
esac

OUT="$STATUS3" ERR=/dev/null RC=0
check "stage 3: status: summary 2 done, 0 attention, 0 failed; names Cart B - 01 and Cart B - 02" \
    'json()["summary"]["done"] == 2 and json()["summary"]["failed"] == 0 and json()["summary"]["attention"] == 0
     and sorted(d["udid"] for d in json()["devices"]) == sorted(args)
     and sorted(d["name"] for d in json()["devices"]) == ["Cart B - 01", "Cart B - 02"]' "${U3[@]}"

# ---------------------------------------------------------------- SIGTERM
kill -TERM "$RUN3_PID"
for _ in $(seq 150); do kill -0 "$RUN3_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RUN3_PID" 2>/dev/null; then
    kill -9 "$RUN3_PID" 2>/dev/null
    wait "$RUN3_PID" 2>/dev/null
    RUN3_PID=""
    not_ok "stage 3: cartprep run stops within 15 s of SIGTERM" "$RUN3_ERR"
else
    wait "$RUN3_PID"; rc=$?
    RUN3_PID=""
    OUT="$RUN3_OUT" ERR="$RUN3_ERR" RC=$rc
    check "stage 3: SIGTERM: cartprep run exits 0 and ends with the summary line (2 done)" \
        'rc == 0 and "stopping: work in progress resumes when the station starts again" in lines()
         and lines()[-1] == "cart: 2 done · 0 working · 0 waiting · 0 attention · 0 failed"'
    check "stage 3: the daemon's log: one ✔ DONE line per iPad, no attention/failed, no colour (stdout is not a terminal)" \
        'len([l for l in lines() if "✔ DONE" in l]) == 2 and not any(("▲ ATTENTION" in l or "✖ FAILED" in l) for l in lines())
         and "\x1b[" not in out'
fi

run s3-status-stopped "$BIN" status --state "$ST"
check "stage 3: after the stop, cartprep status says no station is running (exit 1)" \
    'rc == 1 and "no station is running" in err'

# ---------------------------------------------------------------- ledger
run s3-ledger-list "$BIN" ledger list --state "$ST"
LEDGER3="$W3/files/ledger-names.tsv"
check "stage 3: cartprep ledger list: a header, then both serials, done, named Cart B - 01 / Cart B - 02" \
    'rc == 0 and lines()[0].split()[0] == "SERIAL" and len(lines()[1:]) == 2
     and sorted(l.split()[0] for l in lines()[1:]) == sorted(args)
     and all(l.endswith(" done") for l in lines()[1:])
     and sorted(re.search(r"\s(Cart B - \d\d)\s", l).group(1) for l in lines()[1:]) == ["Cart B - 01", "Cart B - 02"]' \
    "${SER3[@]}"
# serial -> name, from the ledger: what each iPad must be called.
"$PY" - "$OUT" >"$LEDGER3" <<'EOF' 2>/dev/null
import re, sys
for l in open(sys.argv[1], encoding="utf-8"):
    m = re.search(r"\s(Cart B - \d\d)\s", l)
    if m:
        print(l.split()[0], m.group(1), sep="\t")
EOF
declare -A LEDGER_NAME=()
while IFS=$'\t' read -r s name; do LEDGER_NAME["$s"]="$name"; done <"$LEDGER3"

run s3-export-asm "$BIN" ledger export --format asm --state "$ST"
check "stage 3: ledger export --format asm: \"Serial Number\" then the 2 serials of the simulator's plugged lines" \
    'rc == 0 and lines()[0] == "Serial Number" and sorted(lines()[1:]) == sorted(args)' "${SER3[@]}"

run s3-export-csv "$BIN" ledger export --format csv --state "$ST"
check "stage 3: ledger export --format csv: a header and 2 rows (serial, name as in the ledger, outcome done)" \
    'rc == 0 and (lambda rows: rows[0][:2] == ["serial", "name"] and "outcome" in rows[0] and len(rows) == 3
        and sorted((r[0], r[1], r[rows[0].index("outcome")]) for r in rows[1:])
            == sorted((s, n, "done") for s, n in zip(args[0::2], args[1::2])))(list(__import__("csv").reader(out.splitlines())))' \
    "${SER3[0]}" "${LEDGER_NAME[${SER3[0]}]:-?}" "${SER3[1]}" "${LEDGER_NAME[${SER3[1]}]:-?}"

# ---------------------------------------------------------------- the iPads, seen by pymobiledevice3
for i in 0 1; do
    U="${U3[$i]}" S="${SER3[$i]}" slot=$((i + 1))
    want_name="${LEDGER_NAME[$S]:-?}"

    run "s3-activation-state-$slot" "$PMD3" activation state --udid "$U"
    check "stage 3, slot $slot: pymobiledevice3 activation state is Activated" 'rc == 0 and out == "Activated\n"'

    run "s3-cloud-config-$slot" "$PMD3" profile cloud-configuration --udid "$U"
    check "stage 3, slot $slot: cloud configuration: IsSupervised, our identity's certificate, ConfigurationURL, OrganizationName, no CloudConfigurationUIComplete" \
        'rc == 0 and json()["IsSupervised"] is True
         and json()["SupervisorHostCertificates"] == [{"$hex": open(args[0], "rb").read().hex()}]
         and json()["ConfigurationURL"] == args[1] and json()["OrganizationName"] == args[2]
         and "CloudConfigurationUIComplete" not in json()' \
        "$ID_DER" "$ENROLL_URL" "$ORG"

    run "s3-profile-list-$slot" "$PMD3" profile list --udid "$U"
    check "stage 3, slot $slot: profile list: exactly one profile, its display name mentions $SSID, active" \
        'rc == 0 and json()["Status"] == "Acknowledged" and len(json()["OrderedIdentifiers"]) == 1
         and len(json()["ProfileMetadata"]) == 1
         and (lambda i: args[0] in json()["ProfileMetadata"][i]["PayloadDisplayName"]
                        and json()["ProfileManifest"][i]["IsActive"] is True)(json()["OrderedIdentifiers"][0])' "$SSID"

    run "s3-lockdown-info-$slot" "$PMD3" lockdown info --udid "$U"
    check "stage 3, slot $slot: lockdown info: SerialNumber $S, DeviceName \"$want_name\" (as in the ledger)" \
        'rc == 0 and json().get("SerialNumber") == args[0] and json().get("DeviceName") == args[1]' "$S" "$want_name"
done

# ---------------------------------------------------------------- and by Debian's tools
run s3-ideviceinfo-name-1 ideviceinfo -u "${U3[0]}" -k DeviceName
check "stage 3, slot 1: ideviceinfo -k DeviceName is \"${LEDGER_NAME[${SER3[0]}]:-?}\"" \
    'rc == 0 and out == args[0] + "\n"' "${LEDGER_NAME[${SER3[0]}]:-?}"

echo "# stage 3 took $((SECONDS - stage3_started))s"
((failed > failed_before3)) && print_station_log
export USBMUXD_SOCKET_ADDRESS="$USBMUXD_BEFORE3" HOME="$HOME_BEFORE3"
