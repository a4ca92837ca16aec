"""XEP-0045 §7.13/§8.6 voice requests (issue 11): a visitor of a moderated room asks for
voice with slixmpp's own `request_voice`; the moderator gets the approval form, submits it,
and the visitor becomes a participant who may speak. Asking again at once is refused, and
an approval from someone who is not a moderator changes nothing."""
import asyncio

from clients import close
from test_muc import ROOM, create_room, muc_client, wait_for

REQUEST = "http://jabber.org/protocol/muc#request"


def approval(client, room, form_in, allow=True):
    """The moderator's answer: the form it was sent, submitted with request_allow set."""
    msg = client.make_message(room)
    form = msg["form"]
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=REQUEST)
    for var in ("muc#role", "muc#jid", "muc#roomnick"):
        form.add_field(var=var, value=form_in.get_fields()[var]["value"])
    form.add_field(var="muc#request_allow", ftype="boolean", value=allow)
    return msg


def test_a_visitor_asks_for_voice_and_a_moderator_grants_it(martlet_server):
    server = martlet_server(users=("alice", "bob", "carol"))

    async def run():
        alice, bob, carol = [await muc_client(server, u) for u in ("alice", "bob", "carol")]
        await create_room(alice, moderatedroom="1")
        for who in (bob, carol):
            pres, *_ = await who.plugin["xep_0045"].join_muc_wait(ROOM, who.boundjid.user, timeout=10)
            assert pres["muc"]["role"] == "visitor", pres
        info = await bob.plugin["xep_0030"].get_info(jid=ROOM)
        assert REQUEST in info["disco_info"]["features"]

        asked = wait_for(alice, "message_xform", lambda m: m["from"] == ROOM and m["form"]["type"] == "form")
        bob.plugin["xep_0045"].request_voice(ROOM, "participant")
        form = (await asked)["form"]
        fields = form.get_fields()
        assert fields["muc#roomnick"]["value"] == "bob" and fields["muc#jid"]["value"].startswith("bob@localhost")

        # Again at once: refused, and the moderator is not asked twice.
        refused = wait_for(bob, f"muc::{ROOM}::message_error")
        bob.plugin["xep_0045"].request_voice(ROOM, "participant")
        assert (await refused)["error"]["condition"] == "resource-constraint"

        # carol, a visitor, cannot answer for the moderator.
        refused = wait_for(carol, f"muc::{ROOM}::message_error")
        approval(carol, ROOM, form).send()
        assert (await refused)["error"]["condition"] == "forbidden"

        voiced = wait_for(bob, f"muc::{ROOM}::presence", lambda p: p["muc"]["nick"] == "bob" and p["muc"]["role"] == "participant")
        approval(alice, ROOM, form).send()
        await voiced
        heard = wait_for(carol, "groupchat_message", lambda m: m["body"] == "thanks")
        bob.send_message(mto=ROOM, mbody="thanks", mtype="groupchat")
        await heard
        await close(alice, bob, carol)

    asyncio.run(run())
