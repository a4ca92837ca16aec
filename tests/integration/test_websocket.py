"""RFC 7395 XMPP over WebSocket (issue 12) at `[http] listen`, path /xmpp-websocket: the
same sessions as over TCP (SASL, bind, routing) with WebSocket framing. @xmpp/client
connects natively; a raw client checks the handshake's refusals and the framing."""
import asyncio
import base64
import os
import socket
import subprocess

from clients import close, login
from conftest import PASSWORD, free_port
from test_other_clients import JS_DIR


def ws_server(martlet_server, http=None, **kw):
    port = free_port()
    server = martlet_server(http={"listen": f"127.0.0.1:{port}", "behind_tls_proxy": True, **(http or {})}, **kw)
    server.http_port = port
    return server


def js_client_chats_with_a_tcp_client(server, service, body):
    """@xmpp/client as alice at `service` (ws:// or wss://) sends bob, on TCP, `body`;
    bob answers, and the answer must reach it."""
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=server.ca, XMPP_SERVICE=service)

    async def run():
        bob = await login(server, "bob")
        proc = await asyncio.create_subprocess_exec(
            "node", "--experimental-websocket", "--no-warnings", str(JS_DIR / "chat.mjs"), "0", "alice", PASSWORD, "bob@localhost", body,
            cwd=JS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        msg = await bob.next_message(timeout=20)
        assert msg["body"] == body and str(msg["from"]).startswith("alice@localhost/")
        bob.send_message(mto=str(msg["from"]), mbody="hello back", mtype="chat")
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert '"body":"hello back"' in out.decode(), out.decode()
        await close(bob)

    asyncio.run(run())


def test_xmpp_client_over_websocket_chats_with_a_tcp_client(martlet_server):
    server = ws_server(martlet_server)
    js_client_chats_with_a_tcp_client(server, f"ws://127.0.0.1:{server.http_port}/xmpp-websocket", "hello over websocket")


def handshake(port, path="/xmpp-websocket", protocol="xmpp", headers=()):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *headers]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head.decode(errors="replace")


def frame(text, opcode=1):
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def read_message(s):
    """One server frame's text (servers do not mask)."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    return b0 & 0x0F, exact(n).decode()


def test_the_handshake_refuses_what_is_not_an_xmpp_websocket(martlet_server):
    server = ws_server(martlet_server)
    for path, protocol, status in (("/other", "xmpp", "404"), ("/xmpp-websocket", None, "400"), ("/xmpp-websocket", "chat", "400")):
        s, head = handshake(server.http_port, path, protocol)
        assert head.startswith(f"HTTP/1.1 {status}"), (path, protocol, head)
        s.close()
    s, head = handshake(server.http_port)
    assert head.startswith("HTTP/1.1 101") and "Sec-WebSocket-Protocol: xmpp" in head, head
    s.close()


def test_framing_open_features_and_an_oversized_message(martlet_server):
    # <open/> answers <open/> then stream:features declaring its prefix, one element per
    # message; a message larger than the stanza limit ends the connection.
    server = ws_server(martlet_server, limits={"stanza_bytes_max": 4096})
    s, head = handshake(server.http_port)
    assert head.startswith("HTTP/1.1 101"), head
    s.sendall(frame("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"))
    op, opened = read_message(s)
    assert op == 1 and opened.startswith("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'") and "from='localhost'" in opened, opened
    op, features = read_message(s)
    assert features.startswith("<stream:features xmlns:stream='http://etherx.jabber.org/streams'"), features
    assert "starttls" not in features, "no STARTTLS over WebSocket (RFC 7395 §3.1)"
    assert "PLAIN" in features or "SCRAM" in features
    s.sendall(frame("<message xmlns='jabber:client'><body>" + "x" * 10000 + "</body></message>"))
    s.settimeout(5)
    closed = False
    try:
        while s.recv(65536):
            pass
        closed = True
    except ConnectionError:
        closed = True
    except socket.timeout:
        pass
    assert closed, "the connection stays open after a message past stanza_bytes_max"
    s.close()


def test_host_meta_names_the_websocket_and_bosh_endpoints(martlet_server):
    # XEP-0156: how Converse.js and other web clients find the endpoints from the domain.
    import json
    import urllib.request
    server = ws_server(martlet_server)
    base = f"http://127.0.0.1:{server.http_port}/.well-known/host-meta"
    ws, bosh = f"wss://127.0.0.1:{server.http_port}/xmpp-websocket", f"https://127.0.0.1:{server.http_port}/http-bind"
    xrd = urllib.request.urlopen(base, timeout=5).read().decode()
    assert f"<Link rel='urn:xmpp:alt-connections:websocket' href='{ws}'/>" in xrd, xrd
    assert f"<Link rel='urn:xmpp:alt-connections:xbosh' href='{bosh}'/>" in xrd, xrd
    jrd = json.loads(urllib.request.urlopen(base + ".json", timeout=5).read())
    assert jrd["links"] == [{"rel": "urn:xmpp:alt-connections:websocket", "href": ws}, {"rel": "urn:xmpp:alt-connections:xbosh", "href": bosh}]


def opens(port, forwarded_for):
    """A WebSocket stream through a proxy that says the client is `forwarded_for`: the
    socket if the server served it (stream features), None if it refused it."""
    try:
        s, head = handshake(port, headers=[f"X-Forwarded-For: {forwarded_for}"])
    except ConnectionError:  # refused at accept, before any HTTP
        return None
    if not head.startswith("HTTP/1.1 101"):
        s.close()
        return None
    s.sendall(frame("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"))
    said = ""
    try:
        while "stream:features" not in said and "stream:error" not in said:
            said += read_message(s)[1]
    except (ConnectionError, socket.timeout):
        pass
    if "stream:features" in said:
        return s
    assert "policy-violation" in said or not said, said
    s.close()
    return None


def test_per_ip_limits_count_the_client_a_trusted_proxy_names(martlet_server):
    # Behind a reverse proxy every connection comes from the proxy's address: with it in
    # trusted_proxies, connections_per_ip_max counts the X-Forwarded-For client instead.
    server = ws_server(martlet_server, http={"trusted_proxies": ["127.0.0.1"]}, limits={"connections_per_ip_max": 2})
    held = [opens(server.http_port, f"203.0.113.{i}") for i in (1, 2, 3)]
    assert all(held), "three clients behind one proxy were refused as one address"
    same = [opens(server.http_port, "198.51.100.7, 203.0.113.9") for _ in range(3)]
    assert same[0] and same[1] and same[2] is None, "the third connection of one client was not refused"
    for s in held + same[:2]:
        s.close()


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(martlet_server):
    server = ws_server(martlet_server, limits={"connections_per_ip_max": 2})
    held = [opens(server.http_port, f"203.0.113.{i}") for i in (1, 2, 3)]
    assert held[0] and held[1] and held[2] is None, "a client escaped its per-IP limit by naming others"
    for s in held[:2]:
        s.close()


def test_at_shutdown_a_websocket_client_is_sent_to_see_other_uri(martlet_server):
    # RFC 7395 §3.6.1: the <close/> names where to go, in place of <system-shutdown/>.
    uri = "wss://other.example:5443/xmpp-websocket?a=1&b=2"
    server = ws_server(martlet_server, http={"see_other_uri": uri})
    s, head = handshake(server.http_port)
    assert head.startswith("HTTP/1.1 101"), head
    # Bound first: shutdown tells sessions, and drops streams still negotiating.
    opening = frame("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>")
    s.sendall(opening)
    assert [read_message(s)[1][:8] for _ in range(2)] == ["<open xm", "<stream:"]
    plain = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    s.sendall(frame(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"))
    assert read_message(s)[1].startswith("<success")
    s.sendall(opening)
    assert [read_message(s)[1][:8] for _ in range(2)] == ["<open xm", "<stream:"]
    s.sendall(frame("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"))
    assert "<jid>alice@localhost/" in read_message(s)[1]
    server.stop()
    s.settimeout(5)
    messages = []
    try:
        while True:
            messages.append(read_message(s)[1])
    except (ConnectionError, OSError):
        pass
    assert messages == ["<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='wss://other.example:5443/xmpp-websocket?a=1&amp;b=2'/>"], messages
