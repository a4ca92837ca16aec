"""XEP-0280 Message Carbons with slixmpp's xep_0280 plugin: a resource that enabled carbons
sees the chats its siblings receive and send; private messages are not copied."""
import asyncio

from clients import WAIT_SECS, close, login


class Copies:
    """Collects the carbons one client gets, by direction."""

    def __init__(self, client):
        self.received, self.sent = asyncio.Queue(), asyncio.Queue()
        client.add_event_handler("carbon_received", lambda m: self.received.put_nowait(m["carbon_received"]))
        client.add_event_handler("carbon_sent", lambda m: self.sent.put_nowait(m["carbon_sent"]))


def test_carbons_copy_received_and_sent_chats(martlet_server):
    server = martlet_server()

    async def run():
        phone = await login(server, "alice", resource="phone", plugins=("xep_0280",))
        laptop = await login(server, "alice", resource="laptop", plugins=("xep_0280",))
        bob = await login(server, "bob")
        copies = Copies(laptop)
        await laptop.plugin["xep_0280"].enable()
        await asyncio.sleep(0.2)  # the UserChannel tells phone's session a sibling wants copies

        bob.send_message(mto="alice@localhost/phone", mbody="to the phone", mtype="chat")
        assert (await phone.next_message())["body"] == "to the phone"
        got = await asyncio.wait_for(copies.received.get(), WAIT_SECS)
        assert got["body"] == "to the phone" and got["from"].bare == "bob@localhost"

        phone.send_message(mto="bob@localhost", mbody="from the phone", mtype="chat")
        assert (await bob.next_message())["body"] == "from the phone"
        got = await asyncio.wait_for(copies.sent.get(), WAIT_SECS)
        assert got["body"] == "from the phone" and str(got["to"]) == "bob@localhost"

        # Marked private (XEP-0280 §7): not copied; and the laptop got nothing as a plain message.
        msg = bob.make_message(mto="alice@localhost/phone", mbody="just the phone", mtype="chat")
        msg.append(phone.plugin["xep_0280"].stanza.PrivateCarbon())
        msg.send()
        assert (await phone.next_message())["body"] == "just the phone"
        await asyncio.sleep(0.5)
        assert copies.received.empty() and laptop.messages.empty()

        # Disabled: no more copies.
        await laptop.plugin["xep_0280"].disable()
        bob.send_message(mto="alice@localhost/phone", mbody="after disable", mtype="chat")
        assert (await phone.next_message())["body"] == "after disable"
        await asyncio.sleep(0.5)
        assert copies.received.empty()
        await close(phone, laptop, bob)

    asyncio.run(run())


def test_carbons_in_disco(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        assert "urn:xmpp:carbons:2" in info["disco_info"]["features"]
        await close(alice)

    asyncio.run(run())
