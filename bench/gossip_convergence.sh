#!/usr/bin/env bash
# bench/gossip_convergence.sh [SIZES] [SEEDS]
# Gossip convergence in the simulator at SIZES agents (default "100 1000 5000"), SEEDS seeds each
# (default 2), default LAN timings (200 ms gossip interval, fanout 3, 30 s push-pull), no loss,
# 1-5 ms latency: bench/sim/gossip-<n>.toml starts n agents, then one late joiner, then kills one.
# Prints per size the simulated time for the late join to reach 99.99% of the views, the time for
# a failure to reach 99.99% of the views (from the first failed verdict, and from the kill to
# every view), and gossip bytes sent per agent per second (UDP and push-pull TCP) from convergence
# to the kill. A run over GOSSIP_BENCH_WALL_S wall seconds (default 600) is stopped and reported.
# SIM_PROFILE=release for a release build of the simulator (the default is sim/run's, dev).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sizes=${1:-"100 1000 5000"}
seeds=${2:-2}
wall_cap=${GOSSIP_BENCH_WALL_S:-600}
log=/tmp/cairn-gossip-convergence.log
cd "$root"
: >"$log"
sim/run --help >/dev/null 2>&1 || true # builds the simulator once, outside the timed runs
for n in $sizes; do
  for seed in $(seq 1 "$seeds"); do
    start=$(date +%s)
    rc=0
    out=$(timeout "$wall_cap" sim/run "bench/sim/gossip-$n.toml" --seed "$seed" 2>&1) || rc=$?
    case $rc in 0) verdict=PASS ;; 124) verdict=TIMEOUT ;; *) verdict=FAIL ;; esac
    stats=$(grep -m1 '^stats ' <<<"$out" || true)
    failure=$(grep -m1 '^FAIL' <<<"$out" || true)
    echo "n=$n seed=$seed verdict=$verdict wall_total_s=$(($(date +%s) - start)) ${stats#stats } ${failure}" | tee -a "$log"
  done
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    n = int(re.search(r"^n=(\d+)", line).group(1))
    rows.setdefault(n, []).append(line)
def values(lines, key):
    return [float(m.group(1)) for l in lines if (m := re.search(rf"\b{key}=([\d.]+)", l))]
def show(xs, unit):
    if not xs:
        return "n/a"
    xs = sorted(xs)
    return f"{statistics.median(xs):.0f} {unit}" + (f" ({xs[0]:.0f}-{xs[-1]:.0f})" if len(xs) > 1 else "")
print()
print("| agents | runs | late join to 99.99% of views | failure to 99.99% of views (from first verdict) "
      "| kill to every view | gossip bytes/agent/s | wall s per run |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for n, lines in sorted(rows.items()):
    done = [l for l in lines if "verdict=TIMEOUT" not in l]
    print(f"| {n:,} | {len(done)} of {len(lines)} finished | {show(values(done, 'join_disseminated_ms'), 'ms')} "
          f"| {show(values(done, 'failure_disseminated_ms_max'), 'ms')} | {show(values(done, 'detect_all_ms_max'), 'ms')} "
          f"| {show(values(done, 'gossip_bytes_per_agent_per_s'), 'B/s')} | {show(values(lines, 'wall_total_s'), 's')} |")
PY
