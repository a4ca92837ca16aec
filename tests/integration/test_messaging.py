"""RFC 6121 §8.5 message delivery between sessions, across cores, and to several resources."""
import asyncio
import itertools

from clients import close, login


def test_full_mesh_across_both_cores(martlet_server):
    users = [f"u{i}" for i in range(12)]
    server = martlet_server(users=users)

    async def run():
        clients = [await login(server, u) for u in users]
        sessions = {core: v for (name, core), v in server.metrics().items() if name == "martlet_sessions"}
        assert all(v > 0 for v in sessions.values()) and len(sessions) == 2, f"sessions per core: {sessions}"
        owners = {core: v for (name, core), v in server.metrics().items() if name == "martlet_user_channels"}
        assert all(v > 0 for v in owners.values()), f"user channels per core: {owners}"
        cross_before = server.metric_sum("martlet_cross_core_messages_total")
        for a, b in itertools.permutations(range(len(users)), 2):
            clients[a].send_message(mto=f"{users[b]}@localhost", mbody=f"{a}->{b}", mtype="chat")
        for b, client in enumerate(clients):
            got = sorted([(await client.next_message())["body"] for _ in range(len(users) - 1)])
            assert got == sorted(f"{a}->{b}" for a in range(len(users)) if a != b)
        # With owners on both cores, some of those hops crossed between cores.
        assert server.metric_sum("martlet_cross_core_messages_total") > cross_before
        await close(*clients)

    asyncio.run(run())


async def alice_and_two_bobs(server):
    """alice, and bob on two resources with equal (default) priority."""
    return (await login(server, "alice"), await login(server, "bob", resource="phone"),
            await login(server, "bob", resource="laptop"))


def test_bare_jid_chat_reaches_every_resource(martlet_server):
    server = martlet_server()

    async def run():
        alice, phone, laptop = await alice_and_two_bobs(server)
        alice.send_message(mto="bob@localhost", mbody="to both", mtype="chat")
        for bob in (phone, laptop):
            msg = await bob.next_message()
            assert msg["body"] == "to both" and str(msg["from"]) == "alice@localhost/test"
        await close(alice, phone, laptop)

    asyncio.run(run())


def test_full_jid_reaches_only_that_resource(martlet_server):
    server = martlet_server()

    async def run():
        alice, phone, laptop = await alice_and_two_bobs(server)
        alice.send_message(mto="bob@localhost/laptop", mbody="just you", mtype="chat")
        assert (await laptop.next_message())["body"] == "just you"
        await asyncio.sleep(0.3)
        assert phone.messages.empty()
        await close(alice, phone, laptop)

    asyncio.run(run())


def test_spoofed_from_is_overwritten(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        msg = alice.make_message(mto="bob@localhost", mbody="who am i", mtype="chat")
        msg["from"] = "mallory@localhost/evil"
        msg.send()
        got = await bob.next_message()
        assert str(got["from"]) == "alice@localhost/test"
        await close(alice, bob)

    asyncio.run(run())


def test_message_to_unknown_user_bounces(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        alice.send_message(mto="ghost@localhost", mbody="anyone?", mtype="chat")
        err = await alice.next_message()
        assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
        await close(alice)

    asyncio.run(run())
