#!/usr/bin/env bash
# bench/sim_speed.sh [SEEDS]
# Simulated seconds per wall second: 3 servers under continuous writes for a simulated minute
# (bench/sim/steady.toml), release build, one seed after another on one core.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seeds=${1:-5}
cd "$root"
SIM_PROFILE=release sim/run bench/sim/steady.toml --seeds "1..$seeds" --jobs 1 | tee /tmp/cairn-sim-speed.log
python3 - /tmp/cairn-sim-speed.log <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1]) if "speed=" in l]
speed = sorted(float(re.search(r"speed=([\d.]+)x", l).group(1)) for l in rows)
ops = [int(re.search(r"acked_writes=(\d+)", l).group(1)) for l in rows]
sim = [float(re.search(r"sim_s=([\d.]+)", l).group(1)) for l in rows]
wall = [float(re.search(r"wall_s=([\d.]+)", l).group(1)) for l in rows]
print(f"simulated s per wall s: median {statistics.median(speed):.0f}x (min {speed[0]:.0f}x, max {speed[-1]:.0f}x) "
      f"over {len(rows)} seeds; {statistics.median(ops)/statistics.median(sim):.0f} acknowledged writes per simulated s; "
      f"{statistics.median(wall):.2f} wall s per {statistics.median(sim):.0f} simulated s")
PY
