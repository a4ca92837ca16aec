"""XEP-0160: a message to an offline user is stored durably and delivered on the next
initial presence, after a reconnect and after a server restart."""
import asyncio

from clients import close, login


def test_offline_message_after_reconnect(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        alice.send_message(mto="bob@localhost", mbody="while you were out", mtype="chat")
        await asyncio.sleep(0.5)
        bob = await login(server, "bob")
        msg = await bob.next_message()
        assert msg["body"] == "while you were out" and msg["delay"]["stamp"] is not None
        await close(alice, bob)

    asyncio.run(run())
    assert server.metric_sum("martlet_offline_stored_total") == 1


def test_offline_message_survives_restart(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run_send():
        alice = await login(server, "alice")
        for i in range(3):
            alice.send_message(mto="bob@localhost", mbody=f"kept {i}", mtype="chat")
        await asyncio.sleep(0.5)
        await close(alice)

    async def run_receive():
        bob = await login(server, "bob")
        bodies = [(await bob.next_message())["body"] for _ in range(3)]
        assert bodies == ["kept 0", "kept 1", "kept 2"]
        await asyncio.sleep(0.3)
        assert bob.messages.empty()
        await close(bob)

    asyncio.run(run_send())
    server.restart()
    asyncio.run(run_receive())
    # Delivered once: a further login gets nothing.
    async def run_again():
        bob = await login(server, "bob", resource="again")
        await asyncio.sleep(0.5)
        assert bob.messages.empty()
        await close(bob)
    asyncio.run(run_again())


def test_no_offline_storage_for_negative_priority_only(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob", presence=False)
        bob.send_presence(ppriority=-1)
        await asyncio.sleep(0.3)
        alice.send_message(mto="bob@localhost", mbody="stored, not pushed", mtype="chat")
        await asyncio.sleep(0.5)
        assert bob.messages.empty()
        assert server.metric_sum("martlet_offline_stored_total") == 1
        # A non-negative priority later on the same session hands the stored message over.
        bob.send_presence(ppriority=1)
        assert (await bob.next_message())["body"] == "stored, not pushed"
        await close(alice, bob)

    asyncio.run(run())
