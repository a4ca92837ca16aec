#!/usr/bin/env bash
# Three terminal clients nobody on this project wrote, driven in tmux against a local martlet
# over STARTTLS with its self-signed certificate: profanity (alice), poezio (bob, run as
# `nobody`: it refuses root) and mcabber (carol). Steps: login, roster add and authorise
# both ways, a presence change seen by the contact, chat both ways, XEP-0012 last activity
# after a logout, offline delivery to a client that logs in later, and a XEP-0045 room
# profanity creates and all three talk in. Each step prints PASS or FAIL (with the pane it looked at);
# exits non-zero if one failed. Results are recorded in
# tuning/results/2026-12-04-terminal-clients.md.
#
#   scripts/clients-tmux.sh            # after cargo build --release; installs the clients if missing
#   KEEP=1 scripts/clients-tmux.sh     # leave the work directory (logs, client homes) behind
#
# Not part of the pytest suite: it needs port 5222 (poezio connects to 5222 whatever
# custom_port says), and a terminal UI read back from the screen is not a CI-grade signal.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MARTLET:-$ROOT/target/release/martlet}
PORT=5222
PW=tmux-secret
STEP_SECS=${STEP_SECS:-20}

need=()
for c in profanity poezio mcabber tmux; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is taken (poezio needs it)" >&2
  exit 2
fi

W=$(mktemp -d /tmp/martlet-clients.XXXXXX)
chmod 755 "$W"
TMUX_SOCK=martlet-clients-$$
SERVER_PID=
cleanup() {
  tmux -L "$TMUX_SOCK" kill-server 2>/dev/null
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

cat >"$W/martlet.toml" <<EOF
domain = "localhost"
cores = 2
[c2s]
listen = "127.0.0.1:$PORT"
[c2s_direct_tls]
listen = ""
[storage]
path = "$W/data"
EOF
for u in alice bob carol; do "$BIN" --config "$W/martlet.toml" user add "$u@localhost" "$PW" >/dev/null; done
"$BIN" serve --config "$W/martlet.toml" >"$W/martlet.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
CA=$W/data/dev-cert.pem

failed=0
t() { tmux -L "$TMUX_SOCK" "$@"; }
keys() { t send-keys -t "c:$1" -l "$2"; t send-keys -t "c:$1" Enter; }
# poezio opens its command line on a "/" keypress: a pasted "/cmd" would land nowhere.
pkeys() {
  case "$2" in
    /*) t send-keys -t "c:$1" "/"; sleep 0.3; t send-keys -t "c:$1" -l "${2#/}" ;;
    *) t send-keys -t "c:$1" -l "$2" ;;
  esac
  # An Enter in the same read as the text is taken as part of a paste.
  sleep 0.3
  t send-keys -t "c:$1" C-m
}
pane() { t capture-pane -p -J -S -2000 -t "c:$1"; }
# wait_for WINDOW REGEX: true once the window's screen (with its scrollback) matches.
wait_for() {
  local deadline=$((SECONDS + STEP_SECS))
  while [ $SECONDS -lt $deadline ]; do
    pane "$1" | grep -Eq "$2" && return 0
    sleep 0.3
  done
  return 1
}
# step NAME WINDOW REGEX: PASS/FAIL line for one observable outcome.
step() {
  if wait_for "$2" "$3"; then
    echo "PASS  $1"
  else
    echo "FAIL  $1 (window $2 never showed /$3/)"
    pane "$2" | tail -15 | sed 's/^/      | /'
    failed=1
  fi
}

# ---- the clients' homes --------------------------------------------------------------
mkdir -p "$W/alice" "$W/bob/.config/poezio" "$W/carol/.mcabber" "$W/carol/histo"
chmod 700 "$W/carol/histo"
cp "$CA" "$W/bob/ca.pem"
cat >"$W/bob/.config/poezio/poezio.cfg" <<EOF
[Poezio]
jid = bob@localhost
password = $PW
custom_host = 127.0.0.1
ca_cert_path = $W/bob/ca.pem
resource = poezio
EOF
chown -R nobody: "$W/bob"
cat >"$W/carol/.mcabber/mcabberrc" <<EOF
set jid = carol@localhost
set password = $PW
set server = 127.0.0.1
set port = $PORT
set resource = mcabber
set tls = 1
set ssl_ignore_checks = 1
set logging = 1
set logging_dir = $W/carol/histo
set log_muc_conf = 1
set load_logs = 0
set tracelog_level = 2
set tracelog_file = $W/carol/mcabber.log
EOF
chmod 600 "$W/carol/.mcabber/mcabberrc"

t new-session -d -s c -n shell -x 200 -y 50
t new-window -t c -n alice "env HOME=$W/alice profanity -l DEBUG; sleep 600"
t new-window -t c -n bob "runuser -u nobody -- env HOME=$W/bob XDG_CONFIG_HOME=$W/bob/.config XDG_DATA_HOME=$W/bob/.local/share XDG_CACHE_HOME=$W/bob/.cache poezio; sleep 600"

echo "martlet $("$BIN" --version 2>/dev/null | head -1), profanity $(profanity --version | head -1 | awk '{print $3}'),"\
     "poezio $(dpkg-query -W -f '${Version}' poezio), mcabber $(dpkg-query -W -f '${Version}' mcabber)"

# ---- login over STARTTLS ------------------------------------------------------------
keys alice "/connect alice@localhost server 127.0.0.1 port $PORT tls force"
wait_for alice "[Pp]assword" && keys alice "$PW"
# profanity asks once about a certificate no authority signed.
if wait_for alice "/tls allow|logged in successfully"; then
  pane alice | grep -q "/tls allow" && keys alice "/tls allow"
fi
step "profanity (alice) logs in" alice "logged in successfully"
step "poezio (bob) logs in" bob "[Cc]onnected|Your JID is"

# ---- roster add and authorise both ways ---------------------------------------------
keys alice "/roster add bob@localhost"
keys alice "/sub request bob@localhost"
step "poezio sees alice's subscription request" bob "alice@localhost.*(subscri|/accept)"
# poezio's /accept approves and asks back in one go.
pkeys bob "/accept alice@localhost"
step "poezio says alice is authorised" bob "alice@localhost is now authorized"
step "profanity sees bob's approval and request" alice "authorization request from bob@localhost"
keys alice "/sub allow bob@localhost"
# The roster push that makes it 'both' may come after the command's answer: ask again.
deadline=$((SECONDS + STEP_SECS))
until pane alice | grep -q "bob@localhost - both" || [ $SECONDS -ge $deadline ]; do keys alice "/roster"; sleep 1; done
step "profanity's roster has bob with subscription both" alice "bob@localhost - both"

# ---- presence -----------------------------------------------------------------------
pkeys bob "/status away gone fishing"
step "profanity sees bob go away with his status" alice "bob@localhost.*is away, \"gone fishing\""

# ---- chat both ways -----------------------------------------------------------------
keys alice "/msg bob@localhost hello from profanity"
pkeys bob "/message alice@localhost"
step "poezio gets profanity's chat" bob "alice> hello from profanity"
pkeys bob "hi from poezio"
step "profanity gets poezio's chat" alice "bob@localhost/[^:]*: hi from poezio"
keys alice '/status set away "back soon"'
step "poezio sees alice go away (in the chat tab)" bob "back soon"
keys alice "/win 1"

# ---- logout, XEP-0012 as profanity shows it, offline delivery to poezio --------------
pkeys bob "/quit"
step "profanity sees bob leave" alice "bob@localhost.*(offline|logged out)"
keys alice "/lastactivity get bob@localhost"
step "profanity's /lastactivity for bob after he left" alice "bob@localhost last logged in"
keys alice "/msg bob@localhost stored for poezio"
keys alice "/win 1"
t new-window -t c -n bob2 "runuser -u nobody -- env HOME=$W/bob XDG_CONFIG_HOME=$W/bob/.config XDG_DATA_HOME=$W/bob/.local/share XDG_CACHE_HOME=$W/bob/.cache poezio; sleep 600"
step "poezio (bob) logs in again" bob2 "Your JID is"
# poezio puts the message in a conversation tab; its log file has it whichever tab is shown.
file_step() {
  local deadline=$((SECONDS + STEP_SECS))
  until grep -rqs "$3" "$2" || [ $SECONDS -ge $deadline ]; do sleep 0.3; done
  if grep -rqs "$3" "$2"; then echo "PASS  $1"; else echo "FAIL  $1 (no '$3' under $2)"; failed=1; fi
}
file_step "poezio gets the message stored while bob was offline" "$W/bob/.local/share/poezio/logs" "stored for poezio"

# ---- mcabber: offline delivery, then chat ---------------------------------------------
keys alice "/msg carol@localhost while you were out"
keys alice "/win 1"
t new-window -t c -n carol "env HOME=$W/carol TERM=xterm mcabber -f $W/carol/.mcabber/mcabberrc; sleep 600"
# mcabber 1.1 prints this once bound and its initial presence went out.
step "mcabber (carol) logs in" carol "Your status has been set"
file_step "mcabber gets the message stored while carol was offline" "$W/carol/histo" "while you were out"
keys carol "/say_to alice@localhost thanks from mcabber"
# profanity puts a new correspondent's chat in a window of its own and says so in this one.
step "profanity is told of mcabber's chat" alice "chat message: carol@localhost"
keys alice "/msg carol@localhost"
step "profanity shows mcabber's chat" alice "thanks from mcabber"

# ---- XEP-0045: a room profanity creates, poezio and mcabber join, talk in ----------------
ROOM=lobby@conference.localhost
keys alice "/join $ROOM nick alice"
# profanity says the new room is locked until configured; /room accept takes the defaults.
step "profanity creates the room (locked, status 201)" alice "[Ll]ocked|requires configuration"
keys alice "/room accept"
step "profanity opens the room with the default configuration" alice "[Uu]nlocked"
keys carol "/room join $ROOM carol"
step "mcabber joins the room" carol "You have joined $ROOM as \"carol\""
pkeys bob2 "/join $ROOM/bob"
step "poezio joins the room" bob2 "You \(bob\) joined the room|bob.*joined the room"
keys alice "hello room from profanity"
file_step "mcabber hears profanity in the room" "$W/carol/histo" "hello room from profanity"
file_step "poezio hears profanity in the room" "$W/bob/.local/share/poezio/logs" "hello room from profanity"
keys carol "/say_to $ROOM hi room from mcabber"
step "profanity hears mcabber in the room" alice "carol: hi room from mcabber"
pkeys bob2 "hi room from poezio"
step "profanity hears poezio in the room" alice "bob: hi room from poezio"

exit $failed
