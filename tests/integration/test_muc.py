"""XEP-0045 group chat (issue 11), driven by slixmpp's own xep_0045 plugin over real
sockets: room creation and configuration, joining, groupchat, subject, private messages,
nick changes, leaving, the join errors, moderation, history, the room's archive, and the
service's disco. Each assertion reads what the client library parsed, not our XML."""
import asyncio
import re

import pytest
from slixmpp.exceptions import IqError, PresenceError

from clients import close, login
from conftest import PASSWORD

ROOM = "lobby@conference.localhost"
USERS = ("alice", "bob", "carol")


async def muc_client(server, user, resource="test"):
    return await login(server, user, resource=resource, plugins=("xep_0045", "xep_0004", "xep_0313", "xep_0359", "xep_0421"))


def codes(presence):
    return {int(c) for c in presence["muc"]["status_codes"]}


async def create_room(owner, room=ROOM, nick="alice", **fields):
    """Creates `room` (201), fills in and submits its configuration form, which opens it."""
    pres, _subject, _occupants, _history = await owner.plugin["xep_0045"].join_muc_wait(room, nick, timeout=10)
    assert {201, 110} <= codes(pres), pres
    form = await owner.plugin["xep_0045"].get_room_config(room)
    for var, value in fields.items():
        form.set_values({f"muc#roomconfig_{var}": value})
    await owner.plugin["xep_0045"].set_room_config(room, form)
    return pres


async def room_archive(client, room, expected):
    """The bodies in `room`'s archive (XEP-0313), read until `expected` many are there: the
    archive writer commits in batches, a moment after the messages went out."""
    for _ in range(50):
        bodies = []
        async for r in client.plugin["xep_0313"].iterate(jid=room, total=100):
            bodies.append(r["mam_result"]["forwarded"]["stanza"]["body"])
        if len(bodies) >= expected:
            return bodies
        await asyncio.sleep(0.1)
    return bodies


def wait_for(client, event, match=lambda s: True, timeout=10):
    """Listens for `event` from now on (not from the first await): the awaitable of the
    first stanza that matches."""
    got = asyncio.get_running_loop().create_future()

    def handler(stanza):
        if match(stanza) and not got.done():
            got.set_result(stanza)
            client.del_event_handler(event, handler)

    client.add_event_handler(event, handler)
    return asyncio.wait_for(got, timeout)


def test_a_room_is_created_configured_joined_and_talked_in(martlet_server):
    server = martlet_server(users=USERS)

    async def run():
        alice, bob, carol = [await muc_client(server, u) for u in USERS]
        muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]
        await create_room(alice, roomname="Lobby", whois="anyone")

        bob_online = wait_for(alice, f"muc::{ROOM}::got_online", lambda p: p["muc"]["nick"] == "bob")
        pres, subject, occupants, _ = await muc_b.join_muc_wait(ROOM, "bob", timeout=10)
        assert {110, 100} <= codes(pres), "self-presence, non-anonymous room"
        others = [p for p in occupants if p["muc"]["nick"] != "bob"]
        assert [p["muc"]["nick"] for p in others] == ["alice"]
        assert others[0]["muc"]["role"] == "moderator" and others[0]["muc"]["affiliation"] == "owner"
        assert subject["subject"] in ("", None), subject  # an empty <subject/>: no subject yet
        seen = await bob_online
        assert seen["muc"]["role"] == "participant" and str(seen["muc"]["jid"]) == "bob@localhost/test"

        # A groupchat message reaches every occupant from the sender's occupant JID, with
        # the room's stanza-id (XEP-0359) and an occupant-id (XEP-0421).
        got = wait_for(bob, "groupchat_message", lambda m: m["body"] == "hello")
        echo = wait_for(alice, "groupchat_message", lambda m: m["body"] == "hello")
        alice.send_message(mto=ROOM, mbody="hello", mtype="groupchat")
        msg = await got
        assert str(msg["from"]) == f"{ROOM}/alice"
        assert msg["stanza_id"]["by"] == ROOM and msg["stanza_id"]["id"]
        assert msg["occupant-id"]["id"]
        await echo

        # Subject by a moderator.
        got = wait_for(bob, "groupchat_subject")
        muc_a.set_subject(ROOM, "Today: tests")
        assert (await got)["subject"] == "Today: tests"

        # A visitor-free room: bob may send a private message through the room.
        got = wait_for(alice, "message", lambda m: m["body"] == "psst")
        bob.send_message(mto=f"{ROOM}/alice", mbody="psst", mtype="chat")
        assert str((await got)["from"]) == f"{ROOM}/bob"

        # Nick change: the others see 303 with the new nick, then the new occupant.
        renamed = wait_for(alice, f"muc::{ROOM}::presence", lambda p: 303 in codes(p))
        await muc_b.set_self_nick(ROOM, "robert", timeout=10)
        p = await renamed
        assert p["muc"]["nick"] == "bob" and p["muc"]["item"]["nick"] == "robert"

        # History: a late joiner asking for one stanza gets the last message, delayed.
        for i in range(3):
            alice.send_message(mto=ROOM, mbody=f"m{i}", mtype="groupchat")
        await wait_for(bob, "groupchat_message", lambda m: m["body"] == "m2")
        _, subject, _, history = await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", maxstanzas=1, timeout=10)
        assert [m["body"] for m in history] == ["m2"]
        assert history[0]["delay"]["from"] == ROOM
        assert subject["subject"] == "Today: tests"

        # Leaving: the others see unavailable.
        gone = wait_for(alice, f"muc::{ROOM}::got_offline", lambda p: p["muc"]["nick"] == "carol")
        carol.plugin["xep_0045"].leave_muc(ROOM, "carol")
        await gone
        await close(alice, bob, carol)

    asyncio.run(run())


def test_the_errors_a_join_can_meet(martlet_server):
    server = martlet_server(users=USERS)

    async def run():
        alice, bob, carol = [await muc_client(server, u) for u in USERS]
        muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]

        async def join_error(client, room, nick, **kw):
            with pytest.raises(PresenceError) as e:
                await client.plugin["xep_0045"].join_muc_wait(room, nick, timeout=10, **kw)
            return e.value.condition

        # A new room is locked until its owner configures it (§10.1.1).
        await muc_a.join_muc_wait("locked@conference.localhost", "alice", timeout=10)
        assert await join_error(bob, "locked@conference.localhost", "bob") == "item-not-found"

        await create_room(alice, "secret@conference.localhost", passwordprotectedroom="1", roomsecret="s3")
        assert await join_error(bob, "secret@conference.localhost", "bob") == "not-authorized"
        await muc_b.join_muc_wait("secret@conference.localhost", "bob", password="s3", timeout=10)
        assert await join_error(carol, "secret@conference.localhost", "bob", password="s3") == "conflict"

        await create_room(alice, "club@conference.localhost", membersonly="1")
        assert await join_error(bob, "club@conference.localhost", "bob") == "registration-required"
        await muc_a.set_affiliation("club@conference.localhost", "member", jid="bob@localhost")
        await muc_b.join_muc_wait("club@conference.localhost", "bob", timeout=10)
        members = await muc_a.get_affiliation_list("club@conference.localhost", "member")
        assert [str(j) for j in members] == ["bob@localhost"]

        # Kick (307), then ban (301): the banned cannot come back.
        kicked = wait_for(bob, "muc::club@conference.localhost::presence", lambda p: 307 in codes(p))
        await muc_a.set_role("club@conference.localhost", "bob", "none")
        await kicked
        await muc_b.join_muc_wait("club@conference.localhost", "bob", timeout=10)
        banned = wait_for(bob, "muc::club@conference.localhost::presence", lambda p: 301 in codes(p))
        await muc_a.set_affiliation("club@conference.localhost", "outcast", jid="bob@localhost")
        await banned
        assert await join_error(bob, "club@conference.localhost", "bob") == "forbidden"

        # Only an owner may configure; the last owner stays one.
        with pytest.raises(IqError) as e:
            await muc_b.get_room_config("secret@conference.localhost")
        assert e.value.condition == "forbidden"
        with pytest.raises(IqError) as e:
            await muc_a.set_affiliation("club@conference.localhost", "none", jid="alice@localhost")
        assert e.value.condition == "conflict"
        await close(alice, bob, carol)

    asyncio.run(run())


def test_destroying_a_room_tells_its_occupants_and_forgets_it(martlet_server):
    server = martlet_server(users=USERS)

    async def run():
        alice, bob = [await muc_client(server, u) for u in USERS[:2]]
        await create_room(alice)
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
        told = wait_for(bob, f"muc::{ROOM}::presence", lambda p: p["type"] == "unavailable")
        await alice.plugin["xep_0045"].destroy(ROOM, reason="moving", altroom="new@conference.localhost")
        p = await told
        assert p["muc"]["destroy"]["reason"] == "moving"
        with pytest.raises(IqError) as e:
            await bob.plugin["xep_0030"].get_info(jid=ROOM)
        assert e.value.condition == "item-not-found"
        await close(alice, bob)

    asyncio.run(run())


def test_the_service_lists_public_rooms_and_a_room_answers_disco_and_mam(martlet_server):
    server = martlet_server(users=USERS)

    async def run():
        alice, bob = [await muc_client(server, u) for u in USERS[:2]]
        info = await bob.plugin["xep_0030"].get_info(jid="conference.localhost")
        assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
        assert ("conference", "text", None, "Chatrooms") in info["disco_info"]["identities"]
        await create_room(alice, roomname="Lobby")
        await create_room(alice, "hidden@conference.localhost", publicroom="0")
        items = await bob.plugin["xep_0030"].get_items(jid="conference.localhost")
        assert [(str(i[0]), i[2]) for i in items["disco_items"]["items"]] == [(ROOM, "Lobby")]
        room = await bob.plugin["xep_0030"].get_info(jid=ROOM)
        features = room["disco_info"]["features"]
        assert {"http://jabber.org/protocol/muc", "muc_temporary", "muc_open", "muc_semianonymous", "urn:xmpp:mam:2"} <= set(features)

        for i in range(3):
            alice.send_message(mto=ROOM, mbody=f"a{i}", mtype="groupchat")
        await wait_for(alice, "groupchat_message", lambda m: m["body"] == "a2")
        # XEP-0313 on the room: a non-occupant of an open room reads its archive.
        assert await room_archive(bob, ROOM, 3) == ["a0", "a1", "a2"]
        await close(alice, bob)

    asyncio.run(run())


def test_an_occupant_whose_session_ends_leaves_the_room(martlet_server):
    server = martlet_server(users=USERS)

    async def run():
        alice, bob = [await muc_client(server, u) for u in USERS[:2]]
        await create_room(alice)
        await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=10)
        gone = wait_for(alice, f"muc::{ROOM}::got_offline", lambda p: p["muc"]["nick"] == "bob")
        bob.abort()  # the TCP connection drops: no unavailable from the client
        await gone
        await close(alice)

    asyncio.run(run())


def test_a_message_reaches_many_occupants_in_one_hop_per_core(martlet_server):
    # The room's fan-out goes as one CoreMsg::Batch per other core (and one frame per
    # other node), not one cross-core message per occupant, and straight to the occupants'
    # sessions, not through each user's UserChannel (a second hop per occupant whose
    # session and UserChannel are on different cores): 12 occupants, 2 cores, so each
    # groupchat message costs at most the sender's hop to the room and one batched hop.
    users = [f"u{i}" for i in range(12)]
    server = martlet_server(users=users)

    async def run():
        clients = [await muc_client(server, u) for u in users]
        await create_room(clients[0], nick="u0")
        for c, u in zip(clients[1:], users[1:]):
            await c.plugin["xep_0045"].join_muc_wait(ROOM, u, timeout=10)
        await asyncio.sleep(0.3)
        before = {m: server.metric_sum(f"martlet_{m}_total") for m in ("batched_hops", "cross_core_messages")}
        for i in range(5):
            waits = [wait_for(c, "groupchat_message", lambda m, i=i: m["body"] == f"b{i}") for c in clients]
            clients[0].send_message(mto=ROOM, mbody=f"b{i}", mtype="groupchat")
            await asyncio.gather(*waits)
        hops = server.metric_sum("martlet_batched_hops_total") - before["batched_hops"]
        assert 1 <= hops <= 5, f"{hops} batched hops for 5 messages to 12 occupants on 2 cores"
        cross_core = server.metric_sum("martlet_cross_core_messages_total") - before["cross_core_messages"]
        print(f"{hops} batched hops, {cross_core} cross-core messages (40 through the UserChannels)")
        assert cross_core <= 10, f"{cross_core} cross-core messages for 5 messages to 12 occupants on 2 cores"
        assert server.metric_sum("martlet_muc_messages_total") >= 5
        await close(*clients)

    asyncio.run(run())


def test_an_absent_member_gets_a_push_and_catches_up_from_the_room_archive(martlet_server):
    # Seed 003: bob is a member of a members-only room and not in it (his phone is off).
    # Each message pushes (XEP-0357, through his registration), and when he comes back his
    # client's MAM catch-up on the room gives him every message since.
    from test_push import app_server, next_push, push_iq
    server = martlet_server(users=("alice", "bob", "app"))

    async def run():
        app = await app_server(server)
        alice = await muc_client(server, "alice")
        bob = await muc_client(server, "bob")
        await push_iq(bob, "enable", node="bob-phone")
        await create_room(alice, "team@conference.localhost", membersonly="1")
        await alice.plugin["xep_0045"].set_affiliation("team@conference.localhost", "member", jid="bob@localhost")
        await close(bob)
        for i in range(3):
            alice.send_message(mto="team@conference.localhost", mbody=f"while away {i}", mtype="groupchat")
        sender, node, fields, _ = await next_push(app)
        assert (sender, node) == ("bob@localhost", "bob-phone")
        assert fields["last-message-sender"] == "team@conference.localhost"

        bob = await muc_client(server, "bob", resource="back")
        assert await room_archive(bob, "team@conference.localhost", 3) == [f"while away {i}" for i in range(3)]
        await close(alice, bob, app)

    asyncio.run(run())


def test_a_persistent_room_outlives_a_restart_with_its_members_subject_and_archive(martlet_server, storage):
    server = martlet_server(users=USERS, storage=storage)
    room = "keep@conference.localhost"

    async def before():
        alice = await muc_client(server, "alice")
        await create_room(alice, room, roomname="Kept", persistentroom="1", membersonly="1")
        await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
        alice.plugin["xep_0045"].set_subject(room, "still here")
        alice.send_message(mto=room, mbody="before the restart", mtype="groupchat")
        await wait_for(alice, "groupchat_message", lambda m: m["body"] == "before the restart")
        await close(alice)

    async def after():
        bob, carol = await muc_client(server, "bob"), await muc_client(server, "carol")
        items = await bob.plugin["xep_0030"].get_items(jid="conference.localhost")
        assert [(str(i[0]), i[2]) for i in items["disco_items"]["items"]] == [(room, "Kept")]
        _, subject, _, _ = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", timeout=10)
        assert subject["subject"] == "still here"
        with pytest.raises(PresenceError) as e:
            await carol.plugin["xep_0045"].join_muc_wait(room, "carol", timeout=10)
        assert e.value.condition == "registration-required", "the member list came back"
        assert await room_archive(bob, room, 1) == ["before the restart"]
        await close(bob, carol)

    asyncio.run(before())
    server.restart()
    asyncio.run(after())


def test_bookmarks_self_ping_and_direct_invitations_around_rooms(martlet_server):
    # XEP-0402 bookmarks in PEP and XEP-0048 bookmarks in private XML, both read back by a
    # second device of the same account (how clients auto-join across devices); XEP-0410
    # self-ping answered by the room; a XEP-0249 direct invitation reaching its invitee.
    from slixmpp.plugins.xep_0402.stanza import Conference
    from slixmpp.plugins.xep_0048.stanza import Bookmarks
    from slixmpp.plugins.xep_0410.self_ping import PingStatus
    server = martlet_server(users=USERS)
    extra = ("xep_0045", "xep_0004", "xep_0060", "xep_0163", "xep_0223", "xep_0402", "xep_0048", "xep_0049", "xep_0410", "xep_0249")

    async def run():
        phone = await login(server, "alice", resource="phone", plugins=extra)
        laptop = await login(server, "alice", resource="laptop", plugins=extra)
        bob = await login(server, "bob", plugins=extra)

        bookmark = Conference()
        bookmark["name"], bookmark["autojoin"], bookmark["nick"] = "Lobby", "true", "alice"
        await phone.plugin["xep_0223"].store(bookmark, node="urn:xmpp:bookmarks:1", id=ROOM)
        items = await laptop.plugin["xep_0223"].retrieve("urn:xmpp:bookmarks:1")
        got = list(items["pubsub"]["items"])
        assert [i["id"] for i in got] == [ROOM]
        assert got[0]["conference"]["name"] == "Lobby" and got[0]["conference"]["nick"] == "alice"
        with pytest.raises(IqError):  # whitelist: bob cannot read alice's bookmarks
            await bob.plugin["xep_0060"].get_items(jid="alice@localhost", node="urn:xmpp:bookmarks:1")

        legacy = Bookmarks()
        legacy.add_conference(ROOM, "alice", name="Lobby", autojoin=True)
        await phone.plugin["xep_0048"].set_bookmarks(legacy, method="xep_0049")
        stored = await laptop.plugin["xep_0048"].get_bookmarks(method="xep_0049")
        conferences = stored["private"]["bookmarks"]["conferences"]
        assert [str(c["jid"]) for c in conferences] == [ROOM]

        await create_room(phone, nick="alice")
        muc_ping = phone.plugin["xep_0410"]
        assert await muc_ping.send_self_ping(f"{ROOM}/alice", timeout=5) == PingStatus.JOINED
        assert await bob.plugin["xep_0410"].send_self_ping(f"{ROOM}/alice", timeout=5) == PingStatus.DISCONNECTED

        invited = wait_for(bob, "groupchat_direct_invite")
        phone.plugin["xep_0249"].send_invitation("bob@localhost", ROOM, reason="join us")
        assert str((await invited)["groupchat_invite"]["jid"]) == ROOM
        await close(phone, laptop, bob)

    asyncio.run(run())


def test_xmpp_client_joins_and_talks_in_a_room(martlet_server):
    # @xmpp/client (no MUC plugin: the stanzas XEP-0045 defines, as a web client sends
    # them) joins a room a slixmpp user created and talks with her.
    import os
    import subprocess
    from test_other_clients import JS_DIR
    server = martlet_server(users=USERS)
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=server.ca)

    async def run():
        alice = await muc_client(server, "alice")
        await create_room(alice)
        joined = wait_for(alice, f"muc::{ROOM}::got_online", lambda p: p["muc"]["nick"] == "bob-js", timeout=20)
        heard = wait_for(alice, "groupchat_message", lambda m: m["body"] == "hello from js", timeout=20)
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "muc.mjs"), str(server.port), "bob", PASSWORD, ROOM, "bob-js", "hello from js",
            cwd=JS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        await joined
        msg = await heard
        assert str(msg["from"]) == f"{ROOM}/bob-js"
        alice.send_message(mto=ROOM, mbody="hello back", mtype="groupchat")
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert '"body":"hello back"' in out.decode() and f'"from":"{ROOM}/alice"' in out.decode()
        await close(alice)

    asyncio.run(run())


@pytest.mark.skipif(__import__("shutil").which("go-sendxmpp") is None, reason="scripts/test.sh installs go-sendxmpp")
def test_go_sendxmpp_posts_to_a_room(martlet_server):
    # go-sendxmpp's -c: join the room under an alias, send stdin as a groupchat message.
    import subprocess
    server = martlet_server(users=USERS)

    async def run():
        alice = await muc_client(server, "alice")
        await create_room(alice)
        heard = wait_for(alice, "groupchat_message", lambda m: m["body"] == "posted by go-sendxmpp", timeout=20)
        proc = await asyncio.create_subprocess_exec(
            "go-sendxmpp", "-u", "bob@localhost", "-p", PASSWORD, "-j", f"127.0.0.1:{server.port}", "-n",
            "-c", "-a", "gobot", ROOM, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"posted by go-sendxmpp"), 20)
        assert proc.returncode == 0, err.decode()
        msg = await heard
        assert str(msg["from"]) == f"{ROOM}/gobot"
        await close(alice)

    asyncio.run(run())


def test_room_bounds_creation_rate_and_a_flood_loses_nothing_unanswered(martlet_server):
    # [muc] rooms_created_per_user_per_hour and room_mailbox_messages_max, over raw sockets:
    # a second room in the hour is refused <resource-constraint/>; 300 groupchat messages
    # pipelined into a room with a 4-stanza mailbox are each either broadcast or answered
    # with <resource-constraint/>, and the server still serves everyone.
    from rawxmpp import Raw
    from served_probe import assert_every_core_serves
    server = martlet_server(users=USERS, muc={"rooms_created_per_user_per_hour": 1, "room_mailbox_messages_max": 4})
    alice = Raw(server.port)
    alice.login(server.ca, "alice", PASSWORD, resource="r")
    alice.buf = b""
    join = "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    alice.send(join.format(room=ROOM))
    assert "code='201'" in alice.read_until(b"<subject")
    submit = ("<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
              "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
    alice.send(submit.format(room=ROOM))
    alice.read_until(b"id='cfg'")
    alice.buf = b""
    alice.send(join.format(room="second@conference.localhost"))
    refused = alice.read_until(b"</presence>")
    assert "type='error'" in refused and "resource-constraint" in refused, refused

    alice.buf = b""
    total = 300
    alice.send("".join(f"<message to='{ROOM}' type='groupchat' id='m{i}'><body>flood {i}</body></message>" for i in range(total)))
    deadline = __import__("time").time() + 20
    while __import__("time").time() < deadline:
        heads = re.findall(r"<message [^>]*>", alice.buf.decode(errors="replace"))
        echoed = sum(1 for h in heads if "type='groupchat'" in h and f"from='{ROOM}/alice'" in h)
        refused = sum(1 for h in heads if "type='error'" in h)
        if echoed + refused >= total:
            break
        try:
            alice.read_until(b"\x00", timeout=0.3)
        except TimeoutError:
            pass
    assert echoed + refused == total, (echoed, refused)
    assert echoed > 0
    assert_every_core_serves(server)


def test_a_dormant_occupant_gets_a_push_for_a_room_message(martlet_server):
    # The room sends its copies to the occupants' sessions directly; a session whose client
    # is dormant (XEP-0352 inactive, or hibernating under XEP-0198) tells its UserChannel,
    # which pushes (XEP-0357) as it does for a chat that reaches only dormant clients.
    from test_push import app_server, next_push, no_push, push_iq
    from test_stream_management import lose_connection
    server = martlet_server(users=("alice", "bob", "app"), stream_management={"resume_timeout_secs": 30})

    async def run():
        app = await app_server(server)
        bob = await muc_client(server, "bob")
        phone = await login(server, "alice", resource="phone", plugins=("xep_0045", "xep_0004", "xep_0198"))
        await create_room(bob, nick="bob")
        await phone.plugin["xep_0045"].join_muc_wait(ROOM, "alice", timeout=10)
        await push_iq(phone, "enable")
        phone.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        bob.send_message(mto=ROOM, mbody="one", mtype="groupchat")
        assert (await next_push(app))[:2] == ("alice@localhost", "alice-phone")
        phone.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        bob.send_message(mto=ROOM, mbody="two", mtype="groupchat")
        await no_push(app)
        await lose_connection(phone, server, server.metric_sum("martlet_connections"))
        bob.send_message(mto=ROOM, mbody="three", mtype="groupchat")
        assert (await next_push(app))[:2] == ("alice@localhost", "alice-phone")
        await close(app, bob)

    asyncio.run(run())


def test_a_resumed_occupant_gets_the_rooms_copies_at_its_new_session(martlet_server):
    # XEP-0198: a resumed stream is a new session at a new address. It tells its rooms
    # (RoomMsg::Rejoin), so their copies go there at once, not to the old address and
    # back through the UserChannel (which would count as rerouted).
    from test_stream_management import lose_connection, resume
    server = martlet_server(users=("alice", "bob"), stream_management={"resume_timeout_secs": 30})

    async def run():
        bob = await muc_client(server, "bob")
        alice = await login(server, "alice", plugins=("xep_0045", "xep_0004", "xep_0198"))
        await create_room(bob, nick="bob")
        await alice.plugin["xep_0045"].join_muc_wait(ROOM, "alice", timeout=10)
        await lose_connection(alice, server, server.metric_sum("martlet_connections"))
        await resume(alice, server)
        await asyncio.sleep(0.2)
        rerouted = server.metric_sum("martlet_undelivered_rerouted_total")
        for i in range(3):
            got = wait_for(alice, "groupchat_message", lambda m, i=i: m["body"] == f"after {i}")
            bob.send_message(mto=ROOM, mbody=f"after {i}", mtype="groupchat")
            await got
        assert server.metric_sum("martlet_undelivered_rerouted_total") == rerouted
        await close(alice, bob)

    asyncio.run(run())
