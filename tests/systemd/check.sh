#!/usr/bin/env bash
# Checks the systemd unit without booting systemd (CI has no systemd init): `systemd-analyze
# verify` on the unit as installed (ExecStart pointing at the built binary), the sysusers file
# applied to an empty root, and the unit's exposure score from `systemd-analyze security`,
# which must stay at or below MAX_EXPOSURE.
# Usage: tests/systemd/check.sh path/to/cartprep
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(realpath "$1")"
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sed "s#/usr/local/bin/cartprep#$bin#" systemd/cartprep.service >"$work/cartprep.service"
systemd-analyze verify "$work/cartprep.service"
echo "verify: ok"

mkdir -p "$work/root/etc" "$work/root/usr/lib/sysusers.d"
cp systemd/cartprep.sysusers "$work/root/usr/lib/sysusers.d/cartprep.conf"
systemd-sysusers --root="$work/root" >/dev/null 2>&1
grep -q '^cartprep:' "$work/root/etc/passwd"
echo "sysusers: the cartprep user is created"

score="$(systemd-analyze security --offline=true "$work/cartprep.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for cartprep.service: \([0-9.]*\).*/\1/p')"
echo "exposure: $score (at most $MAX_EXPOSURE)"
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s != "" && s + 0 <= m + 0) }'
