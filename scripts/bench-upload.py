#!/usr/bin/env python3
"""XEP-0363 upload and download throughput, and the server's memory while files stream
(issue 12): run by scripts/bench-upload.sh against a node it started.
   bench-upload.py XMPP_PORT SERVER_PID CA_FILE SIZE_BYTES:COUNT...
For each size, COUNT files one after the other: a slot over XMPP (user1, password pw), a PUT
streamed from a 64 KiB generator (the client holds no file either), a GET read in 64 KiB
pieces. Prints, per size, MB/s up and down, the server's CPU seconds per MB (utime + stime
from /proc), and its RSS: before, the most seen while streaming (sampled every 50 ms), and
after. A store that held a file in memory would show its size in the peak."""
import asyncio
import http.client
import os
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import slixmpp

NS = "urn:xmpp:http:upload:0"
CHUNK_BYTES = 64 * 1024
SAMPLE_SECS = 0.05
MB = 1_000_000


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Peak:
    """The highest RSS seen while running, sampled in a thread."""

    def __init__(self, pid):
        self.pid, self.kb, self.running = pid, rss_kb(pid), True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            self.kb = max(self.kb, rss_kb(self.pid))
            time.sleep(SAMPLE_SECS)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.kb


def chunks(size):
    block = os.urandom(CHUNK_BYTES)
    left = size
    while left > 0:
        yield block[:min(left, CHUNK_BYTES)]
        left -= CHUNK_BYTES


def put(url, size):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    c.request("PUT", f"{u.path}?{u.query}", body=chunks(size),
              headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}, encode_chunked=False)
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 201, r.status


def get(url, size):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    c.request("GET", u.path)
    r = c.getresponse()
    got = 0
    while piece := r.read(CHUNK_BYTES):
        got += len(piece)
    c.close()
    assert (r.status, got) == (200, size), (r.status, got)


async def slots(port, ca, plan):
    client = slixmpp.ClientXMPP("user1@localhost/bench", "pw")
    client.ca_certs = ca  # STARTTLS, to the node's self-signed certificate
    client.register_plugin("xep_0030")
    online = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _: online.set_result(True))
    client.connect("127.0.0.1", port)
    await asyncio.wait_for(online, 20)
    out = []
    for size, count in plan:
        for i in range(count):
            iq = client.make_iq_get(ito="upload.localhost")
            ET.SubElement(iq.xml, f"{{{NS}}}request", {"filename": f"f{size}-{i}.bin", "size": str(size),
                                                        "content-type": "application/octet-stream"})
            slot = (await iq.send(timeout=10)).xml.find(f"{{{NS}}}slot")
            out.append((size, slot.find(f"{{{NS}}}put").get("url"), slot.find(f"{{{NS}}}get").get("url")))
    client.disconnect()
    return out


def main():
    port, pid, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    plan = [tuple(int(x) for x in arg.split(":")) for arg in sys.argv[4:]]
    all_slots = asyncio.run(slots(port, ca, plan))
    print("| file | files | up MB/s | down MB/s | server CPU s per MB (up+down) | server RSS before / peak / after, MB |")
    print("|---|---|---|---|---|---|")
    for size, count in plan:
        mine = [s for s in all_slots if s[0] == size][:count]
        before, cpu0 = rss_kb(pid), cpu_secs(pid)
        peak = Peak(pid)
        started = time.time()
        for _, put_url, _ in mine:
            put(put_url, size)
        up_secs = time.time() - started
        started = time.time()
        for _, _, get_url in mine:
            get(get_url, size)
        down_secs = time.time() - started
        high = peak.stop()
        cpu = cpu_secs(pid) - cpu0
        total_mb = size * count / MB
        print(f"| {size / MB:g} MB | {count} | {total_mb / up_secs:.0f} | {total_mb / down_secs:.0f} | "
              f"{cpu / (2 * total_mb):.4f} | {before / 1024:.1f} / {high / 1024:.1f} / {rss_kb(pid) / 1024:.1f} |")


if __name__ == "__main__":
    main()
