#!/usr/bin/env python3
"""A TCP proxy that adds a fixed latency, for benches on a box without netem.

    latency_proxy.py --listen 127.0.0.1:P --upstream 127.0.0.1:S --rtt-ms 100 --log FILE

Every chunk read from one side is written to the other RTT/2 after it was read, in order
(per direction a queue of (due time, bytes)); an end of stream goes the same way. TLS,
STARTTLS included, is only bytes to it. Loopback completes a TCP handshake at once, while
a real network takes one RTT for it before the client can send: so a new connection's
client bytes are held until one RTT after the accept, then delayed as the others
(`--no-tcp-handshake` turns that off). The server's bytes are not held: it only sends
after the client did.

It counts round trips on the data without knowing the protocol: a burst of client bytes
followed by a burst of server bytes is one, so the count is the number of times the
client had to wait for the server (pipelined writes fall into one burst). It sees the
bytes in the order they reach the proxy, the middle of the path, which is the order of
cause and effect.

The log (JSON lines, appended and flushed as things happen; times are Unix seconds, the
clock the clients' reports use):
  {"conn": C, "open": T}                 C: "LISTEN_ADDRESS/N", N counting from 1
  {"conn": C, "dir": "c2s"|"s2c", "bytes": B, "read": T, "written": T}
  {"conn": C, "close": T, "round_trips": R}     R: the whole connection's count
`round_trips(events, until)` counts them for one connection up to a moment (a client's
"session usable"), taking a server burst only once written to the client by then;
`server_waits` says how long the server took to answer in each.
"""
import argparse
import asyncio
import itertools
import json
import socket
import sys
import time

CHUNK_BYTES = 65536


def round_trips(events, until=None):
    """Client bursts followed by server bursts in `events` (one connection's "dir" log
    records, in log order), counting a server burst only if some of it was written to
    the client at or before `until`."""
    return len(server_waits(events, until))


def server_waits(events, until=None):
    """For each round trip of round_trips(), the seconds from the proxy's write of the
    client's last bytes to the server until the server's answer reached the proxy: the
    server's time (plus loopback's), without the added latency. Of a burst written in
    several chunks the last one written before the answer counts (a TLS client's Finished
    is answered with session tickets while its next chunk may still be on its way)."""
    waits, last, sent = [], None, []
    for e in sorted(events, key=lambda e: e["read"]):
        if e["dir"] == "c2s":
            if until is not None and e["read"] > until:
                break
            sent = sent + [e["written"]] if last == "c2s" else [e["written"]]
            last = "c2s"
        else:
            if until is not None and e["written"] > until:
                continue
            if last == "c2s":
                before = [w for w in sent if w <= e["read"]]
                waits.append(e["read"] - max(before) if before else 0.0)
            last = "s2c"
    return waits


class Log:
    def __init__(self, path):
        self.file = open(path, "a", buffering=1) if path else None

    def write(self, **record):
        if self.file:
            self.file.write(json.dumps(record) + "\n")


async def pump(conn, direction, reader, writer, hold_until, delay, log, events):
    """Reads `reader` and writes each chunk to `writer` `delay` seconds later (not before
    `hold_until`), in order. Returns after forwarding the end of stream."""
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                now = time.time()
                queue.put_nowait((max(now, hold_until) + delay, now, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((time.time() + delay, time.time(), b""))

    async def write():
        while True:
            due, read_at, data = await queue.get()
            pause = due - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if not data:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                    else:
                        writer.close()
                except (ConnectionError, OSError):
                    pass
                return
            written = time.time()  # before the write: the peer may answer before drain() returns
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            record = {"conn": conn, "dir": direction, "bytes": len(data), "read": read_at, "written": written}
            events.append(record)
            log.write(**record)

    reading = asyncio.ensure_future(read())
    await write()
    reading.cancel()


async def serve(args):
    up_host, up_port = args.upstream.rsplit(":", 1)
    delay = args.rtt_ms / 2000.0
    handshake = 0.0 if args.no_tcp_handshake else args.rtt_ms / 1000.0
    log = Log(args.log)
    ids = itertools.count(1)

    async def handle(c_reader, c_writer):
        conn, opened = f"{args.listen}/{next(ids)}", time.time()
        log.write(conn=conn, open=opened)
        try:
            s_reader, s_writer = await asyncio.open_connection(up_host, int(up_port))
        except OSError as e:
            print(f"latency_proxy: upstream {args.upstream}: {e}", file=sys.stderr)
            c_writer.close()
            return
        for w in (c_writer, s_writer):
            w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        events = []
        await asyncio.gather(
            pump(conn, "c2s", c_reader, s_writer, opened + handshake, delay, log, events),
            pump(conn, "s2c", s_reader, c_writer, 0.0, delay, log, events),
        )
        for w in (c_writer, s_writer):
            w.close()
        log.write(conn=conn, close=time.time(), round_trips=round_trips(events))

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print(f"latency_proxy: {args.listen} -> {args.upstream}, RTT {args.rtt_ms} ms", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    p.add_argument("--rtt-ms", type=float, default=100.0, help="round-trip time added (half each way)")
    p.add_argument("--no-tcp-handshake", action="store_true", help="do not hold a new connection's first RTT")
    p.add_argument("--log", help="JSON-lines log of connections and chunks")
    try:
        asyncio.run(serve(p.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
