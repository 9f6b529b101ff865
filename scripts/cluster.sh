#!/usr/bin/env bash
# A three-node Parley cluster on 127.0.0.1, for development (make cluster,
# make cluster-stop). See docs/OPERATIONS.md.
#
#   scripts/cluster.sh start   build, start n1..n3 in the background, init, print status
#   scripts/cluster.sh stop    stop the nodes started here (pid files), SIGTERM then wait
#   scripts/cluster.sh status  print the cluster status as every node sees it
#
# Node i (1..3) listens on HTTP 71i0, WebSocket 71i1 and Raft 71i2 (n1: 7170,
# 7171, 7172; n2: 7180...; n3: 7190...), keeps its data in $DATA_DIR/ni and
# its log in $DATA_DIR/ni.log. The nodes share one admin token, in
# $DATA_DIR/admin.token, and one cluster key (authenticates the Raft port),
# in $DATA_DIR/cluster.key, both created on first start. Extra node flags go in
# PARLEY_FLAGS, e.g. PARLEY_FLAGS="-argon2-time 1 -argon2-memory 64" for a
# load test that creates thousands of accounts.
#
# EDGES=N adds N edge nodes e1..eN (parley -edge -region $EDGE_REGION,
# joined with 'parleyctl cluster join --edge'; docs/OPERATIONS.md, "Edge
# nodes and regions") on the ports after n3's: e1 on 7200, 7201, 7202, e2
# on 7210... PORT_BASE (7170) moves every port.
#
# The nodes share this machine's cores, so each runs with GOMAXPROCS set to
# its share of them (at least 1) unless GOMAXPROCS is set: three nodes each
# scheduling goroutines on every core of a two-core machine spent 20-25%
# more CPU a message, in thread wake-ups and context switches, than with
# GOMAXPROCS 1 (docs/BENCHMARKS.md, "The 1:1 path").
set -euo pipefail

GO=${GO:-go}
DATA_DIR=${DATA_DIR:-./data/cluster}
BIN_DIR=${BIN_DIR:-./bin}
WAIT_SECONDS=${WAIT_SECONDS:-30}
TOKEN_FILE="$DATA_DIR/admin.token"
KEY_FILE="$DATA_DIR/cluster.key"
EDGES=${EDGES:-0}
PORT_BASE=${PORT_BASE:-7170}
IDS=(n1 n2 n3)
for ((j = 1; j <= EDGES; j++)); do IDS+=("e$j"); done

# Ports of the i-th node of IDS (1-based): voters first, then edges.
http_port() { echo $((PORT_BASE + 10 * ($1 - 1))); }
ws_port() { echo $((PORT_BASE + 1 + 10 * ($1 - 1))); }
raft_port() { echo $((PORT_BASE + 2 + 10 * ($1 - 1))); }
http_url() { echo "http://127.0.0.1:$(http_port "$1")"; }

# http_ok URL: true when URL answers 2xx within two seconds.
http_ok() {
	if command -v curl >/dev/null; then
		curl -fs -o /dev/null --max-time 2 "$1"
	else
		wget -q -O /dev/null -T 2 "$1"
	fi
}

# wait_for WHAT URL: poll URL until it answers 2xx, for at most WAIT_SECONDS.
wait_for() {
	local what=$1 url=$2 deadline=$((SECONDS + WAIT_SECONDS))
	until http_ok "$url"; do
		if ((SECONDS >= deadline)); then
			echo "cluster: $what: no answer from $url after ${WAIT_SECONDS}s" >&2
			return 1
		fi
		sleep 0.2
	done
}

# running ID: true when the pid file of ID names a live process.
running() {
	local pidfile="$DATA_DIR/$1.pid"
	[[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ctl() { "$BIN_DIR/parleyctl" --token-file "$TOKEN_FILE" "$@"; }

all_nodes() {
	local list="" i
	for ((i = 1; i <= ${#IDS[@]}; i++)); do list+="${list:+,}$(http_url $i)"; done
	echo "$list"
}

start() {
	mkdir -p "$BIN_DIR" "$DATA_DIR"
	echo "cluster: building parley and parleyctl into $BIN_DIR"
	"$GO" build -o "$BIN_DIR/parley" ./cmd/parley
	"$GO" build -o "$BIN_DIR/parleyctl" ./cmd/parleyctl
	if [[ ! -s $TOKEN_FILE ]]; then
		(umask 077 && head -c 30 /dev/urandom | base64 | tr '+/' '-_' >"$TOKEN_FILE")
		echo "cluster: new admin token in $TOKEN_FILE"
	fi
	if [[ ! -s $KEY_FILE ]]; then
		(umask 077 && head -c 32 /dev/urandom | base64 >"$KEY_FILE")
		echo "cluster: new cluster key in $KEY_FILE"
	fi

	local procs=${GOMAXPROCS:-$(($(nproc) / ${#IDS[@]}))}
	((procs >= 1)) || procs=1
	local i id role
	for ((i = 1; i <= ${#IDS[@]}; i++)); do
		id=${IDS[i - 1]}
		if running "$id"; then
			echo "cluster: $id already running (pid $(cat "$DATA_DIR/$id.pid"))"
			continue
		fi
		role=()
		if ((i > 3)); then role=(-edge -region "${EDGE_REGION:-edge}"); fi
		GOMAXPROCS=$procs nohup "$BIN_DIR/parley" -id "$id" -data "$DATA_DIR/$id" \
			-http "127.0.0.1:$(http_port $i)" -ws "127.0.0.1:$(ws_port $i)" -raft "127.0.0.1:$(raft_port $i)" \
			-bootstrap=false ${role[@]+"${role[@]}"} -admin-token-file "$TOKEN_FILE" -cluster-key-file "$KEY_FILE" ${PARLEY_FLAGS:-} \
			>>"$DATA_DIR/$id.log" 2>&1 </dev/null &
		echo $! >"$DATA_DIR/$id.pid"
		echo "cluster: started $id (pid $!, GOMAXPROCS $procs), HTTP $(http_url $i), log $DATA_DIR/$id.log"
	done
	for ((i = 1; i <= ${#IDS[@]}; i++)); do
		wait_for "${IDS[i - 1]} up" "$(http_url $i)/healthz" || {
			echo "cluster: see $DATA_DIR/${IDS[i - 1]}.log; stop with: make cluster-stop" >&2
			exit 1
		}
	done

	# Init is harmless on a cluster already formed with the same servers;
	# after a join or remove it answers already_bootstrapped, which is fine.
	local out
	if out=$(ctl --node "$(http_url 1)" cluster init \
		--server "n1=127.0.0.1:$(raft_port 1)" --server "n2=127.0.0.1:$(raft_port 2)" \
		--server "n3=127.0.0.1:$(raft_port 3)" 2>&1); then
		echo "cluster: initialised"
	elif [[ $out == *already_bootstrapped* ]]; then
		echo "cluster: already initialised"
	else
		echo "cluster: init failed: $out" >&2
		exit 1
	fi
	# Edges join through n1 (again: harmless).
	for ((i = 4; i <= ${#IDS[@]}; i++)); do
		ctl --node "$(http_url 1)" --timeout 120s cluster join --edge --id "${IDS[i - 1]}" --addr "127.0.0.1:$(raft_port $i)" >/dev/null
		echo "cluster: ${IDS[i - 1]} joined as an edge"
	done
	for ((i = 1; i <= ${#IDS[@]}; i++)); do
		wait_for "${IDS[i - 1]} ready" "$(http_url $i)/readyz" || exit 1
	done
	ctl cluster status --nodes "$(all_nodes)"
	cat <<EOF

cluster: ready. WebSocket ws://127.0.0.1:$(ws_port 1)/v1/ws (n1), :$(ws_port 2) (n2), :$(ws_port 3) (n3)
  parleyctl: $BIN_DIR/parleyctl --node $(http_url 1) --token-file $TOKEN_FILE cluster status
  stop:      make cluster-stop
EOF
}

stop() {
	local id pid deadline pidfile
	for pidfile in "$DATA_DIR"/*.pid; do # voters and edges, whatever EDGES says now
		[[ -f $pidfile ]] || continue
		id=$(basename "$pidfile" .pid)
		pid=$(cat "$DATA_DIR/$id.pid")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid"
			deadline=$((SECONDS + WAIT_SECONDS))
			while kill -0 "$pid" 2>/dev/null; do
				if ((SECONDS >= deadline)); then
					echo "cluster: $id (pid $pid) still running after ${WAIT_SECONDS}s; left alone" >&2
					continue 2
				fi
				sleep 0.2
			done
			echo "cluster: stopped $id (pid $pid)"
		fi
		rm -f "$DATA_DIR/$id.pid"
	done
}

case ${1:-start} in
start) start ;;
stop) stop ;;
status) ctl cluster status --nodes "$(all_nodes)" ;;
*)
	echo "usage: $0 [start|stop|status]" >&2
	exit 2
	;;
esac
