# Shared by the load scripts (source it from the repository root): the Python to run, starting a
# chat_trio server and waiting for it, and seeding a user and a room over the REST API.
# Only 127.0.0.1 is ever targeted.

PY=${PY:-.venv/bin/python}
HOST=127.0.0.1
# Per-user and per-address limits that protect a real server would turn a benchmark's single
# user or single address into 429s and refused connections: the load scripts lift them (every
# load tool connects from 127.0.0.1, up to 10,000 sockets at once).
LOAD_FLAGS=(--send-rate 0 --register-limit 0 --login-rate 0 --login-user-limit 0
            --room-create-rate 0 --max-connections-per-address 65536 --max-websockets-per-user 65536)

[[ -x $PY ]] || { echo "missing $PY: create the venv first (see README.md), or set PY" >&2; exit 2; }

# bounded_duration D: D ("5" or "5s") as wrk's "5s" if it is 1 to 10 seconds, else exit 2: every
# run is bounded.
bounded_duration() {
    local secs=${1%s}
    if ! [[ $secs =~ ^[0-9]+$ ]] || (( secs < 1 || secs > 10 )); then
        echo "duration must be 1s..10s (got '$1')" >&2
        exit 2
    fi
    echo "${secs}s"
}

# wait_ready URL PID: poll until URL answers (10 s at most); fails if the process exits first.
wait_ready() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "server $2 exited before answering $1" >&2; return 1; }
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

# start_chat PORT CPU LOG DB [FLAGS...]: chat_trio on core CPU with database DB, logging to LOG,
# the load flags above plus FLAGS; sets CHAT_PID once it answers /healthz.
# With CHAT_TREE=DIR it runs the chat_trio package of DIR (another revision, unpacked by `git
# archive`) with this venv, by starting it in DIR: `python -m` puts the working directory first
# on sys.path, ahead of the editable install's finder. Started anywhere else (here: the checkout
# root, holding this tree's package) both sides of a before/after run would be this tree. Every
# process the server starts inherits the directory, so the workers of --workers N run DIR too.
start_chat() {
    local port=$1 cpu=$2 log db py
    log=$(realpath -m "$3"); db=$(realpath -m "$4"); py=$(realpath -s "$PY")  # -s: the venv's python, not the one it links to
    shift 4
    ( [[ -z ${CHAT_TREE:-} ]] || cd "$CHAT_TREE"
      exec taskset -c "$cpu" "$py" -m chat_trio --host "$HOST" --port "$port" --db "$db" \
          --log-level warning "${LOAD_FLAGS[@]}" "$@" ) >"$log" 2>&1 &
    CHAT_PID=$!
    wait_ready "http://$HOST:$port/healthz" "$CHAT_PID" || { echo "see $log" >&2; return 1; }
}

# stop_chat PID: stop a server this script started, by its pid: SIGTERM (a supervisor stops its
# workers and commits what was acknowledged), SIGKILL if it is still there after 15 s.
stop_chat() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# One server at a time on a fresh database: start_fresh PORT CPU LOG [FLAGS...] sets SERVER_PID
# and DATA (its temporary directory; the fd limit is raised for thousands of sockets);
# stop_fresh stops it and removes DATA (safe to call twice, as from an EXIT trap).
SERVER_PID=""
DATA=""
start_fresh() {
    DATA=$(mktemp -d /tmp/chat_trio_db.XXXXXX)
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    start_chat "$1" "$2" "$3" "$DATA/chat.db" "${@:4}" || return 1
    SERVER_PID=$CHAT_PID
}
stop_fresh() {
    [[ -n $SERVER_PID ]] && stop_chat "$SERVER_PID"
    SERVER_PID=""
    [[ -n $DATA ]] && rm -rf "$DATA"
    DATA=""
}

# api_post API PATH JSON [TOKEN]: prints the status; the body is kept in $LAST_BODY.
LAST_BODY=${LAST_BODY:-$(mktemp /tmp/chat_trio_body.XXXXXX)}
api_post() {
    local auth=()
    [[ -n ${4:-} ]] && auth=(-H "Authorization: Bearer $4")
    curl -sS -o "$LAST_BODY" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        "${auth[@]}" --data "$3" "$1$2"
}
# json_get EXPR: EXPR evaluated on the last body (e.g. '["token"]').
json_get() { "$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))$1)" "$LAST_BODY"; }

# seed_user_room API NAME [MESSAGES]: user testuser (registered once per server), a room NAME and
# MESSAGES messages in it (default 0); sets TOKEN and ROOM_ID.
seed_user_room() {
    local api=$1 name=$2 count=${3:-0} status n
    local user='{"username":"testuser","password":"testpass"}'
    status=$(api_post "$api" /register "$user")
    [[ $status == 201 || $status == 409 ]] || { echo "POST /register: $status $(head -c 300 "$LAST_BODY")" >&2; return 1; }
    status=$(api_post "$api" /login "$user")
    [[ $status == 200 ]] || { echo "POST /login: $status $(head -c 300 "$LAST_BODY")" >&2; return 1; }
    TOKEN=$(json_get '["token"]')
    status=$(api_post "$api" /rooms "{\"name\":\"$name\"}" "$TOKEN")
    [[ $status == 201 ]] || { echo "POST /rooms: $status $(head -c 300 "$LAST_BODY")" >&2; return 1; }
    ROOM_ID=$(json_get '["room"]["id"]')
    for n in $(seq "$count"); do
        status=$(api_post "$api" "/rooms/$ROOM_ID/messages" "{\"text\":\"seed message $n\",\"txn_id\":\"seed-$n\"}" "$TOKEN")
        [[ $status == 201 ]] || { echo "message $n: $status $(head -c 300 "$LAST_BODY")" >&2; return 1; }
    done
}
