"""XEP-0363 HTTP File Upload (issue 12): a slixmpp client finds the service through the
server's disco#items, asks for a slot (slixmpp's own xep_0363 needs aiohttp, so the
request is built here); the file goes up with an HTTP PUT to the [http] listener and
comes back with a GET, byte for byte; the limits answer as the XEP says."""
import asyncio
import http.client as http_client
import os
import subprocess
import time
import xml.etree.ElementTree as ET
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from clients import close, login
from conftest import free_port
from test_cluster import cluster  # noqa: F401 (a fixture)

PLUGINS = ("xep_0004",)
NS = "urn:xmpp:http:upload:0"


async def request_slot(client, filename, size, content_type):
    iq = client.make_iq_get(ito="upload.localhost")
    ET.SubElement(iq.xml, f"{{{NS}}}request", {"filename": filename, "size": str(size), "content-type": content_type})
    result = await iq.send(timeout=10)
    slot = result.xml.find(f"{{{NS}}}slot")
    return slot.find(f"{{{NS}}}put").get("url"), slot.find(f"{{{NS}}}get").get("url")


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_a_file_goes_up_and_comes_back_byte_for_byte(martlet_server):
    # Plain HTTP straight to the listener, so the public URL is said explicitly (as behind a
    # proxy it would be the proxy's https:// address).
    port = free_port()
    server = martlet_server(
        http={"listen": f"127.0.0.1:{port}", "behind_tls_proxy": True},
        upload={"file_bytes_max": 1_000_000, "quota_bytes_per_user": 1_000_000, "public_url": f"http://127.0.0.1:{port}"},
    )
    server.http_port = port
    content = os.urandom(300_000)  # several chunks each way

    async def run():
        alice = await login(server, "alice", plugins=PLUGINS)
        items = await alice.plugin["xep_0030"].get_items(jid="localhost")
        assert "upload.localhost" in [str(i[0]) for i in items["disco_items"]["items"]]
        info = await alice.plugin["xep_0030"].get_info(jid="upload.localhost")
        assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
        assert NS in info["disco_info"]["features"]
        fields = info.xml.findall(".//{jabber:x:data}field")
        assert {f.get("var"): f.findtext("{jabber:x:data}value") for f in fields}["max-file-size"] == "1000000"
        put, get = await request_slot(alice, "holiday photo.jpg", len(content), "image/jpeg")
        assert get.endswith("/holiday_photo.jpg") and get.startswith(f"http://127.0.0.1:{server.http_port}/upload/")

        # A PUT that does not match the slot is refused: another type, another size.
        assert http("PUT", put, content, {"Content-Type": "text/html"})[0] == 403
        assert http("PUT", put, content[:10], {"Content-Type": "image/jpeg"})[0] == 413
        status, _, _ = await asyncio.to_thread(http, "PUT", put, content, {"Content-Type": "image/jpeg"})
        assert status == 201
        assert http("PUT", put, content, {"Content-Type": "image/jpeg"})[0] == 409, "a slot is used once"

        status, headers, body = await asyncio.to_thread(http, "GET", get)
        assert status == 200 and body == content
        assert headers["Content-Type"] == "image/jpeg" and headers["X-Content-Type-Options"] == "nosniff"
        assert http("GET", get.replace("holiday_photo", "other"))[0] == 404
        assert http("GET", get.rsplit("/", 2)[0] + "/../../etc/passwd")[0] == 404

        # Too large for one file; then past the account's quota.
        with pytest.raises(IqError) as e:
            await request_slot(alice, "big.bin", 2_000_000, "application/octet-stream")
        assert e.value.condition == "not-acceptable" and "file-too-large" in str(e.value.iq)
        with pytest.raises(IqError) as e:
            await request_slot(alice, "more.bin", 900_000, "application/octet-stream")
        assert e.value.condition == "resource-constraint"
        await close(alice)

    asyncio.run(run())


def test_every_node_of_a_cluster_serves_every_file(cluster, tmp_path):
    """The cluster shares the upload directory (a shared mount in production) and the
    server secret (in the shared PostgreSQL): a slot one node signs is good for a PUT to
    any node, and a file one node took in, any node serves."""
    shared = tmp_path / "uploads"
    ports = [free_port(), free_port()]
    nodes = cluster(2, per_node=lambda i: {"http": {"listen": f"127.0.0.1:{ports[i]}", "behind_tls_proxy": True},
                                           "upload": {"path": str(shared), "public_url": f"http://127.0.0.1:{ports[i]}"}})
    content = os.urandom(100_000)

    async def run():
        alice = await login(nodes[0], "alice", plugins=PLUGINS)
        put, get = await request_slot(alice, "map.png", len(content), "image/png")
        assert put.startswith(f"http://127.0.0.1:{ports[0]}/upload/")
        other = lambda url: url.replace(str(ports[0]), str(ports[1]))  # noqa: E731
        status, _, _ = await asyncio.to_thread(http, "PUT", other(put), content, {"Content-Type": "image/png"})
        assert status == 201, "node1 checks node0's slot"
        for url in (get, other(get)):
            status, headers, body = await asyncio.to_thread(http, "GET", url)
            assert (status, body, headers["Content-Type"]) == (200, content, "image/png"), url
        await close(alice)

    asyncio.run(run())


def test_an_upload_below_the_minimum_rate_is_cut_and_its_part_deleted(martlet_server, tmp_path):
    port = free_port()
    server = martlet_server(
        http={"listen": f"127.0.0.1:{port}", "behind_tls_proxy": True},
        upload={"public_url": f"http://127.0.0.1:{port}", "bytes_per_sec_min": 10_000, "path": str(tmp_path / "up")},
    )
    size = 200_000

    async def run():
        alice = await login(server, "alice", plugins=PLUGINS)
        put, get = await request_slot(alice, "slow.bin", size, "application/octet-stream")
        await close(alice)
        return put, get

    put, get = asyncio.run(run())
    path = put.split(str(port), 1)[1]
    c = http_client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest("PUT", path)
    c.putheader("Content-Type", "application/octet-stream")
    c.putheader("Content-Length", str(size))
    c.endheaders()
    started, sent = time.time(), 0
    try:
        # 2,000 B/s: a fifth of the minimum, and each read well within send_stall_secs.
        while time.time() - started < 20 and sent < size:
            c.send(b"x" * 1000)
            sent += 1000
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.getresponse()
    assert r.status == 408, (r.status, r.read())
    assert 10 <= time.time() - started < 20, "cut after the grace, not before"
    assert http("GET", get)[0] == 404
    assert not any((tmp_path / "up").rglob(".part")), "the partial file is deleted"


def test_the_upload_benchmark_runs_and_its_memory_column_means_something():
    """scripts/bench-upload.sh's smoke: both sizes reported, and the server's RSS moved by
    far less than the bytes that streamed through it."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, MARTLET_BIN=str(root / "target/release/martlet"), BENCH_PORT=str(free_port()),
               BENCH_HTTP_PORT=str(free_port()))
    done = subprocess.run([str(root / "scripts/bench-upload.sh"), "300000:4", "20000000:2"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cells = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    rows = [c for c in cells if c[1].strip().isdigit()]
    assert [r[0].strip() for r in rows] == ["0.3 MB", "20 MB"], done.stdout
    for r in rows:
        assert float(r[2]) > 0 and float(r[3]) > 0, r
        before, peak, _ = (float(x) for x in r[5].split("/"))
        assert peak - before < 10, f"40 MB streamed; RSS grew {peak - before} MB"
