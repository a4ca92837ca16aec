"""TLS on the HTTP listener (issue 12): `[http] tls_listen` serves what `[http] listen`
serves, after a TLS handshake with the `[tls]` certificate, and what starts there counts as
encrypted. @xmpp/client logs in over wss:// and chats with a TCP client; a BOSH session
over https:// is offered SASL (the same request over the plain listener, with no proxy in
front, is not); XEP-0156 names wss:// and https://; a file goes up and comes back over
https://; bytes that are not TLS are dropped with no HTTP answer and harm no one else."""
import asyncio
import json
import os
import socket
import ssl
import urllib.request
import xml.etree.ElementTree as ET

from clients import close, login
from conftest import free_port
from test_bosh import SASL, Bosh
from test_upload import PLUGINS, request_slot
from test_websocket import js_client_chats_with_a_tcp_client


def https_server(martlet_server, **kw):
    plain, tls = free_port(), free_port()
    server = martlet_server(http={"listen": f"127.0.0.1:{plain}", "tls_listen": f"127.0.0.1:{tls}"}, **kw)
    server.http_port, server.https_port = plain, tls
    return server


def fetch(server, path, method="GET", data=None, headers=None):
    context = ssl.create_default_context(cafile=server.ca)
    req = urllib.request.Request(f"https://localhost:{server.https_port}{path}", data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10, context=context) as r:
        return r.status, dict(r.headers), r.read()


def test_xmpp_client_over_wss_chats_with_a_tcp_client(martlet_server):
    server = https_server(martlet_server)
    js_client_chats_with_a_tcp_client(server, f"wss://localhost:{server.https_port}/xmpp-websocket", "hello over wss")


def mechanisms(features):
    return [m.text for m in features.iter(f"{{{SASL}}}mechanism")]


def test_bosh_over_https_is_encrypted_and_logs_in(martlet_server):
    server = https_server(martlet_server)
    # The plain listener, with no TLS proxy declared: no authentication before TLS, which
    # BOSH cannot start (require_tls, the default).
    plain = Bosh(server.http_port).start()
    assert mechanisms(plain) == [], ET.tostring(plain)
    bosh = Bosh(server.https_port, ca=server.ca)
    features = bosh.start()
    assert "PLAIN" in mechanisms(features), ET.tostring(features)
    bosh.sid, bosh.rid = None, bosh.rid + 100  # a new session, through the login helper
    assert bosh.login().startswith("alice@localhost/bosh")
    assert server.metric_sum("martlet_bosh_requests_total") >= 6


def test_host_meta_over_https_names_wss_and_https(martlet_server):
    server = https_server(martlet_server)
    ws, bosh = (f"wss://localhost:{server.https_port}/xmpp-websocket", f"https://localhost:{server.https_port}/http-bind")
    _, _, xrd = fetch(server, "/.well-known/host-meta")
    assert f"href='{ws}'" in xrd.decode() and f"href='{bosh}'" in xrd.decode(), xrd
    _, _, jrd = fetch(server, "/.well-known/host-meta.json")
    assert [link["href"] for link in json.loads(jrd)["links"]] == [ws, bosh]


def test_a_file_goes_up_and_comes_back_over_https(martlet_server):
    server = https_server(martlet_server, upload={"file_bytes_max": 1_000_000})
    content = os.urandom(200_000)

    async def run():
        alice = await login(server, "alice", plugins=PLUGINS)
        put, get = await request_slot(alice, "notes.txt", len(content), "text/plain")
        # No public_url set: the slot names the HTTPS listener.
        assert put.startswith(f"https://127.0.0.1:{server.https_port}/upload/"), put
        path = lambda url: url.split(str(server.https_port), 1)[1]  # noqa: E731 (the certificate names localhost)
        status, _, _ = await asyncio.to_thread(fetch, server, path(put), "PUT", content, {"Content-Type": "text/plain"})
        assert status == 201
        status, headers, body = await asyncio.to_thread(fetch, server, path(get))
        assert status == 200 and body == content and headers["Content-Type"] == "text/plain"
        await close(alice)

    asyncio.run(run())


def test_bytes_that_are_not_tls_get_no_http_answer_and_harm_no_one(martlet_server):
    server = https_server(martlet_server)
    s = socket.create_connection(("127.0.0.1", server.https_port), timeout=5)
    s.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = b""
    try:
        while chunk := s.recv(4096):
            answer += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    assert b"HTTP/1.1" not in answer, answer
    s.close()
    status, _, _ = fetch(server, "/.well-known/host-meta")
    assert status == 200
