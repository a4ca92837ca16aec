"""Every limit of `[limits]`, exercised: each one bites and names itself on the wire."""
import asyncio
import time

from clients import close, login
from conftest import PASSWORD
from rawxmpp import Raw
from test_bad_input import stream_error


def test_handshake_timeout_drops_slowloris(martlet_server):
    server = martlet_server(limits={"handshake_timeout_secs": 2})
    raw = Raw(server.port)
    raw.open()  # then nothing
    started = time.time()
    assert stream_error(raw.read_until(b"</stream:stream>", timeout=6)) == "connection-timeout"
    assert raw.closed_by_server()
    assert 1.5 < time.time() - started < 5


def test_idle_timeout_after_unanswered_ping(martlet_server):
    server = martlet_server(limits={"ping_interval_secs": 1, "idle_timeout_secs": 3})
    raw = Raw(server.port)
    raw.login(server.ca, "alice", PASSWORD)
    raw.buf = b""
    ping = raw.read_until(b"urn:xmpp:ping", timeout=4)
    assert "type='get'" in ping or 'type="get"' in ping
    # Never answer: the session is closed for idleness.
    assert stream_error(raw.read_until(b"</stream:stream>", timeout=6)) == "connection-timeout"


def test_whitespace_keepalive_counts_as_liveness(martlet_server):
    server = martlet_server(limits={"ping_interval_secs": 10, "idle_timeout_secs": 2})
    raw = Raw(server.port)
    raw.login(server.ca, "alice", PASSWORD)
    for _ in range(6):
        time.sleep(0.5)
        raw.send(" ")
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "id='p1'" in raw.read_until(b"id='p1'", timeout=3)


def test_connections_per_ip(martlet_server):
    server = martlet_server(limits={"connections_per_ip_max": 3})
    # Node-wide, however SO_REUSEPORT spreads the connections over the cores.
    refused_before = server.metric_sum("martlet_connections_refused_total")
    conns = [Raw(server.port) for _ in range(12)]
    # Every connection answers a stream header promptly: features if accepted, the error if not.
    answers = [answer(c) for c in conns]
    accepted = sum("<starttls" in a for a in answers)
    assert accepted == 3, answers
    # A refused client reads <policy-violation/>, unless its late header made the closed
    # socket reset first; the server's own count is exact.
    assert all("policy-violation" in a or a == "" for a in answers if "<starttls" not in a), answers
    assert server.metric_sum("martlet_connections_refused_total") - refused_before == 12 - accepted


def answer(conn):
    try:
        return conn.open()
    except ConnectionResetError:
        return ""


def test_auth_failures_per_stream(martlet_server):
    server = martlet_server(limits={"auth_failures_max": 2})
    raw = Raw(server.port)
    raw.open()
    raw.starttls(server.ca)
    assert "not-authorized" in raw.auth_plain("alice", "wrong-1")
    reply = raw.auth_plain("alice", "wrong-2")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "not-authorized", reply


def test_auth_failures_per_ip_are_throttled(martlet_server):
    server = martlet_server(**{"": {"cores": 1}}, limits={"auth_failures_per_ip_per_minute": 2, "auth_failures_max": 5})
    for _ in range(2):
        raw = Raw(server.port)
        raw.open()
        raw.starttls(server.ca)
        assert "not-authorized" in raw.auth_plain("alice", "wrong")
        raw.close()
    raw = Raw(server.port)
    raw.open()
    raw.starttls(server.ca)
    raw.auth_plain("alice", PASSWORD)  # even the right password waits out the window
    assert stream_error(raw.read_until(b"</stream:stream>")) == "policy-violation"


def test_offline_queue_limit(martlet_server):
    server = martlet_server(limits={"offline_messages_max": 2})
    raw = Raw(server.port)
    raw.login(server.ca, "alice", PASSWORD)
    raw.buf = b""
    for i in range(3):
        raw.send(f"<message to='bob@localhost' type='chat' id='o{i}'><body>{i}</body></message>")
    reply = raw.read_until(b"resource-constraint", timeout=5)
    assert "id='o2'" in reply and "type='error'" in reply


def test_client_that_does_not_read_is_closed_not_buffered(martlet_server):
    server = martlet_server(limits={"session_mailbox_stanzas_max": 8, "send_stall_secs": 2})
    sink = Raw(server.port)
    sink.login(server.ca, "bob", PASSWORD)
    sink.send("<presence/>")  # available, so messages come here, and then never read again

    async def flood():
        alice = await login(server, "alice")
        body = "x" * 4000
        deadline = time.time() + 60
        sent = 0
        # Tens of MB toward bob: beyond what the kernel buffers on loopback, so bob's session
        # fills its bounded queue and is closed instead of growing without bound.
        while time.time() < deadline and server.metric_sum("martlet_session_mailbox_full_drops_total") == 0:
            for _ in range(500):
                alice.send_message(mto="bob@localhost", mbody=body, mtype="chat")
            sent += 500
            await asyncio.sleep(0.05)
        assert server.metric_sum("martlet_session_mailbox_full_drops_total") >= 1, f"{sent} messages sent"
        # Its writes stall, so after send_stall_secs the server drops the connection.
        assert sink.closed_by_server(timeout=15)
        # alice's stream is unaffected.
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=10)
        await close(alice)

    asyncio.run(flood())


def test_roster_items_limit(martlet_server):
    server = martlet_server(limits={"roster_items_max": 2})
    raw = Raw(server.port)
    raw.login(server.ca, "alice", PASSWORD)
    raw.buf = b""
    for i in range(3):
        raw.send(f"<iq type='set' id='r{i}'><query xmlns='jabber:iq:roster'><item jid='c{i}@localhost'/></query></iq>")
    reply = raw.read_until(b"resource-constraint", timeout=5)
    assert "id='r2'" in reply.split("resource-constraint")[0].rsplit("<iq", 1)[1]
    assert "id='r0'" in reply and "id='r1'" in reply


def test_user_mailbox_limit_answers_the_sender(martlet_server):
    # One core and a one-message mailbox: a burst to bob outruns his UserChannel, and every
    # message that does not fit comes back to alice as <resource-constraint/>, none vanishes.
    server = martlet_server(**{"": {"cores": 1}}, limits={"user_mailbox_messages_max": 1})
    bob = Raw(server.port)
    bob.login(server.ca, "bob", PASSWORD)
    bob.send("<presence/>")
    bob.read_until(b"<presence")  # available: messages are delivered, not stored
    alice = Raw(server.port)
    alice.login(server.ca, "alice", PASSWORD)
    alice.buf = b""
    sent = 50
    alice.send("".join(f"<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>" for i in range(sent)))
    deadline = time.time() + 10
    delivered = bounced = 0
    while time.time() < deadline and delivered + bounced < sent:
        for raw in (alice, bob):
            try:
                raw.read_until(b"\x00", timeout=0.2)
            except TimeoutError:
                pass
        delivered = bob.buf.count(b"<body>")
        bounced = alice.buf.count(b"resource-constraint")
    assert bounced >= 1 and delivered + bounced == sent, (delivered, bounced)
    assert server.metric_sum("martlet_user_mailbox_full_drops_total") == bounced


def test_stream_header_size_limit(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    attrs = "".join(f" a{i}='x'" for i in range(3000))
    raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
             f"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'{attrs}>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "policy-violation"


def test_stream_header_bytes_max_is_configured(martlet_server):
    # A 1 kB header passes the default 8 KiB and fails a configured 512 bytes.
    attrs = "".join(f" a{i}='x'" for i in range(100))
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              f"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'{attrs}>")
    for limit, refused in ((None, False), (512, True)):
        server = martlet_server(limits={"stream_header_bytes_max": limit} if limit else {})
        raw = Raw(server.port)
        raw.send(header)
        text = raw.read_until(b"</stream:features>", b"</stream:stream>")
        assert ("policy-violation" in text) == refused, (limit, text)


def test_full_core_mailbox_makes_senders_wait_not_lose(martlet_server):
    # Two-message channels between the cores: a burst across cores fills them at once, the
    # senders wait for room (backpressure), and every message still arrives, in order.
    users = [f"u{i}" for i in range(8)]
    server = martlet_server(users=users, limits={"core_mailbox_messages_max": 2})

    async def run():
        clients = [await login(server, u) for u in users]
        count = 200
        for i in range(count):
            for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
                clients[a].send_message(mto=f"{users[b]}@localhost", mbody=str(i), mtype="chat")
        for b in (1, 3, 5, 7):
            got = [(await clients[b].next_message())["body"] for _ in range(count)]
            assert got == [str(i) for i in range(count)]
        assert server.metric_sum("martlet_cross_core_messages_total") > 0
        await close(*clients)

    asyncio.run(run())


def test_resources_per_user_max_ends_the_oldest_session(martlet_server):
    # Like ejabberd's max_user_sessions: a new login of the user's own always works, and the
    # oldest session gives way, so one account cannot hold sessions without bound.
    server = martlet_server(limits={"resources_per_user_max": 3})
    sessions = []
    for i in range(4):
        raw = Raw(server.port)
        raw.login(server.ca, "alice", PASSWORD, resource=f"r{i}")
        sessions.append(raw)
    assert stream_error(sessions[0].read_until(b"</stream:stream>", timeout=5)) == "policy-violation"
    for i, raw in enumerate(sessions[1:], 1):
        raw.buf = b""
        raw.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert f"id='p{i}'" in raw.read_until(f"id='p{i}'".encode(), timeout=5)
    assert server.metric_sum("martlet_resources_evicted_total") == 1
    for raw in sessions:
        raw.close()
