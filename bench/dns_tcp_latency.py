#!/usr/bin/env python3
"""dns_tcp_latency.py HOST PORT NAME TYPE [SECONDS] [key=value ...]

One question asked again and again over one TCP connection, one at a time, for SECONDS (default
10): prints one JSON line with the latency percentiles in microseconds (measured from the first
byte sent to the last byte of the answer read, Python's own overhead included), the answer's size
and record counts. dnsperf is not used for this: it drops TCP answers larger than its buffer (a
64 KiB SRV answer never completes). key=value pairs are copied into the JSON (suite=dns ...).
Only HOST (127.0.0.1 in our benchmarks) is contacted.
"""
import json
import socket
import struct
import sys
import time

TYPES = {"A": 1, "NS": 2, "SOA": 6, "TXT": 16, "AAAA": 28, "SRV": 33}


def query(name, rtype, qid):
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", TYPES[rtype], 1)


def read_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def main():
    host, port, name, rtype = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rest = sys.argv[5:]
    seconds = float(rest.pop(0)) if rest and "=" not in rest[0] else 10.0
    extra = dict(arg.split("=", 1) for arg in rest)
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies, size, counts, qid = [], 0, None, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        qid = (qid + 1) & 0xFFFF
        message = query(name, rtype, qid)
        start = time.perf_counter_ns()
        sock.sendall(struct.pack("!H", len(message)) + message)
        (length,) = struct.unpack("!H", read_exact(sock, 2))
        body = read_exact(sock, length)
        latencies.append((time.perf_counter_ns() - start) / 1000)
        if struct.unpack("!H", body[:2])[0] != qid:
            sys.exit("an answer with another ID")
        size = length
        counts = struct.unpack("!HHHH", body[4:12])
    sock.close()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
    record = dict(extra)
    record.update(
        completed=len(latencies),
        qps=round(len(latencies) / seconds, 1),
        resp_bytes=size,
        answers=counts[1] if counts else 0,
        additionals=counts[3] if counts else 0,
        lat_us={"n": len(latencies), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": latencies[-1]},
    )
    print(json.dumps(record, sort_keys=True))


if __name__ == "__main__":
    main()
