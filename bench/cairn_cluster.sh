#!/usr/bin/env bash
# bench/cairn_cluster.sh start|stop|status|endpoints
#
# A 3-server cairn cluster on 127.0.0.1 for benchmarks, shaped like ../shared/bench/etcd_cluster.sh:
# each server is started by this script and remembered by PID in $CAIRN_ROOT/s<i>.pid; "stop" ends
# exactly those PIDs. Data on disk under $CAIRN_ROOT (default /tmp/cairn-bench, ext4, real fsync).
#
# Environment:
#   CAIRN_ROOT  data/log/pid directory (default /tmp/cairn-bench)
#   CAIRN_BIN   the cairn binary (default: target/release/cairn of this checkout)
#   KEEP_DATA=1 keep data directories on stop
#
# Ports of server i (1..3): HTTP 1850i, DNS 1860i, server RPC 1830i, LAN 1831i, WAN 1832i.
# HTTP endpoints: http://127.0.0.1:18501,http://127.0.0.1:18502,http://127.0.0.1:18503
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
CAIRN_ROOT=${CAIRN_ROOT:-/tmp/cairn-bench}
CAIRN_BIN=${CAIRN_BIN:-$here/../target/release/cairn}
ENDPOINTS="http://127.0.0.1:18501,http://127.0.0.1:18502,http://127.0.0.1:18503"

is_ours() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null && grep -q cairn "/proc/$1/comm" 2>/dev/null; }

start() {
  [[ -x $CAIRN_BIN ]] || { echo "no cairn binary at $CAIRN_BIN (cargo build --release)" >&2; exit 1; }
  mkdir -p "$CAIRN_ROOT"
  for i in 1 2 3; do
    local pidf="$CAIRN_ROOT/s$i.pid"
    if [[ -f $pidf ]] && is_ours "$(cat "$pidf")"; then echo "s$i already running"; continue; fi
    rm -rf "$CAIRN_ROOT/s$i"
    local joins=()
    for j in 1 2 3; do [[ $j == "$i" ]] || joins+=(-retry-join "127.0.0.1:1831$j"); done
    CAIRN_LOG=warn "$CAIRN_BIN" agent -server -bootstrap-expect 3 -node "s$i" \
      -data-dir "$CAIRN_ROOT/s$i" -bind 127.0.0.1 -client 127.0.0.1 -log-level warn \
      -http-port "1850$i" -dns-port "1860$i" -server-port "1830$i" \
      -serf-lan-port "1831$i" -serf-wan-port "1832$i" -retry-interval 200ms "${joins[@]}" \
      >"$CAIRN_ROOT/s$i.log" 2>&1 &
    echo $! >"$pidf"
  done
  # Ready when all three name the same leader and a write succeeds (bounded).
  local deadline=$((SECONDS + 30))
  until ready; do
    if ((SECONDS > deadline)); then echo "cairn cluster not ready after 30 s" >&2; tail -5 "$CAIRN_ROOT"/s*.log >&2; exit 1; fi
    sleep 0.2
  done
  echo "cairn cluster ready: $ENDPOINTS"
}

ready() {
  local l1 l2 l3
  l1=$(curl -sf --max-time 1 http://127.0.0.1:18501/v1/status/leader) || return 1
  l2=$(curl -sf --max-time 1 http://127.0.0.1:18502/v1/status/leader) || return 1
  l3=$(curl -sf --max-time 1 http://127.0.0.1:18503/v1/status/leader) || return 1
  [[ $l1 != '""' && $l1 == "$l2" && $l2 == "$l3" ]] || return 1
  [[ $(curl -sf --max-time 2 -X PUT -d ready http://127.0.0.1:18501/v1/kv/bench-ready) == true ]]
}

stop() {
  for i in 1 2 3; do
    local pidf="$CAIRN_ROOT/s$i.pid"
    if [[ -f $pidf ]] && is_ours "$(cat "$pidf")"; then
      local pid; pid=$(cat "$pidf")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
    [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$CAIRN_ROOT/s$i"
  done
}

status() { for i in 1 2 3; do f="$CAIRN_ROOT/s$i.pid"; if [[ -f $f ]] && is_ours "$(cat "$f")"; then echo "s$i up (pid $(cat "$f"))"; else echo "s$i down"; fi; done; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  endpoints) echo "$ENDPOINTS" ;;
  *) echo "usage: $0 start|stop|status|endpoints" >&2; exit 2 ;;
esac
