"""RFC 6120 negotiation with slixmpp: each SASL mechanism over STARTTLS and Direct TLS."""
import asyncio

import pytest

from clients import close, login

MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mech", MECHANISMS)
def test_login_with_each_mechanism(martlet_server, mech, direct_tls):
    server = martlet_server()

    async def run():
        client = await login(server, "alice", mech=mech, direct_tls=direct_tls)
        assert str(client.boundjid) == "alice@localhost/test"
        await close(client)

    asyncio.run(run())


@pytest.mark.parametrize("mech", MECHANISMS)
def test_wrong_password_is_refused(martlet_server, mech):
    server = martlet_server()

    async def run():
        with pytest.raises(PermissionError):
            await login(server, "alice", mech=mech, password="wrong")
        with pytest.raises(PermissionError):
            await login(server, "nobody", mech=mech)

    asyncio.run(run())


def test_newer_session_replaces_older_with_same_resource(martlet_server):
    server = martlet_server()

    async def run():
        first = await login(server, "alice", resource="same")
        second = await login(server, "alice", resource="same")
        # The newer session wins; the older one is told <conflict/> and disconnected.
        await asyncio.wait_for(_disconnected(first), 10)
        assert str(second.boundjid) == "alice@localhost/same"
        await close(second)

    asyncio.run(run())


async def _disconnected(client):
    while client.is_connected():
        await asyncio.sleep(0.05)
