#!/usr/bin/env bash
# bench/dns_cairn.sh start|stop
#
# `cairn agent -dev` for the DNS benchmark, as a `--system` of ../shared/bench/dns_baseline.sh:
# `start` launches it on 127.0.0.1 (DNS on $DNS_PORT, default 18600; pinned with taskset when
# CPUS is set), registers the catalogue of $SERVICES_JSON (the baseline's services.json: 100
# services x 3 instances) through PUT /v1/catalog/register, and returns once DNS answers for the
# last service. `stop` ends exactly the PID it started. With BIG=N it also registers N instances
# of the service `big` (for the SRV-over-TCP latency at 5,000 instances).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root_dir=${CAIRN_DNS_ROOT:-/tmp/cairn-dns-bench}
dns_port=${DNS_PORT:-18600}
http_port=${HTTP_PORT:-18500}
pidfile=$root_dir/cairn.pid
cairn=${CAIRN_BIN:-$here/../target/release/cairn}

stop() {
  if [[ -f $pidfile ]]; then
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null && grep -q cairn "/proc/$pid/comm"; then kill "$pid"; fi
    rm -f "$pidfile"
  fi
}

start() {
  stop
  mkdir -p "$root_dir"
  # shellcheck disable=SC2086
  ${CPUS:+taskset -c $CPUS} "$cairn" agent -dev -node bench -dns-port "$dns_port" -http-port "$http_port" \
    -server-port 18300 -serf-lan-port 18301 -serf-wan-port 18302 >"$root_dir/agent.log" 2>&1 &
  echo $! >"$pidfile"
  python3 - "$http_port" "${SERVICES_JSON:?set SERVICES_JSON to the baseline services.json}" "${BIG:-0}" <<'PY'
import json, sys, time, urllib.request
port, path, big = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 30
while True:
    try:
        if urllib.request.urlopen(base + "/v1/status/leader", timeout=1).read().strip() not in (b'""', b""):
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("cairn did not elect itself within 30 s")
    time.sleep(0.05)
def put(body):
    req = urllib.request.Request(base + "/v1/catalog/register", data=json.dumps(body).encode(), method="PUT")
    assert urllib.request.urlopen(req, timeout=10).read().strip() == b"true"
catalogue = json.load(open(path))
for svc in catalogue["services"]:
    for inst in svc["instances"]:
        put({"Node": inst["node"], "Address": inst["address"],
             "Service": {"ID": inst["id"], "Service": svc["name"], "Port": inst["port"]},
             "Checks": [{"CheckID": inst["id"], "Name": "alive", "ServiceID": inst["id"], "Status": "passing"}]})
for i in range(big):
    put({"Node": f"big-{i:05d}", "Address": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
         "Service": {"ID": f"big-{i}", "Service": "big", "Port": 30000 + i % 1000}})
PY
  last=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['services'][-1]['name'])" "$SERVICES_JSON")
  for _ in $(seq 100); do
    if dnsperf -s 127.0.0.1 -p "$dns_port" -n 1 -d <(echo "$last.service.consul A") 2>/dev/null | grep -q "Queries completed: *1 "; then
      return 0
    fi
    sleep 0.1
  done
  echo "cairn DNS did not answer for $last" >&2
  exit 1
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
