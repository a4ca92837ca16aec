"""XEP-0191 Blocking Command with slixmpp's xep_0191 plugin, and XEP-0186 Invisible Command:
a blocked contact neither reaches the user nor is reached, sees the user go away and come
back, and the list survives a restart; an invisible resource shows only to its own user."""
import asyncio
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from clients import close, login
from test_presence import subscribe_both_ways


def from_(jid, type_):
    return lambda p: p["from"].bare == jid and p["type"] == type_


def test_blocked_contact_is_cut_off_both_ways(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice", plugins=("xep_0191",))
        other = await login(server, "alice", resource="other", plugins=("xep_0191",))
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await bob.next_presence(from_("alice@localhost", "available"))
        pushed = asyncio.Event()
        other.add_event_handler("blocked", lambda _: pushed.set())

        await alice.plugin["xep_0191"].block("bob@localhost")
        await asyncio.wait_for(pushed.wait(), 5)  # §3.2: the other resource learns it
        await bob.next_presence(from_("alice@localhost", "unavailable"))  # §3.3
        assert await alice.plugin["xep_0191"].get_blocked_jids() == {"bob@localhost"}

        # Inbound: bob's message is refused, and alice sees nothing (§3.5).
        bob.send_message(mto="alice@localhost", mbody="hello?", mtype="chat")
        err = await bob.next_message()
        assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
        # Outbound: alice cannot write to bob (§3.6).
        alice.send_message(mto="bob@localhost", mbody="nope", mtype="chat")
        err = await alice.next_message()
        assert err["type"] == "error" and err["error"]["condition"] == "not-acceptable"
        assert "urn:xmpp:blocking:errors" in str(err)
        await asyncio.sleep(0.3)
        assert alice.messages.empty() and other.messages.empty() and bob.messages.empty()

        await alice.plugin["xep_0191"].unblock("bob@localhost")
        await bob.next_presence(from_("alice@localhost", "available"))  # §3.4
        alice.send_message(mto="bob@localhost", mbody="hi again", mtype="chat")
        assert (await bob.next_message())["body"] == "hi again"

        await alice.plugin["xep_0191"].block(["bob@localhost", "spam.example"])
        await close(alice, other, bob)
        server.restart()
        alice = await login(server, "alice", plugins=("xep_0191",))
        assert await alice.plugin["xep_0191"].get_blocked_jids() == {"bob@localhost", "spam.example"}
        bob = await login(server, "bob")
        bob.send_message(mto="alice@localhost", mbody="after restart", mtype="chat")
        assert (await bob.next_message())["type"] == "error"
        await close(alice, bob)

    asyncio.run(run())


def test_blocklist_limit(martlet_server):
    server = martlet_server(limits={"blocklist_items_max": 2})

    async def run():
        alice = await login(server, "alice", plugins=("xep_0191",))
        await alice.plugin["xep_0191"].block(["a@x.example", "b@x.example"])
        try:
            await alice.plugin["xep_0191"].block("c@x.example")
            raise AssertionError("blocklist grew past its limit")
        except IqError as e:
            assert e.condition == "resource-constraint"
        await close(alice)

    asyncio.run(run())


def invisibility(client, element):
    iq = client.make_iq_set()
    iq.append(ET.Element("{urn:xmpp:invisible:0}" + element))
    return iq.send()


def test_invisible_resource_shows_only_to_its_user(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await bob.next_presence(from_("alice@localhost", "available"))
        await invisibility(alice, "invisible")
        await bob.next_presence(from_("alice@localhost", "unavailable"))
        alice.send_presence(pstatus="secretly here")
        await asyncio.sleep(0.5)
        assert not [p for p in list(bob.unmatched) if p["from"].bare == "alice@localhost"]
        while not bob.presences.empty():
            assert bob.presences.get_nowait()["from"].bare != "alice@localhost"
        # Messages still flow while invisible.
        alice.send_message(mto="bob@localhost", mbody="boo", mtype="chat")
        assert (await bob.next_message())["body"] == "boo"
        await invisibility(alice, "visible")
        back = await bob.next_presence(from_("alice@localhost", "available"))
        assert back["status"] == "secretly here"
        await close(alice, bob)

    asyncio.run(run())
