"""XEP-0352 Client State Indication: an inactive client gets no presence until something
urgent arrives, then the newest presence of each contact, in order, before it."""
import asyncio

from clients import close, login
from test_presence import subscribe_both_ways


def drain(queue):
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_inactive_client_gets_presence_collapsed_on_urgent_message(martlet_server):
    server = martlet_server(users=("alice", "bob", "carol"))

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        carol = await login(server, "carol")
        await subscribe_both_ways(alice, bob)
        await subscribe_both_ways(alice, carol)
        await asyncio.sleep(0.5)
        alice.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        drain(alice.presences), alice.unmatched.clear()
        for status in ("one", "two", "three"):
            bob.send_presence(pstatus=status)
        carol.send_presence(pstatus="carol's")
        await asyncio.sleep(0.5)
        assert drain(alice.presences) == [], "presence reached an inactive client"
        # A chat is urgent: it comes with what was held, collapsed to one presence a contact.
        bob.send_message(mto="alice@localhost", mbody="wake up", mtype="chat")
        assert (await alice.next_message())["body"] == "wake up"
        # (Contacts' presences come from their own UserChannels, maybe on other cores: no
        # order between contacts is promised, only the newest of each.)
        held = sorted((p["from"].bare, p["status"]) for p in drain(alice.presences))
        assert held == [("bob@localhost", "three"), ("carol@localhost", "carol's")], held
        # Active again: presence flows at once.
        alice.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        bob.send_presence(pstatus="four")
        got = await alice.next_presence(lambda p: p["from"].bare == "bob@localhost")
        assert got["status"] == "four"
        await close(alice, bob, carol)

    asyncio.run(run())


def test_held_presence_is_sent_when_client_becomes_active(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await asyncio.sleep(0.5)
        alice.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        drain(alice.presences), alice.unmatched.clear()
        bob.send_presence(pstatus="away for lunch")
        await asyncio.sleep(0.5)
        assert drain(alice.presences) == []
        alice.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        got = await alice.next_presence(lambda p: p["from"].bare == "bob@localhost")
        assert got["status"] == "away for lunch"
        await close(alice, bob)

    asyncio.run(run())
