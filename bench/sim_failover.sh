#!/usr/bin/env bash
# bench/sim_failover.sh [SEEDS]
# Simulated milliseconds from killing the leader to the first acknowledged write invoked after the
# kill, with the default Raft timings: bench/sim/failover.toml kills the leader 6 times per seed
# under write load. Release build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seeds=${1:-20}
cd "$root"
SIM_PROFILE=release sim/run bench/sim/failover.toml --seeds "1..$seeds" | tee /tmp/cairn-sim-failover.log
python3 - /tmp/cairn-sim-failover.log <<'PY'
import re, sys
values = []
for line in open(sys.argv[1]):
    m = re.search(r"failover_ms=\[([^\]]*)\]", line)
    if m and m.group(1):
        values += [int(x) for x in m.group(1).split(",")]
values.sort()
q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
print(f"failover over {len(values)} leader crashes: min {values[0]} ms, median {q(0.5)} ms, "
      f"p90 {q(0.9)} ms, max {values[-1]} ms")
PY
