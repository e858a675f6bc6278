#!/usr/bin/env bash
# bench/kv_vs_etcd.sh [REPS] [DURATION_S]
#
# KV throughput and latency of a real 3-server cairn cluster on 127.0.0.1 next to etcd 3.4 (3
# members, also on 127.0.0.1), driven by the same client in the same run: the shared driver
# (kvbench via kv_load.py, in ../shared/bench) interleaves the systems rep by rep and prints paired
# ratios. Both fsync before acknowledging a write (data under /tmp on disk); reads are
# linearizable on both sides (etcd's default range, cairn's ?consistent).
#
# Needs: etcd-server (Debian: apt-get install etcd-server etcd-client), python3, and the shared
# bench directory (BENCH_TOOLS, default ../shared/bench). It is copied to a scratch directory and
# built there, so the shared copy stays untouched. Results: bench/results/kv-<date>.jsonl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
reps=${1:-3}
duration=${2:-10}
tools_src=${BENCH_TOOLS:-$root/../shared/bench}
tools=${BENCH_SCRATCH:-/tmp/cairn-bench-tools}

command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server etcd-client" >&2; exit 1; }
[[ -f $tools_src/kv_load.py ]] || { echo "no kv_load.py under $tools_src (set BENCH_TOOLS)" >&2; exit 1; }
if [[ ! -x $tools/kvbench/target/release/kvbench ]]; then
  rm -rf "$tools" && cp -r "$tools_src" "$tools" && rm -rf "$tools/results"/*
  cargo build --release --manifest-path "$tools/kvbench/Cargo.toml"
fi
cargo build --release --manifest-path "$root/Cargo.toml" --bin cairn

mkdir -p "$here/results"
out="$here/results/kv-$(date -u +%Y%m%d-%H%M%S).jsonl"
root_dir=/tmp/cairn-bench
cairn="name=cairn;api=consul;endpoints=$("$here/cairn_cluster.sh" endpoints)"
cairn+=";start=CAIRN_ROOT=$root_dir $here/cairn_cluster.sh start;stop=CAIRN_ROOT=$root_dir $here/cairn_cluster.sh stop"
cairn+=";pidfiles=$root_dir/s1.pid,$root_dir/s2.pid,$root_dir/s3.pid;read=linearizable"
cd "$tools"
python3 kv_load.py --reps "$reps" --duration "$duration" --out "$out" --system etcd --system "$cairn"
