"""Issue 9: the limits that had no test over a real socket. Each test sets the limit low,
goes past it and checks what README's config block promises, then that every core still
serves everyone else (served_probe)."""
import asyncio
import re
import time

from conftest import PASSWORD
from rawxmpp import Raw
from served_probe import assert_every_core_serves
from test_fast_login import Phone

CHAT_STATE = "<active xmlns='http://jabber.org/protocol/chatstates'/>"


def logged_in(server, user, resource=None):
    raw = Raw(server.port)
    jid = raw.login(server.ca, user, PASSWORD, resource=resource)
    raw.buf = b""
    return raw, jid


def ping(raw, id_):
    """Round trip through the session: whatever was sent before it has been handled."""
    raw.send(f"<iq type='get' id='{id_}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    raw.read_until(f"id='{id_}'".encode())


def wait_count(raw, marker, count, timeout=10):
    """Reads until `marker` was seen `count` times; returns how many were seen."""
    deadline = time.time() + timeout
    while raw.buf.count(marker) < count and time.time() < deadline:
        try:
            raw.read_until(b"\x00", timeout=min(0.2, max(0.05, deadline - time.time())))
        except TimeoutError:
            pass
    return raw.buf.count(marker)


def test_mam_page_is_cut_to_page_max_whatever_max_asks(martlet_server):
    # XEP-0313: results per query page, whatever <max/> asks.
    server = martlet_server(limits={"mam_page_messages_max": 2})
    alice, _ = logged_in(server, "alice")
    for i in range(4):
        alice.send(f"<message to='bob@localhost' type='chat' id='m{i}'><body>b{i}</body></message>")
    # Archiving is asynchronous: ask again until the archive holds more than a page.
    deadline, n, page = time.time() + 10, 0, ""
    while "complete='false'" not in page and time.time() < deadline:
        n += 1
        alice.buf = b""
        alice.send(f"<iq type='set' id='q{n}'><query xmlns='urn:xmpp:mam:2' queryid='x'>"
                   "<set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query></iq>")
        page = alice.read_until(f"id='q{n}'".encode())
    assert page.count("<result") == 2, page
    assert "complete='false'" in page, page
    assert_every_core_serves(server)


def test_pep_max_items_above_node_items_max_fails_the_precondition(martlet_server):
    # XEP-0163/XEP-0060: publish-options max_items up to pep_node_items_max; 'max' = it.
    server = martlet_server(limits={"pep_node_items_max": 2})
    alice, _ = logged_in(server, "alice")

    def publish(id_, item, max_items):
        alice.buf = b""
        alice.send(
            f"<iq type='set' id='{id_}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='urn:test:n'><item id='{item}'><x xmlns='urn:test'/></item></publish>"
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"<field var='pubsub#max_items'><value>{max_items}</value></field>"
            "</x></publish-options></pubsub></iq>")
        return alice.read_until(f"id='{id_}'".encode(), b"</iq>")

    refused = publish("p1", "i0", 3)
    assert "type='error'" in refused and "precondition-not-met" in refused, refused
    for i in range(4):
        assert "type='result'" in publish(f"ok{i}", f"i{i}", "max")
    alice.buf = b""
    alice.send("<iq type='get' id='g1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
               "<items node='urn:test:n'/></pubsub></iq>")
    items = alice.read_until(b"</iq>")
    kept = re.findall(r"<item id='(i\d)'", items)
    assert sorted(kept) == ["i2", "i3"], items
    assert_every_core_serves(server)


def test_unacked_past_max_ends_the_stream_and_reroutes(martlet_server):
    # XEP-0198: more unacknowledged than unacked_stanzas_max -> <resource-constraint/>, and
    # what was unacknowledged is routed again (here, no other resource: offline storage).
    server = martlet_server(stream_management={"unacked_stanzas_max": 3, "resume_timeout_secs": 0})
    alice, _ = logged_in(server, "alice")
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>")
    alice.read_until(b"<enabled")
    alice.send("<presence/>")
    bob, _ = logged_in(server, "bob")
    alice.buf = b""
    sent = 6
    for i in range(sent):
        bob.send(f"<message to='alice@localhost' type='chat' id='u{i}'><body>u{i}</body></message>")
    got = alice.read_until(b"</stream:stream>")
    assert "resource-constraint" in got, got[-500:]
    assert alice.closed_by_server(timeout=10)
    seen = set(re.findall(r"<body>(u\d)</body>", got))
    # Nothing is lost: the unacknowledged come back (offline storage) at the next login.
    again, _ = logged_in(server, "alice")
    again.send("<presence/>")
    deadline = time.time() + 10
    while len(seen | set(re.findall(r"<body>(u\d)</body>", again.buf.decode(errors="replace")))) < sent \
            and time.time() < deadline:
        wait_count(again, b"<body>", again.buf.count(b"<body>") + 1, timeout=0.5)
    seen |= set(re.findall(r"<body>(u\d)</body>", again.buf.decode(errors="replace")))
    assert seen == {f"u{i}" for i in range(sent)}, seen
    assert_every_core_serves(server)


def test_csi_held_past_max_sends_all(martlet_server):
    # XEP-0352: held for an inactive client; more than csi_held_stanzas_max -> all are sent.
    server = martlet_server(limits={"csi_held_stanzas_max": 2})
    alice, alice_jid = logged_in(server, "alice", resource="phone")
    alice.send("<presence/>")
    alice.read_until(b"<presence")  # her own presence back, before she is inactive
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    ping(alice, "p0")
    bob, _ = logged_in(server, "bob")
    alice.buf = b""
    for i in range(2):
        bob.send(f"<message to='{alice_jid}' type='chat' id='c{i}'>{CHAT_STATE}</message>")
    ping(bob, "p1")
    # Within the limit they are held (a negative check: nothing may arrive in this window).
    assert wait_count(alice, b"chatstates", 1, timeout=1.0) == 0, alice.buf
    bob.send(f"<message to='{alice_jid}' type='chat' id='c2'>{CHAT_STATE}</message>")
    assert wait_count(alice, b"chatstates", 3) == 3, alice.buf
    assert_every_core_serves(server)


def test_directed_presences_past_max_are_sent_but_not_told_of_the_end(martlet_server):
    # [limits] directed_presences_max: RFC 6121 §4.6 directed presence past it is still
    # delivered, only not remembered, so its target is not sent the unavailable at the end.
    server = martlet_server(users=["alice", "bob", "carol", "dave"], limits={"directed_presences_max": 2})
    alice, _ = logged_in(server, "alice")
    targets = {name: logged_in(server, name)[0] for name in ("bob", "carol", "dave")}
    for name, raw in targets.items():
        raw.send("<presence/>")
        ping(raw, "p-" + name)
        raw.buf = b""
    for name in targets:
        alice.send(f"<presence to='{name}@localhost'/>")
    for name, raw in targets.items():
        assert "alice@localhost" in raw.read_until(b"<presence"), f"{name} gets the directed presence"
        raw.buf = b""
    alice.send("<presence type='unavailable'/>")
    for name in ("bob", "carol"):
        assert "type='unavailable'" in targets[name].read_until(b"unavailable"), name
    # The same path as a presence would take: once this arrives, an unavailable would have.
    alice.send("<message to='dave@localhost' type='chat'><body>after</body></message>")
    seen = targets["dave"].read_until(b"after")
    assert "unavailable" not in seen, seen
    assert_every_core_serves(server)


def test_fast_token_of_the_oldest_client_is_dropped_past_clients_max(martlet_server):
    # XEP-0484: more clients than fast_clients_per_user_max hold tokens -> the one issued a
    # token longest ago loses it (its token no longer logs in); the newer ones keep theirs.
    server = martlet_server(limits={"fast_clients_per_user_max": 2})

    async def run():
        tokens = {}
        for agent in ("agent-1", "agent-2", "agent-3"):
            phone = await Phone.start(server, "alice", PASSWORD, agent)
            await phone.next("online")
            tokens[agent] = (await phone.next("token"))["token"]
            await phone.quit()
        oldest = await Phone.start(server, "alice", "not-the-password", "agent-1", tokens["agent-1"])
        failed = await oldest.next("failed")
        assert failed["condition"] == "not-authorized", failed
        await oldest.proc.wait()
        for agent in ("agent-2", "agent-3"):
            kept = await Phone.start(server, "alice", "not-the-password", agent, tokens[agent])
            await kept.next("online")
            await kept.quit()

    asyncio.run(run())
    assert_every_core_serves(server)
