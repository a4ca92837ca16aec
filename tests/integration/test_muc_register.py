"""XEP-0045 §7.10 registration with a room (issue 11): a user asks the room for its
registration form, submits a nick, and becomes a member whose nick no one else may take,
across a restart of a persistent room; giving the registration back frees the nick. The
clients are slixmpp; the forms are read from what slixmpp parsed."""
import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError, PresenceError

from clients import close
from test_muc import ROOM, create_room, muc_client

REGISTER = "jabber:iq:register"
DATA = "jabber:x:data"


async def registration_form(client, room=ROOM):
    iq = client.make_iq_get(queryxmlns=REGISTER, ito=room)
    return (await iq.send(timeout=10)).xml.find(f"{{{REGISTER}}}query")


async def register(client, nick, room=ROOM):
    iq = client.make_iq_set(ito=room)
    query = ET.Element(f"{{{REGISTER}}}query")
    form = ET.SubElement(query, f"{{{DATA}}}x", type="submit")
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#register"), ("muc#register_roomnick", nick)):
        ET.SubElement(ET.SubElement(form, f"{{{DATA}}}field", var=var), f"{{{DATA}}}value").text = value
    iq.append(query)
    return await iq.send(timeout=10)


async def unregister(client, room=ROOM):
    iq = client.make_iq_set(ito=room)
    query = ET.Element(f"{{{REGISTER}}}query")
    ET.SubElement(query, f"{{{REGISTER}}}remove")
    iq.append(query)
    return await iq.send(timeout=10)


async def join_error(client, nick, room=ROOM):
    with pytest.raises(PresenceError) as e:
        await client.plugin["xep_0045"].join_muc_wait(room, nick, timeout=10)
    return e.value.condition


def test_a_registered_nick_is_reserved_until_given_back(martlet_server):
    server = martlet_server(users=("alice", "bob", "carol"))

    async def run():
        alice, bob, carol = [await muc_client(server, u) for u in ("alice", "bob", "carol")]
        await create_room(alice, persistentroom="1")
        features = (await bob.plugin["xep_0030"].get_info(jid=ROOM))["disco_info"]["features"]
        assert REGISTER in features
        query = await registration_form(bob)
        fields = [f.get("var") for f in query.iter(f"{{{DATA}}}field")]
        assert "muc#register_roomnick" in fields, ET.tostring(query)
        await register(bob, "bobby")
        assert "bob@localhost" in await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
        query = await registration_form(bob)
        assert query.find(f"{{{REGISTER}}}registered") is not None
        assert query.findtext(f"{{{REGISTER}}}username") == "bobby"
        assert await join_error(carol, "bobby") == "conflict"
        with pytest.raises(IqError) as e:
            await register(carol, "bobby")
        assert e.value.condition == "conflict"
        await close(alice, bob, carol)

    asyncio.run(run())
    server.restart()  # the reservation is part of the persistent room's stored state

    async def after_restart():
        bob, carol = [await muc_client(server, u) for u in ("bob", "carol")]
        assert await join_error(carol, "bobby") == "conflict"
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bobby", timeout=10)
        await unregister(bob)
        bob.plugin["xep_0045"].leave_muc(ROOM, "bobby")
        await asyncio.sleep(0.3)
        await carol.plugin["xep_0045"].join_muc_wait(ROOM, "bobby", timeout=10)
        await close(bob, carol)

    asyncio.run(after_restart())


def test_a_members_only_room_lets_only_members_register(martlet_server):
    server = martlet_server(users=("alice", "bob"))

    async def run():
        alice, bob = [await muc_client(server, u) for u in ("alice", "bob")]
        await create_room(alice, membersonly="1")
        with pytest.raises(IqError) as e:
            await registration_form(bob)
        assert e.value.condition == "not-allowed"
        await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid="bob@localhost")
        await register(bob, "b")
        assert await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member") == ["bob@localhost"]
        await close(alice, bob)

    asyncio.run(run())
