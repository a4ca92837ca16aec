#!/usr/bin/env python3
"""What a client's connect() costs the client when many connections are already held from
the same source address to the same server address and port (no XMPP, the kernel alone):
   scripts/bench-connect-scan.py [HELD...]      # default: 0 8000 15000 18000
Each connect() must pick an ephemeral port whose 4-tuple is free; once about half of the
range (net.ipv4.ip_local_port_range) is taken towards one destination, the kernel scans
many ports per connect(). A load generator that holds idle sessions and logs more in from
127.0.0.1 pays that in its own thread, so its login rate and latencies are its own limit,
not the server's: loadgen's --source-addresses spreads connections over 127.1.0.0/16.
Listens on 127.0.0.1:26299 (accepted connections are closed at once; the client ends stay
open and keep their ports). One process holds HELD + 1,500 files at most."""
import resource
import socket
import sys
import threading
import time

PORT = 26299
CONNECTS_TIMED = 1500

resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))


def serve(listener):
    while True:
        conn, _ = listener.accept()
        conn.close()


def connect_micros(source):
    """Mean wall time of one connect() from SOURCE (None: the kernel picks 127.0.0.1)."""
    socks = []
    start = time.perf_counter()
    for _ in range(CONNECTS_TIMED):
        s = socket.socket()
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", PORT))
        socks.append(s)
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    return elapsed / CONNECTS_TIMED * 1e6


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(4096)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    held = []
    for count in [int(a) for a in sys.argv[1:]] or [0, 8000, 15000, 18000]:
        while len(held) < count:
            s = socket.socket()
            s.connect(("127.0.0.1", PORT))
            held.append(s)
        print(f"held {count:6}: connect() from 127.0.0.1 {connect_micros(None):7.1f} us, "
              f"from 127.1.0.7 {connect_micros('127.1.0.7'):6.1f} us", flush=True)


main()
