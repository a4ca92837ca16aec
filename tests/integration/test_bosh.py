"""XEP-0206 XMPP over BOSH (XEP-0124) at `[http] listen`, path /http-bind: a raw client
(http.client, a fresh TCP connection per request, so SO_REUSEPORT spreads one session's
requests over the server's two cores) checks session creation, SASL PLAIN and binding, a
chat with a slixmpp user, the rid rules, the held request's timeout, the errors XEP-0124
§17 prescribes, and that terminate and inactivity end the session as a dropped TCP
connection would (the contact sees it unavailable). Converse.js over BOSH is in
test_converse.py."""
import asyncio
import base64
import http.client
import random
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET

from clients import close, login
from conftest import PASSWORD
from test_presence import subscribe_both_ways
from test_websocket import ws_server

NS = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
STREAM = "http://etherx.jabber.org/streams"


def post(port, data, headers=None, timeout=90, ca=None):
    """One POST on a fresh connection: (status, body text, headers); over TLS to
    `localhost` when `ca` (the server's certificate) is given."""
    if ca:
        c = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ssl.create_default_context(cafile=ca))
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/http-bind", body=data, headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})
    r = c.getresponse()
    out = r.status, r.read().decode(), r.headers
    c.close()
    return out


class Bosh:
    """A BOSH client one request at a time: each waits for its answer."""

    def __init__(self, port, wait=5, ca=None):
        self.port, self.wait, self.sid, self.ca = port, wait, None, ca
        self.rid = random.randint(1 << 20, 1 << 40)

    def body(self, payload="", rid=None, **attrs):
        attrs = {"rid": str(self.rid if rid is None else rid), **({"sid": self.sid} if self.sid else {}), **attrs}
        text = " ".join(f"{k}='{v}'" for k, v in attrs.items())
        return f"<body xmlns='{NS}' xmlns:xmpp='{XBOSH}' {text}>{payload}</body>"

    def raw(self, data):
        status, text, _ = post(self.port, data, ca=self.ca)
        assert status == 200, (status, text)
        return text

    def send(self, payload="", **attrs):
        """Posts the next rid; the answer as an element."""
        text = self.raw(self.body(payload, **attrs))
        self.rid += 1
        return ET.fromstring(text)

    def start(self, **attrs):
        attrs = {"to": "localhost", "wait": str(self.wait), "hold": "1", "ver": "1.11", "xmpp:version": "1.0",
                 "xml:lang": "en", **attrs}
        answer = self.send(**attrs)
        self.sid = answer.get("sid")
        return answer

    def until(self, find, seconds=20):
        """Polls until `find(answer)` gives something."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            answer = self.send()
            assert answer.get("type") != "terminate", ET.tostring(answer)
            found = find(answer)
            if found is not None:
                return found
        raise AssertionError("not found in time")

    def login(self, user="alice", resource="bosh"):
        features = self.start()
        if features.find(f"{{{STREAM}}}features") is None:
            features = self.send()
        plain = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        answer = self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{plain}</auth>")
        if answer.find(f"{{{SASL}}}success") is None:
            answer = self.until(lambda a: a if a.find(f"{{{SASL}}}success") is not None else None)
        features = self.send(**{"xmpp:restart": "true", "to": "localhost"})
        if features.find(f"{{{STREAM}}}features") is None:
            features = self.until(lambda a: a if a.find(f"{{{STREAM}}}features") is not None else None)
        assert features.find(f"{{{STREAM}}}features/{{{BIND}}}bind") is not None, ET.tostring(features)
        assert features.find(f"{{{STREAM}}}features/{{urn:xmpp:sm:3}}sm") is None, "XEP-0198 is not offered over BOSH"
        answer = self.send(f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{BIND}'><resource>{resource}</resource></bind></iq>")
        jid = answer.find(f"{{jabber:client}}iq/{{{BIND}}}bind/{{{BIND}}}jid")
        if jid is None:
            jid = self.until(lambda a: a.find(f"{{jabber:client}}iq/{{{BIND}}}bind/{{{BIND}}}jid"))
        return jid.text


def bosh_server(martlet_server, limits=None, **http):
    return ws_server(martlet_server, http=http, limits=limits or {})


def test_session_creation_login_and_chat_with_a_tcp_client(martlet_server):
    server = bosh_server(martlet_server, bosh_wait_secs_max=30)

    async def run():
        bob = await login(server, "bob")
        alice = Bosh(server.http_port)
        first = await asyncio.to_thread(alice.start, wait="600")
        # XEP-0124 §7.1 / XEP-0206 §3: the session's parameters, the wait clamped to the maximum.
        a = first.attrib
        assert a["sid"] and a["wait"] == "30" and a["hold"] == "1" and a["requests"] == "2", a
        assert a["polling"] and a["inactivity"] == "60" and a["maxpause"] and a["ver"] == "1.11" and a["from"] == "localhost", a
        assert a[f"{{{XBOSH}}}version"] == "1.0" and a[f"{{{XBOSH}}}restartlogic"] == "true", a
        alice.sid = None
        jid = await asyncio.to_thread(alice.login)
        assert jid == "alice@localhost/bosh"
        await asyncio.to_thread(alice.send, "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>hello over bosh</body></message>")
        msg = await bob.next_message(timeout=20)
        assert msg["body"] == "hello over bosh" and str(msg["from"]) == "alice@localhost/bosh"
        bob.send_message(mto="alice@localhost/bosh", mbody="hello back", mtype="chat")
        body = await asyncio.to_thread(alice.until, lambda a: a.find("{jabber:client}message/{jabber:client}body"))
        assert body.text == "hello back"
        await close(bob)

    asyncio.run(run())


def test_held_request_is_answered_empty_after_wait_and_a_repeated_rid_gets_the_same_answer(martlet_server):
    server = bosh_server(martlet_server)
    b = Bosh(server.http_port, wait=2)
    first = b.start()
    assert first.find(f"{{{STREAM}}}features") is not None, "the first answer carries the stream features"
    started = time.time()
    empty = b.send()
    took = time.time() - started
    assert 1.5 <= took <= 6 and len(empty) == 0 and empty.get("type") is None, (took, ET.tostring(empty))
    # XEP-0124 §14.3: the same rid again is answered with the same response.
    rid = b.rid
    again = b.raw(b.body(rid=rid - 1))
    assert ET.fromstring(again).attrib == empty.attrib and len(ET.fromstring(again)) == 0
    assert b.raw(b.body(rid=rid - 2)) == b.raw(b.body(rid=rid - 2)), "the creation's answer, twice"
    # hold = 1: a second request answers the held one at once, and is held in its place.
    first = {}
    held = threading.Thread(target=lambda: first.update(answer=b.raw(b.body(rid=rid)), at=time.time()))
    started = time.time()
    held.start()
    time.sleep(0.5)
    b.raw(b.body(rid=rid + 1))
    held.join()
    assert first["at"] - started < 1.5, "freed by the newer request, not by wait (2 s)"


def test_bad_rid_unknown_sid_malformed_and_oversized_bodies_are_refused(martlet_server):
    server = bosh_server(martlet_server)
    port = server.http_port
    # Unknown sids, on this core, on another, on none: item-not-found (XEP-0124 §17.1).
    for sid in ("0.00000000000000000000000000000000", "1.deadbeef", "ff.0", "nonsense"):
        answer = ET.fromstring(post(port, f"<body xmlns='{NS}' rid='5' sid='{sid}'/>")[1])
        assert answer.get("type") == "terminate" and answer.get("condition") == "item-not-found", sid
    # A session for another domain, or for none.
    for to, condition in (("example.org", "host-unknown"), ("", "improper-addressing")):
        answer = ET.fromstring(post(port, f"<body xmlns='{NS}' rid='5' to='{to}' wait='5' hold='1'/>")[1])
        assert answer.get("type") == "terminate" and answer.get("condition") == condition, to
    # Malformed XML, a wrong wrapper, no rid: bad-request.
    for bad in ("<body xmlns='%s' rid='1'><unclosed></body>" % NS, "<html/>", f"<body xmlns='{NS}'/>", "\x00\x01"):
        answer = ET.fromstring(post(port, bad.encode())[1])
        assert answer.get("type") == "terminate" and answer.get("condition") == "bad-request", bad
    # A body over the limit is refused from its Content-Length, before it is read.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: 100000000\r\n\r\n<body")
        assert s.recv(4096).startswith(b"HTTP/1.1 413"), "413 Payload Too Large"
    # No Content-Length; GET; the CORS preflight.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /http-bind HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 411")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/http-bind")
    assert c.getresponse().status == 405
    c.close()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("OPTIONS", "/http-bind", headers={"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type"})
    r = c.getresponse()
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*", r.headers
    assert "POST" in r.headers["Access-Control-Allow-Methods"] and "content-type" in r.headers["Access-Control-Allow-Headers"].lower()
    c.close()
    # A rid beyond the window ends the session with item-not-found; its sid is then unknown.
    b = Bosh(port, wait=1)
    b.start()
    answer = ET.fromstring(b.raw(b.body(rid=b.rid + 1000)))
    assert answer.get("type") == "terminate" and answer.get("condition") == "item-not-found"
    answer = ET.fromstring(b.raw(b.body()))
    assert answer.get("type") == "terminate" and answer.get("condition") == "item-not-found"
    deadline = time.time() + 10
    while server.metric_sum("martlet_bosh_sessions") != 0 and time.time() < deadline:
        time.sleep(0.1)
    assert server.metric_sum("martlet_bosh_sessions") == 0
    assert server.metric_sum("martlet_bosh_errors_total") >= 12


def test_terminate_and_inactivity_end_the_session_and_the_contact_sees_it(martlet_server):
    server = bosh_server(martlet_server, bosh_inactivity_secs=2)

    async def run():
        alice_tcp = await login(server, "alice", resource="setup")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice_tcp, bob)
        await close(alice_tcp)
        gone = lambda r: (lambda p: p["type"] == "unavailable" and str(p["from"]) == f"alice@localhost/{r}")
        here = lambda r: (lambda p: p["type"] == "available" and str(p["from"]) == f"alice@localhost/{r}")
        for how in ("terminate", "inactivity"):
            alice = Bosh(server.http_port, wait=1)
            await asyncio.to_thread(alice.login, "alice", how)
            await asyncio.to_thread(alice.send, "<presence xmlns='jabber:client'/>")
            await bob.next_presence(here(how), timeout=20)
            if how == "terminate":
                answer = await asyncio.to_thread(alice.send, "<presence xmlns='jabber:client' type='unavailable'/>", type="terminate")
                assert answer.get("type") == "terminate" and answer.get("condition") is None
            # else: no request for bosh_inactivity_secs (2 s)
            await bob.next_presence(gone(how), timeout=20)
            answer = await asyncio.to_thread(alice.send)
            assert answer.get("type") == "terminate" and answer.get("condition") == "item-not-found"
        await close(bob)

    asyncio.run(run())


def test_one_sessions_requests_over_both_cores(martlet_server):
    server = bosh_server(martlet_server)
    assert "cores = 2" in server.config.read_text()

    async def run():
        bob = await login(server, "bob")
        alice = Bosh(server.http_port, wait=1)
        await asyncio.to_thread(alice.login)
        for i in range(12):
            await asyncio.to_thread(alice.send, f"<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>m{i}</body></message>")
        for i in range(12):
            assert (await bob.next_message(timeout=20))["body"] == f"m{i}", "in rid order, whatever core each request met"
        per_core = {core: v for (name, core), v in server.metrics().items() if name == "martlet_bosh_requests_total"}
        assert len(per_core) == 2 and all(v > 0 for v in per_core.values()), per_core
        assert server.metric_sum("martlet_cross_core_messages_total") > 0
        await close(bob)

    asyncio.run(run())


def test_a_client_that_stops_fetching_is_cut_after_send_stall_not_buffered(martlet_server):
    """What a BOSH client does not fetch waits in its session up to 256 KiB; past that the
    session's writes wait, as on a TCP connection nobody reads, and `send_stall_secs`
    later the session ends (long before `bosh_inactivity_secs`)."""
    server = bosh_server(martlet_server, limits={"send_stall_secs": 2}, bosh_inactivity_secs=120)

    async def run():
        alice_tcp = await login(server, "alice", resource="setup")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice_tcp, bob)
        await close(alice_tcp)
        alice = Bosh(server.http_port, wait=1)
        await asyncio.to_thread(alice.login)
        await asyncio.to_thread(alice.send, "<presence xmlns='jabber:client'/>")
        await bob.next_presence(lambda p: p["type"] == "available" and str(p["from"]) == "alice@localhost/bosh", timeout=20)
        started = time.time()
        for i in range(60):  # 60 x 10 KB: more than the 256 KiB a session keeps for its client
            bob.send_message(mto="alice@localhost/bosh", mbody=f"{i} " + "x" * 10_000, mtype="chat")
        await bob.next_presence(lambda p: p["type"] == "unavailable" and str(p["from"]) == "alice@localhost/bosh", timeout=30)
        assert time.time() - started < 60, "cut by send_stall_secs, not by bosh_inactivity_secs"
        await close(bob)

    asyncio.run(run())


def test_pause_keeps_the_session_past_inactivity_then_it_ends(martlet_server):
    """XEP-0124 §10: a pause answers at once, and the session outlives bosh_inactivity_secs
    for the pause asked (at most maxpause); without one it ends after inactivity."""
    server = bosh_server(martlet_server, bosh_inactivity_secs=1, bosh_pause_secs_max=4)
    b = Bosh(server.http_port, wait=5)
    assert b.start().get("maxpause") == "4"
    started = time.time()
    answer = b.send(pause="60")  # more than maxpause: held to 4 s
    assert time.time() - started < 2 and answer.get("type") is None, "a pause is answered at once"
    time.sleep(2.5)  # past inactivity, within the pause
    assert b.send().get("type") is None, "paused, not ended"
    b.send(pause="60")
    time.sleep(5)  # past maxpause, which the pause asked was cut to
    answer = b.send()
    assert answer.get("type") == "terminate" and answer.get("condition") == "item-not-found"


def test_polling_faster_than_advertised_ends_a_hold_0_session(martlet_server):
    # XEP-0124 §12: with hold 0 every request is answered at once, so empty ones are polls;
    # two closer than `polling` seconds end the session with policy-violation.
    server = bosh_server(martlet_server)
    bosh = Bosh(server.http_port)
    created = bosh.start(hold="0")
    assert created.get("hold") == "0" and created.get("polling") == "2", ET.tostring(created)
    polling = int(created.get("polling"))
    time.sleep(polling + 0.2)
    assert bosh.send().get("type") is None, "a poll after the interval is answered"
    time.sleep(polling + 0.2)
    plain = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    answer = bosh.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{plain}</auth>")
    assert answer.get("type") is None, "not a poll: it carries an element"
    assert bosh.send().get("type") is None, "the first poll after a request with payload"
    too_soon = bosh.send()
    assert (too_soon.get("type"), too_soon.get("condition")) == ("terminate", "policy-violation"), ET.tostring(too_soon)
    after = bosh.send()
    assert (after.get("type"), after.get("condition")) == ("terminate", "item-not-found"), "the session is gone"


class KeptBosh(Bosh):
    """A BOSH client on one HTTP/1.1 connection, kept alive between requests."""

    def __init__(self, port):
        super().__init__(port)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.sockets = []

    def raw(self, data):
        self.conn.request("POST", "/http-bind", body=data, headers={"Content-Type": "text/xml; charset=utf-8"})
        r = self.conn.getresponse()
        text = r.read().decode()
        assert (r.status, r.getheader("Connection")) == (200, "keep-alive"), (r.status, r.headers, text)
        self.sockets.append(self.conn.sock)
        return text


def test_one_kept_alive_connection_carries_a_whole_session(martlet_server):
    # Browsers reuse their connections: with TLS each new one would cost a handshake.
    server = bosh_server(martlet_server)
    bosh = KeptBosh(server.http_port)
    assert bosh.login().startswith("alice@localhost/bosh")
    assert len(bosh.sockets) >= 4 and all(s is bosh.sockets[0] for s in bosh.sockets), "one TCP connection throughout"
    # Asked to close, it closes after the answer.
    bosh.conn.request("POST", "/http-bind", body=bosh.body(), headers={"Connection": "close"})
    r = bosh.conn.getresponse()
    r.read()
    assert r.getheader("Connection") == "close"


def test_requests_sent_back_to_back_on_one_connection_are_answered_in_order(martlet_server):
    server = bosh_server(martlet_server)
    create = Bosh(server.http_port).body(to="localhost", wait="5", hold="1", ver="1.11", **{"xmpp:version": "1.0"})
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    s.sendall(b"OPTIONS /http-bind HTTP/1.1\r\nHost: localhost\r\nOrigin: http://elsewhere\r\n\r\n"
              + f"POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {len(create)}\r\nConnection: close\r\n\r\n{create}".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [a[:6] for a in answers] == [b"200 OK", b"200 OK"], data
    assert b"Access-Control-Allow-Methods" in answers[0] and b"sid=" in answers[1], data
