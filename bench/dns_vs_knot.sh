#!/usr/bin/env bash
# bench/dns_vs_knot.sh [REPS] [DURATION_S]
#
# dnsperf against `cairn agent -dev` holding 100 services x 3 instances (A and SRV queries, half
# each) next to Knot DNS serving the equivalent zone, in the same run: the shared driver
# (../shared/bench/dns_baseline.sh) interleaves both systems per rep over its scenarios
# (max_shared, max_1core, lat_rate). Then the latency of SRV over TCP for one service with 5,000
# instances (bench/dns_tcp_latency.py, one question at a time over one connection).
#
# Needs: dnsperf, knot and kdig (Debian: apt-get install -y dnsperf knot knot-dnsutils), python3, and the shared bench
# directory (BENCH_TOOLS, default ../shared/bench), copied to a scratch directory so the shared
# copy stays untouched. Results: bench/results/dns-<date>.jsonl and dns-big-<date>.jsonl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
reps=${1:-3}
duration=${2:-10}
tools_src=${BENCH_TOOLS:-$root/../shared/bench}
tools=${BENCH_SCRATCH:-/tmp/cairn-dns-bench-tools}
for tool in dnsperf knotd kdig; do
  command -v $tool >/dev/null || { echo "$tool not found: apt-get install -y dnsperf knot knot-dnsutils" >&2; exit 1; }
done
rm -rf "$tools" && cp -r "$tools_src" "$tools" && rm -rf "$tools/results"/*
python3 "$tools/dns/gen_dns_data.py" >/dev/null
cargo build --release --manifest-path "$root/Cargo.toml" --bin cairn
export SERVICES_JSON=$tools/dns/data/services.json
mkdir -p "$here/results"
stamp=$(date -u +%Y%m%d-%H%M%S)
cairn="cairn;18600;$here/dns_cairn.sh start;$here/dns_cairn.sh stop;/tmp/cairn-dns-bench/cairn.pid"
knot="knot;15353;$tools/dns/knot_server.sh start;$tools/dns/knot_server.sh stop;/tmp/dns-bench/knotd.pid"
"$tools/dns_baseline.sh" --reps "$reps" --duration "$duration" --system "$knot" --system "$cairn" \
  --out "$here/results/dns-$stamp.jsonl" ${QUIET:+--quiet "$QUIET"}

# SRV over TCP for a service with 5,000 instances: each answer is cut to the 64 KiB a TCP
# message can carry (about 870 SRV records with their glue). Asked one at a time over one
# connection by bench/dns_tcp_latency.py (dnsperf drops TCP answers larger than its buffer).
big_out=$here/results/dns-big-$stamp.jsonl
BIG=5000 "$here/dns_cairn.sh" start
python3 "$here/dns_tcp_latency.py" 127.0.0.1 18600 big.service.consul SRV "$duration" \
  suite=dns system=cairn scenario=srv_tcp_5000 >"$big_out"
"$here/dns_cairn.sh" stop
cat "$big_out"
