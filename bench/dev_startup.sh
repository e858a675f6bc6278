#!/usr/bin/env bash
# bench/dev_startup.sh [RUNS]
# Wall time from starting `cairn agent -dev` to its first successful KV write (it has elected
# itself and serves HTTP), over RUNS fresh starts. Release build; ports 28500+ on 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs=${1:-10}
cargo build --quiet --release --manifest-path "$root/Cargo.toml" --bin cairn
python3 - "$root/target/release/cairn" "$runs" <<'PY'
import subprocess, sys, time, urllib.request, statistics
binary, runs = sys.argv[1], int(sys.argv[2])
ports = ["-http-port", "28500", "-dns-port", "28600", "-server-port", "28300", "-serf-lan-port", "28301", "-serf-wan-port", "28302"]
times = []
for _ in range(runs):
    t0 = time.monotonic()
    agent = subprocess.Popen([binary, "agent", "-dev", *ports], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if time.monotonic() - t0 > 10:
                sys.exit("agent not ready after 10 s")
            try:
                req = urllib.request.Request("http://127.0.0.1:28500/v1/kv/ready", data=b"1", method="PUT")
                if urllib.request.urlopen(req, timeout=1).read().strip() == b"true":
                    break
            except OSError:
                time.sleep(0.002)
        times.append((time.monotonic() - t0) * 1000)
    finally:
        agent.terminate()
        agent.wait()
times.sort()
print(f"-dev start to first acknowledged write: median {statistics.median(times):.0f} ms, "
      f"min {times[0]:.0f} ms, max {times[-1]:.0f} ms over {runs} starts")
PY
