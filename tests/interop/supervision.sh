# shellcheck shell=bash
# Stage 2 of tests/interop/run.sh: MCInstall (supervision, escalation, silent profile
# install, erase) and activation, driven by pymobiledevice3 and Debian's ideviceinfo.
#
# Sourced by run.sh, not run on its own: it uses run.sh's helpers (run, check, ok, not_ok,
# finish, stop_sim, wait_for_bin), counters, cleanup trap and work directory, and the
# stage-1 simulator (started without --activated) for the "unactivated" checks.
#
# Starts a second simulator:
#   cartprep sim --activated --devices 2 --listen 127.0.0.1:$PORT2 --state $WORK/stage2/state
# with its own throw-away HOME ($WORK/stage2/home). Slot 1 ($S1) is supervised, gets a Wi-Fi
# profile and is erased; slot 2 ($S2) gets a hand-written cloud configuration.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "supervision.sh is sourced by run.sh: run  tests/interop/run.sh path/to/cartprep" >&2
    exit 2
fi

W2="$WORK/stage2"
STATE2="$W2/state"
SIM2_OUT="$W2/sim.stdout"
SIM2_ERR="$W2/sim.stderr"
HOME1="$HOME"
ADDR1="$ADDR"
mkdir -p "$STATE2" "$W2/home" "$W2/files"
SIM_LOGS+=("stage-2 $SIM2_OUT $SIM2_ERR")

if [[ -n "${INTEROP_PORT2:-}" ]]; then
    PORT2="$INTEROP_PORT2"
else
    PORT2="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
ADDR2="127.0.0.1:$PORT2"
# A local port with nothing listening: pymobiledevice3's activation HTTP goes through it as an
# HTTPS proxy and fails at once (no DNS, no network, no simulated device data sent to Apple).
DEAD_PROXY="http://127.0.0.1:$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

stage2_started=$SECONDS

# "${ON1[@]}" CMD...: runs CMD against the stage-1 simulator (unactivated iPads) with stage 1's
# HOME. (An array, not a function: `run` execs through `timeout`.)
ON1=(env USBMUXD_SOCKET_ADDRESS="$ADDR1" HOME="$HOME1")

# From here on the default client environment is stage 2's.
export USBMUXD_SOCKET_ADDRESS="$ADDR2" HOME="$W2/home"

# ---------------------------------------------------------------- stage-2 simulator
wait_for_bin
"$BIN" sim --activated --devices 2 --listen "$ADDR2" --state "$STATE2" </dev/null >"$SIM2_OUT" 2>"$SIM2_ERR" &
SIM2_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
ready=""
while ((SECONDS < deadline)); do
    kill -0 "$SIM2_PID" 2>/dev/null || break
    if grep -qF "$ADDR2" "$SIM2_OUT" && (($(grep -c '^plugged ' "$SIM2_OUT") >= 2)); then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    if kill -0 "$SIM2_PID" 2>/dev/null; then
        not_ok "stage 2: simulator --activated announces $ADDR2 and 2 plugged devices within ${STARTUP_TIMEOUT}s"
    else
        wait "$SIM2_PID"; rc=$?
        not_ok "stage 2: simulator --activated starts (it exited with status $rc)"
    fi
    finish
fi
ok "stage 2: simulator --activated announces $ADDR2 and 2 plugged devices"

# plugged_tsv FILE: "slot<TAB>device_id<TAB>udid<TAB>line number" for every plugged line.
plugged_tsv() {
    "$PY" - "$1" <<'EOF'
import shlex, sys
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    if line.startswith("plugged "):
        f = dict(t.split("=", 1) for t in shlex.split(line)[1:] if "=" in t)
        print(f["slot"], f["device_id"], f["udid"], n, sep="\t")
EOF
}
mapfile -t P2 < <(plugged_tsv "$SIM2_OUT" | sort -n | cut -f3)
S1="${P2[0]:-}" S2="${P2[1]:-}"
S1_DEVID="$(plugged_tsv "$SIM2_OUT" | awk -F'\t' '$1 == 1 { print $2; exit }')"
if [[ -z "$S1" || -z "$S2" || -z "$S1_DEVID" ]]; then
    not_ok "stage 2: parse the plugged lines" "$SIM2_OUT"
    finish
fi

# jq-less JSON field extraction for the few values reused later.
json_get() { "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# ---------------------------------------------------------------- 1. fresh device
run s2-profile-list-fresh "$PMD3" profile list --udid "$S1"
check "stage 2: profile list on a fresh device: no profiles, Status Acknowledged" \
    'rc == 0 and json() == {"OrderedIdentifiers": [], "ProfileManifest": {}, "ProfileMetadata": {}, "Status": "Acknowledged"}'

run s2-cloud-config-fresh "$PMD3" profile cloud-configuration --udid "$S1"
check "stage 2: profile cloud-configuration on a fresh device prints null" 'rc == 0 and out == "null\n"'

# ---------------------------------------------------------------- 6a/8a. activated
run s2-activation-state "$PMD3" activation state --udid "$S1"
check "stage 2: activation state on a --activated iPad is Activated" 'rc == 0 and out == "Activated\n"'

run s2-ideviceinfo-activation ideviceinfo -u "$S1" -k ActivationState
check "stage 2: ideviceinfo -k ActivationState agrees (Activated), using pymobiledevice3's pair record" \
    'rc == 0 and out == "Activated\n"'

# ---------------------------------------------------------------- 2. supervise
KB="$W2/files/springfield.pem"
KB_DER="$W2/files/springfield.der"
run s2-create-keybag "$PMD3" profile create-keybag "$KB" "Springfield Elementary"
check "stage 2: profile create-keybag writes an RSA key and a certificate for CN=Springfield Elementary" \
    'rc == 0 and (lambda t: t.count("-----BEGIN RSA PRIVATE KEY-----") == 1 and t.count("-----BEGIN CERTIFICATE-----") == 1)(open(args[0]).read())' \
    "$KB"
run s2-keybag-der openssl x509 -in "$KB" -outform DER -out "$KB_DER"
check "stage 2: openssl x509 -outform DER extracts the keybag's certificate" 'rc == 0' 

run s2-supervise "$PMD3" profile supervise "Springfield Elementary" --keybag "$KB" --udid "$S1"
check "stage 2: profile supervise \"Springfield Elementary\" --keybag K succeeds on an activated device" \
    'rc == 0 and re.search(r"^\S+ \S+ \S+ \S+ INFO Device has been successfully supervised$", err, re.M) and " ERROR " not in err'

run s2-cloud-config-supervised "$PMD3" profile cloud-configuration --udid "$S1"
CC_SUPERVISED="$W2/files/cloud-config-supervised.json"
cp "$OUT" "$CC_SUPERVISED"
check "stage 2: cloud-configuration after supervise: IsSupervised, OrganizationName, ConfigurationSource 2" \
    'rc == 0 and json()["IsSupervised"] is True and json()["OrganizationName"] == "Springfield Elementary"
     and json()["ConfigurationSource"] == 2 and isinstance(json()["OrganizationMagic"], str) and len(json()["OrganizationMagic"]) == 36'
check "stage 2: cloud-configuration SupervisorHostCertificates == [DER of the keybag's certificate]" \
    'rc == 0 and json()["SupervisorHostCertificates"] == [{"$hex": open(args[0], "rb").read().hex()}]' "$KB_DER"
ORG_MAGIC="$(json_get "$CC_SUPERVISED" 'v["OrganizationMagic"]' 2>/dev/null)"

# ---------------------------------------------------------------- 3. silent Wi-Fi install
run s2-install-wifi "$PMD3" profile install-wifi-profile WPA2 "Cart WiFi" "correct horse battery" --keybag "$KB" --udid "$S1"
check "stage 2: install-wifi-profile WPA2 \"Cart WiFi\" … --keybag K (Escalate + EscalateResponse + InstallProfileSilent)" \
    'rc == 0 and " ERROR " not in err'

run s2-profile-list-wifi "$PMD3" profile list --udid "$S1"
PROFILES_AFTER_WIFI="$W2/files/profile-list-wifi.json"
cp "$OUT" "$PROFILES_AFTER_WIFI"
check "stage 2: profile list has exactly one profile, \"Cart WiFi\" in its PayloadDisplayName, IsActive true" \
    'rc == 0 and json()["Status"] == "Acknowledged" and len(json()["OrderedIdentifiers"]) == 1
     and (lambda i: "Cart WiFi" in json()["ProfileMetadata"][i]["PayloadDisplayName"]
                    and json()["ProfileManifest"][i]["IsActive"] is True)(json()["OrderedIdentifiers"][0])'

# ---------------------------------------------------------------- 4. wrong identity
KB2="$W2/files/shelbyville.pem"
run s2-create-keybag-2 "$PMD3" profile create-keybag "$KB2" "Shelbyville Elementary"
check "stage 2: profile create-keybag for a second organisation" 'rc == 0 and "-----BEGIN CERTIFICATE-----" in open(args[0]).read()' "$KB2"

run s2-install-wifi-wrong-cert "$PMD3" profile install-wifi-profile WPA2 "Evil WiFi" "not the password" --keybag "$KB2" --udid "$S1"
check "stage 2: install-wifi-profile with another organisation's keybag fails: Escalate -> CertificateRejected" \
    "rc == 1 and \"ERROR The device rejected the profile request: {'Status': 'CertificateRejected'}\" in err"

run s2-profile-list-after-wrong-cert "$PMD3" profile list --udid "$S1"
check "stage 2: profile list unchanged after the rejected escalation" \
    'rc == 0 and json() == _json.load(open(args[0]))' "$PROFILES_AFTER_WIFI"

# Right certificate, wrong private key: Escalate passes, the CMS signature must not verify.
KB_MIX="$W2/files/springfield-cert-shelbyville-key.pem"
{ sed -n '/BEGIN RSA PRIVATE KEY/,/END RSA PRIVATE KEY/p' "$KB2"; sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' "$KB"; } >"$KB_MIX"
run s2-install-wifi-wrong-key "$PMD3" profile install-wifi-profile WPA2 "Evil WiFi" "not the password" --keybag "$KB_MIX" --udid "$S1"
check "stage 2: install-wifi-profile with K's certificate but another key fails: EscalateResponse -> SignedRequestRejected" \
    "rc == 1 and \"ERROR The device rejected the profile request: {'Status': 'SignedRequestRejected'}\" in err"

run s2-profile-list-after-wrong-key "$PMD3" profile list --udid "$S1"
check "stage 2: profile list unchanged after the rejected signature" \
    'rc == 0 and json() == _json.load(open(args[0]))' "$PROFILES_AFTER_WIFI"

# ---------------------------------------------------------------- 5. second supervise
run s2-supervise-again "$PMD3" profile supervise "Shelbyville Elementary" --keybag "$KB2" --udid "$S1"
check "stage 2: a second profile supervise fails with \"A cloud configuration is already present\" (14002)" \
    'rc == 1 and "ERROR A cloud configuration is already present on the device." in err
     and not re.search(r"INFO Device has been successfully supervised$", err, re.M)'

run s2-cloud-config-unchanged "$PMD3" profile cloud-configuration --udid "$S1"
echo "# OrganizationMagic set by the first supervise: $ORG_MAGIC"
check "stage 2: cloud-configuration unchanged after the refused supervise (same OrganizationMagic)" \
    'rc == 0 and json() == _json.load(open(args[0])) and json()["OrganizationMagic"] == args[1]' \
    "$CC_SUPERVISED" "$ORG_MAGIC"

# ------------------------------------ the device rewrites a cloud configuration (docs/protocol.md §5.3)
CC_MINIMAL="$W2/files/minimal-cloud-config.plist"
"$PY" - "$CC_MINIMAL" <<'EOF'
import plistlib, sys
plistlib.dump({"AllowPairing": True, "IsSupervised": False, "OrganizationName": "Minimal Org",
               "ConfigurationSource": 5, "SkipSetup": ["WiFi", "Location"]}, open(sys.argv[1], "wb"))
EOF
run s2-set-cloud-config-2 "$PMD3" profile cloud-configuration "$CC_MINIMAL" --udid "$S2"
check "stage 2: profile cloud-configuration FILE (SetCloudConfiguration with ConfigurationSource 5), slot 2" \
    'rc == 0 and "INFO applied cloud configuration" in err'
run s2-get-cloud-config-2 "$PMD3" profile cloud-configuration --udid "$S2"
check "stage 2: the device set ConfigurationSource 2, CloudConfigurationUIComplete, ConfigurationWasApplied, IsMandatory, IsMDMUnremovable false" \
    'rc == 0 and {k: json().get(k) for k in ("ConfigurationSource", "CloudConfigurationUIComplete", "ConfigurationWasApplied", "IsMandatory", "IsMDMUnremovable", "OrganizationName", "IsSupervised", "SkipSetup")}
     == {"ConfigurationSource": 2, "CloudConfigurationUIComplete": True, "ConfigurationWasApplied": True, "IsMandatory": True, "IsMDMUnremovable": False, "OrganizationName": "Minimal Org", "IsSupervised": False, "SkipSetup": ["WiFi", "Location"]}'

# ---------------------------------------------------------------- 6b/8b. unactivated (stage-1 simulator)
UA="$U2"   # stage 1's third iPad, unactivated (the simulator ran without --activated)
run s1-activation-state "${ON1[@]}" "$PMD3" activation state --udid "$UA"
check "stage 1 iPad (no --activated): activation state is Unactivated" 'rc == 0 and out == "Unactivated\n"'

run s1-ideviceinfo-activation "${ON1[@]}" ideviceinfo -u "$UA" -k ActivationState
check "stage 1 iPad: ideviceinfo -k ActivationState agrees (Unactivated)" 'rc == 0 and out == "Unactivated\n"'

t0=$SECONDS
run s1-supervise-unactivated "${ON1[@]}" HTTPS_PROXY="$DEAD_PROXY" https_proxy="$DEAD_PROXY" HTTP_PROXY="$DEAD_PROXY" \
    http_proxy="$DEAD_PROXY" NO_PROXY= no_proxy= \
    "$PMD3" profile supervise "Springfield Elementary" --keybag "$KB" --udid "$UA"
echo "# supervise on the unactivated iPad took $((SECONDS - t0))s"
check "stage 1 iPad: profile supervise on an unactivated device fails (its activation cannot reach albert.apple.com)" \
    'rc == 1 and re.search(r"INFO Activating device$", err, re.M) and "albert.apple.com" in err
     and not re.search(r"INFO Device has been successfully (activated|supervised)$", err, re.M)'

# lockdownd refuses MCInstall on an unactivated iPad (docs/fidelity.md §4).
run s1-cloud-config-unactivated "${ON1[@]}" "$PMD3" profile cloud-configuration --udid "$UA"
check "stage 1 iPad: profile cloud-configuration on the unactivated iPad fails: StartService MCInstall -> InvalidService" \
    'rc != 0 and "Failed to start service" in err'

run s1-profile-list-unactivated "${ON1[@]}" "$PMD3" profile list --udid "$UA"
check "stage 1 iPad: profile list on the unactivated iPad fails: StartService MCInstall -> InvalidService" \
    'rc != 0 and "Failed to start service" in err'

run s1-activation-state-after "${ON1[@]}" "$PMD3" activation state --udid "$UA"
check "stage 1 iPad: still Unactivated after the failed supervise" 'rc == 0 and out == "Unactivated\n"'

# ---------------------------------------------------------------- 7. erase
NAME_BEFORE_ERASE="Cart 07 – Room 12"
run s2-set-name "$PMD3" lockdown device-name --udid "$S1" "$NAME_BEFORE_ERASE"
check "stage 2: lockdown device-name NEW before the erase" 'rc == 0 and out == ""'

run s2-ideviceinfo-activation-pre-erase ideviceinfo -u "$S1" -k ActivationState
check "stage 2: ideviceinfo -k ActivationState is Activated right before the erase" 'rc == 0 and out == "Activated\n"'

LINES_BEFORE_ERASE="$(wc -l <"$SIM2_OUT")"
run s2-erase "$PMD3" profile erase-device --udid "$S1"
erase_done=$EPOCHREALTIME
check "stage 2: profile erase-device acknowledged" \
    'rc == 0 and re.search(r"INFO Erased device$", err, re.M) and " ERROR " not in err'

# Wait (max 15 s) for `erased slot=1 udid=S1`, then a later `plugged slot=1 … udid=S1`.
replug=""
deadline=$((SECONDS + 15))
while ((SECONDS < deadline)); do
    if tail -n +"$((LINES_BEFORE_ERASE + 1))" "$SIM2_OUT" | grep -qx "erased slot=1 udid=$S1" &&
        tail -n +"$((LINES_BEFORE_ERASE + 1))" "$SIM2_OUT" | sed -n "/^erased slot=1 /,\$p" | grep -q "^plugged slot=1 .*udid=$S1 "; then
        replug=1
        replug_after="$(awk -v a="$EPOCHREALTIME" -v b="$erase_done" 'BEGIN { printf "%.1f", a - b }')"
        break
    fi
    sleep 0.1
done
OUT="$SIM2_OUT" ERR=/dev/null RC=0
if [[ -n "$replug" ]]; then
    echo "# slot 1 re-attached ${replug_after}s after profile erase-device returned"
    check "stage 2: simulator log: erased slot=1, then plugged slot=1 again within 15 s, with a new DeviceID" \
        '(lambda ls: [l for l in ls if l.startswith("plugged slot=1 ")][-1].split()[2] != "device_id=" + args[1])(lines()[int(args[0]):])' \
        "$LINES_BEFORE_ERASE" "$S1_DEVID"
else
    not_ok "stage 2: simulator log: erased slot=1, then plugged slot=1 again within 15 s" "$SIM2_OUT"
fi
check "stage 2: simulator log: the erase did not touch slot 2" \
    'not any(re.match(r"(unplugged|erased|plugged) slot=2 ", l) for l in lines()[int(args[0]):])' "$LINES_BEFORE_ERASE"

# The old pair record is still in usbmuxd's store, but the erased device trusts nobody:
# libimobiledevice does not re-pair (Invalid HostID), pymobiledevice3 does.
run s2-ideviceinfo-old-record ideviceinfo -u "$S1" -k ActivationState
check "stage 2: after the erase the old pair record is refused: ideviceinfo -> Invalid HostID (-21)" \
    'rc == 255 and "ERROR: Could not connect to lockdownd: Invalid HostID (-21)" in out + err'

run s2-ideviceinfo-s-name ideviceinfo -s -u "$S1" -k DeviceName
check "stage 2: after the erase the device name is back to \"iPad\"" 'rc == 0 and out == "iPad\n"'

run s2-activation-state-after-erase "$PMD3" activation state --udid "$S1"
check "stage 2: after the erase pymobiledevice3 re-pairs by itself and activation state is Unactivated" \
    'rc == 0 and out == "Unactivated\n" and re.search(r"INFO Creating host key & certificate$", err, re.M)'

run s2-ideviceinfo-activation-after-erase ideviceinfo -u "$S1" -k ActivationState
check "stage 2: after the erase ideviceinfo -k ActivationState agrees (Unactivated), with pymobiledevice3's new pair record" \
    'rc == 0 and out == "Unactivated\n"'

# Erased means unactivated: lockdownd refuses MCInstall until the iPad is activated again
# (docs/fidelity.md §4). The 33003 refusal behind it is checked with the rule switched off in
# crates/mcinstall/tests/against_simulator.rs.
run s2-cloud-config-after-erase "$PMD3" profile cloud-configuration --udid "$S1"
check "stage 2: after the erase profile cloud-configuration fails: StartService MCInstall -> InvalidService" \
    'rc != 0 and "Failed to start service" in err'

run s2-profile-list-after-erase "$PMD3" profile list --udid "$S1"
check "stage 2: after the erase profile list fails: StartService MCInstall -> InvalidService" \
    'rc != 0 and "Failed to start service" in err'

run s2-cloud-config-2-after-erase "$PMD3" profile cloud-configuration --udid "$S2"
check "stage 2: slot 2 keeps its cloud configuration after slot 1's erase" \
    'rc == 0 and json().get("OrganizationName") == "Minimal Org"'

echo "# stage 2 took $((SECONDS - stage2_started))s"
export USBMUXD_SOCKET_ADDRESS="$ADDR1" HOME="$HOME1"
