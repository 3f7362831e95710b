#!/usr/bin/env bash
# The demo's full-screen board on a real terminal: tmux gives it an 80x24 pane, and the
# captures must show the header, the pinned ATTENTION items with their command, and DONE rows;
# after the demo the terminal is given back with the summary. Usage: board_tmux.sh CARTPREP
set -euo pipefail
cartprep="$1"
command -v tmux >/dev/null || { echo "tmux not installed: skipped"; exit 0; }
dir="$(mktemp -d)"
sock="cartprep-board-$$"
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$dir"' EXIT
tmux -L "$sock" new-session -d -x 80 -y 24 \
  "TERM=xterm-256color '$cartprep' demo --state '$dir/state'; echo; echo 'exit status' \$?; sleep 600"
seen_board=""
for _ in $(seq 1 240); do
  screen="$(tmux -L "$sock" capture-pane -p)"
  if grep -q "ATTENTION ─" <<<"$screen" && grep -q " DONE " <<<"$screen"; then
    seen_board="$screen"
  fi
  if grep -q "^exit status" <<<"$screen"; then
    break
  fi
  sleep 0.5
done
final="$(tmux -L "$sock" capture-pane -p -S -50)"
fail() { echo "board check failed: $*"; echo "--- last board seen:"; echo "$seen_board"; echo "--- final:"; echo "$final"; exit 1; }
[ -n "$seen_board" ] || fail "no capture showed the pinned ATTENTION box and a DONE row"
grep -q "Springfield Elementary" <<<"$seen_board" || fail "header: organisation"
grep -q "Wi-Fi “Springfield-Students”" <<<"$seen_board" || fail "header: Wi-Fi"
grep -q "cartprep erase" <<<"$seen_board" || fail "the attention names its command"
grep -q "^exit status 0" <<<"$final" || fail "the demo did not exit 0"
grep -q "demo finished: cart: 4 done" <<<"$final" || fail "the summary after the board"
echo "the board at 80x24:"
echo "$seen_board"
