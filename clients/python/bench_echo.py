#!/usr/bin/env python3
"""1-byte echo round trips through the Python client (input, then the echo on a lossless
attachment), to set beside `cargo bench -p ptyd-tests --bench ipc` (the Rust client).

Run: PTYD_SOCKET=/path/to/ptyd.sock python3 clients/python/bench_echo.py [N]
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "src"))
import ptyd  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with ptyd.Client() as c:
        cat = c.spawn("sh", ["-c", "stty raw -echo; echo ready; exec cat"],
                      close_with_connection=True)
        att = c.attach(cat, since=0)
        att.read_until("ready")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            c.input(cat, b"a")
            att.read_until(b"a")
            times.append(time.perf_counter() - t)
        times.sort()
        p50, p99 = times[len(times) // 2], times[len(times) * 99 // 100]
        print(f"python client 1-byte echo p50 {p50 * 1e6:.1f} µs  p99 {p99 * 1e6:.1f} µs  ({n} runs)")


if __name__ == "__main__":
    main()
