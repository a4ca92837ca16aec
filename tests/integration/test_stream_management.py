"""XEP-0198 Stream Management with slixmpp's xep_0198 plugin: acks, resumption after a lost
connection (on whichever core the new connection lands), and what happens to stanzas the
client never acknowledged when it does not come back."""
import asyncio

from clients import WAIT_SECS, close, login
from conftest import PASSWORD
from rawxmpp import Raw
from test_bad_input import stream_error


async def lose_connection(client, server, sessions_before):
    """Kills the client's TCP connection without a stream close, and waits until the server
    has seen the connection go (its connection gauge drops) while the session stays."""
    client.abort()
    for _ in range(100):
        if server.metric_sum("martlet_connections") < sessions_before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server did not see the connection drop")


async def resume(client, server):
    resumed = asyncio.Event()
    client.add_event_handler("session_resumed", lambda _: resumed.set())
    client.connect("127.0.0.1", server.port)
    await asyncio.wait_for(resumed.wait(), WAIT_SECS)


def test_resume_delivers_what_arrived_while_away(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice", plugins=("xep_0198",))
        bob = await login(server, "bob")
        assert alice.plugin["xep_0198"].sm_id, "the server offered no resumption"
        # Several rounds: SO_REUSEPORT puts each new connection on either core, so some
        # resumptions cross cores; each must pick up exactly where the last one left off.
        for round_ in range(4):
            await lose_connection(alice, server, server.metric_sum("martlet_connections"))
            for i in range(3):
                bob.send_message(mto="alice@localhost/test", mbody=f"r{round_}m{i}", mtype="chat")
            await asyncio.sleep(0.3)
            await resume(alice, server)
            got = [(await alice.next_message())["body"] for _ in range(3)]
            assert got == [f"r{round_}m{i}" for i in range(3)]
        # Nothing arrives twice, and the session still routes both ways.
        alice.send_message(mto="bob@localhost", mbody="back", mtype="chat")
        assert (await bob.next_message())["body"] == "back"
        assert alice.messages.empty()
        # One session per resource all along: resumption replaced, never duplicated.
        assert server.metric_sum("martlet_sessions") == 2
        await close(alice, bob)

    asyncio.run(run())


def test_unacked_messages_go_offline_when_not_resumed(martlet_server):
    server = martlet_server(stream_management={"resume_timeout_secs": 1})

    async def run():
        alice = await login(server, "alice", plugins=("xep_0198",))
        bob = await login(server, "bob")
        await lose_connection(alice, server, server.metric_sum("martlet_connections"))
        bob.send_message(mto="alice@localhost", mbody="while you were out", mtype="chat")
        await asyncio.sleep(2.5)  # past resume_timeout_secs: the session ends for good
        assert server.metric_sum("martlet_sessions") == 1
        assert server.metric_sum("martlet_offline_stored_total") == 1
        again = await login(server, "alice", resource="other")
        msg = await again.next_message()
        assert msg["body"] == "while you were out"
        assert msg["delay"]["stamp"] is not None
        await close(again, bob)

    asyncio.run(run())


def test_unacked_go_to_another_resource(martlet_server):
    server = martlet_server(stream_management={"resume_timeout_secs": 1})

    async def run():
        phone = await login(server, "alice", resource="phone", plugins=("xep_0198",))
        laptop = await login(server, "alice", resource="laptop")
        bob = await login(server, "bob")
        await lose_connection(phone, server, server.metric_sum("martlet_connections"))
        bob.send_message(mto="alice@localhost/phone", mbody="for the phone", mtype="chat")
        # The laptop gets it once the phone's session has ended without resuming.
        msg = await laptop.next_message(timeout=5)
        assert msg["body"] == "for the phone"
        await close(laptop, bob)

    asyncio.run(run())


def test_resume_with_unknown_id_fails_and_binding_still_works(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    assert "urn:xmpp:sm:3" in raw.authenticate(server.ca, "alice", PASSWORD)
    raw.send("<resume xmlns='urn:xmpp:sm:3' previd='0123456789abcdef' h='0'/>")
    failed = raw.read_until(b"</failed>")
    assert "item-not-found" in failed
    raw.buf = b""
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert "<jid>alice@localhost/" in raw.read_until(b"</iq>")


def test_acks_count_stanzas_both_ways(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.login(server.ca, "alice", PASSWORD)
    raw.buf = b""
    raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
    assert "<enabled" in raw.read_until(b"<enabled")
    raw.buf = b""
    for i in range(3):
        raw.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    raw.send("<r xmlns='urn:xmpp:sm:3'/>")
    got = raw.read_until(b"<a ")
    assert "h='3'" in got.split("<a ")[1] or 'h="3"' in got.split("<a ")[1], got
    # The server asks for an ack of its three answers; acknowledging more is a stream error.
    raw.read_until(b"<r xmlns='urn:xmpp:sm:3'")
    raw.send("<a xmlns='urn:xmpp:sm:3' h='3'/>")
    raw.send("<a xmlns='urn:xmpp:sm:3' h='9'/>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "undefined-condition"
