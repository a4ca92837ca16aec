"""Protocol details real clients hit (profanity, poezio, mcabber): stanza error types as
RFC 6120 §8.3.3 and the XEPs give them, XEP-0334 hints and chat states in offline storage
and the archive, XEP-0012 Last Activity, and MAM queries that put RSM outside `<set/>`."""
import asyncio
import re
import time

from slixmpp.exceptions import IqError

from clients import close, login
from conftest import PASSWORD
from rawxmpp import Raw
from test_presence import subscribe_both_ways

DEADLINE_SECS = 10
HINTS = "urn:xmpp:hints"
CHATSTATES = "http://jabber.org/protocol/chatstates"
RECEIPT = "<received xmlns='urn:xmpp:receipts' id='r1'/>"


def raw_login(server, user, resource):
    raw = Raw(server.port)
    raw.login(server.ca, user, PASSWORD, resource)
    raw.buf = b""
    return raw


def iq_reply(raw, iq_id):
    """The IQ with id `iq_id` the server sent (read until it comes)."""
    pattern = re.compile(r"<iq\b[^>]*\bid=['\"]%s['\"][^>]*?(?:/>|>.*?</iq>)" % re.escape(iq_id), re.S)
    deadline = time.time() + DEADLINE_SECS
    while not (m := pattern.search(raw.buf.decode(errors="replace"))):
        left = deadline - time.time()
        assert left > 0, f"no reply to {iq_id}: {raw.buf[-800:]!r}"
        raw.sock.settimeout(left)
        chunk = raw.sock.recv(65536)
        assert chunk, f"connection closed before the reply to {iq_id}"
        raw.buf += chunk
    return m.group(0)


def error_of(reply):
    """(type, condition) of an error reply."""
    m = re.search(r"<error[^>]*type=['\"](\w+)['\"][^>]*>\s*<([\w-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-stanzas", reply)
    assert m, reply
    return m.group(1), m.group(2)


def wait_for(condition, what):
    deadline = time.time() + DEADLINE_SECS
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- error types (RFC 6120 §8.3.3) ------------------------------------------------------

def test_pep_items_of_a_missing_node_is_item_not_found_cancel(martlet_server):
    """profanity's first OMEMO start asks for its device list before it exists: XEP-0060
    §6.5.9.11 answers item-not-found with type cancel, so the client publishes instead of
    retrying the request (what type modify asks of it)."""
    server = martlet_server()
    alice = raw_login(server, "alice", "phone")
    bob = raw_login(server, "bob", "pc")
    items = ("<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
             "<items node='eu.siacs.conversations.axolotl.devicelist'/></pubsub>")
    alice.send(f"<iq type='get' id='own' to='alice@localhost'>{items}</iq>")
    assert error_of(iq_reply(alice, "own")) == ("cancel", "item-not-found")
    # Another user's read goes through the owner's UserChannel: the same answer.
    bob.send(f"<iq type='get' id='other' to='alice@localhost'>{items}</iq>")
    assert error_of(iq_reply(bob, "other")) == ("cancel", "item-not-found")
    alice.close()
    bob.close()


# ---- XEP-0334 hints, XEP-0085 chat states: offline storage and the archive ---------------

# (id, children, stored offline, archived)
HINT_CASES = [
    ("plain", "<body>plain</body>", True, True),
    ("composing", f"<composing xmlns='{CHATSTATES}'/>", False, False),
    ("composing-store", f"<composing xmlns='{CHATSTATES}'/><store xmlns='{HINTS}'/>", False, False),
    ("no-store", f"<body>secret</body><no-store xmlns='{HINTS}'/>", False, False),
    ("no-permanent-store", f"<body>ephemeral</body><no-permanent-store xmlns='{HINTS}'/>", True, False),
    ("receipt", RECEIPT, False, False),
    ("receipt-store", f"{RECEIPT}<store xmlns='{HINTS}'/>", True, True),
    ("end", "<body>end</body>", True, True),
]


def message_ids(xml):
    """The ids of the messages in `xml` (forwarded ones included)."""
    return set(re.findall(r"<message\b[^>]*\bid='(m-[\w-]+)'", xml))


def send_hint_cases(server):
    """alice sends every case to bob, who is offline; returns alice's connection once each
    message was stored or let go."""
    alice = raw_login(server, "alice", "phone")
    for mid, children, _, _ in HINT_CASES:
        alice.send(f"<message type='chat' id='m-{mid}' to='bob@localhost'>{children}</message>")
    handled = lambda: (server.metric_sum("martlet_offline_stored_total")
                       + server.metric_sum("martlet_offline_not_kept_total"))
    wait_for(lambda: handled() == len(HINT_CASES), "every message to be stored or let go")
    return alice


def test_hints_and_chat_states_decide_what_is_stored_offline(martlet_server):
    server = martlet_server()
    alice = send_hint_cases(server)
    # XEP-0160: what bob's initial presence brings, in order, up to 'end'.
    bob = raw_login(server, "bob", "pc")
    bob.send("<presence/>")
    delivered = message_ids(bob.read_until(b"id='m-end'", timeout=DEADLINE_SECS))
    expected = {f"m-{mid}" for mid, _, offline, _ in HINT_CASES if offline}
    assert delivered == expected
    assert server.metric_sum("martlet_offline_not_kept_total") == len(HINT_CASES) - len(expected)
    alice.close()
    bob.close()


def test_hints_and_chat_states_decide_what_is_archived(martlet_server):
    server = martlet_server()
    alice = send_hint_cases(server)
    bob = raw_login(server, "bob", "pc")
    expected = {f"m-{mid}" for mid, _, _, archived in HINT_CASES if archived}
    # XEP-0313, in both parties' archives, written behind the message path: asked again
    # until the last message is in.
    for who in (bob, alice):
        deadline = time.time() + DEADLINE_SECS
        while True:
            who.buf = b""
            who.send("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>")
            archived = message_ids(who.read_until(b"</fin>", timeout=DEADLINE_SECS))
            if "m-end" in archived or time.time() > deadline:
                break
            time.sleep(0.1)
        assert archived == expected
    alice.close()
    bob.close()


# ---- XEP-0313 queries with RSM outside <set/> ----------------------------------------------

def test_mam_rsm_outside_set_is_bad_request(martlet_server):
    """profanity puts <max/> and <before/> next to the form: without <set/> they are not
    RSM, and serving page one again would loop a client that pages backwards forever."""
    server = martlet_server()
    alice = raw_login(server, "alice", "phone")
    alice.send("<iq type='set' id='bad'><query xmlns='urn:xmpp:mam:2'><max>10</max><before/></query></iq>")
    assert error_of(iq_reply(alice, "bad")) == ("modify", "bad-request")
    alice.send("<iq type='set' id='good'><query xmlns='urn:xmpp:mam:2'>"
               "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set></query></iq>")
    assert "type='result'" in iq_reply(alice, "good")
    alice.close()


# ---- XEP-0012 Last Activity --------------------------------------------------------------

async def last(client, jid):
    reply = await client.plugin["xep_0012"].get_last_activity(jid)
    return reply["from"], reply["last_activity"]["seconds"], reply["last_activity"]["status"]


async def last_error(client, jid):
    try:
        await client.plugin["xep_0012"].get_last_activity(jid)
    except IqError as e:
        return e.iq["error"]["type"], e.iq["error"]["condition"]
    raise AssertionError("expected an error")


def test_last_activity(martlet_server, storage):
    server = martlet_server(users=("alice", "bob", "carol"), storage=storage)
    plugins = ("xep_0012",)

    async def before_restart():
        alice = await login(server, "alice", plugins=plugins)
        bob = await login(server, "bob", resource="desk", plugins=plugins)
        carol = await login(server, "carol", plugins=plugins)
        # Advertised where it is served: the server and accounts' bare JIDs.
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        assert "jabber:iq:last" in info["disco_info"]["features"]
        info = await alice.plugin["xep_0030"].get_info(jid="bob@localhost")
        assert "jabber:iq:last" in info["disco_info"]["features"]
        # §5: the server answers its uptime.
        frm, seconds, _ = await last(alice, "localhost")
        assert frm == "localhost" and 0 <= seconds < 600

        await subscribe_both_ways(alice, bob)
        # §3: an online contact answers 0; one without a subscription is refused.
        assert await last(alice, "bob@localhost") == ("bob@localhost", 0, None)
        assert await last_error(carol, "bob@localhost") == ("auth", "forbidden")
        # §4: a full JID is the client's to answer, not the server's.
        bob.plugin["xep_0012"].set_last_activity(jid=bob.boundjid, seconds=42, status="idle")
        frm, seconds, status = await last(alice, "bob@localhost/desk")
        assert (frm, status) == ("bob@localhost/desk", "idle") and seconds >= 42

        bob.send_presence(ptype="unavailable", pstatus="Heading Home")
        await alice.next_presence(lambda p: p["type"] == "unavailable" and p["from"].bare == "bob@localhost")
        bob.disconnect()
        frm, seconds, status = await last(alice, "bob@localhost")
        assert (frm, status) == ("bob@localhost", "Heading Home") and 1 <= seconds < 60
        assert await last_error(carol, "bob@localhost") == ("auth", "forbidden")
        await close(alice, carol)

    async def after_restart():
        alice = await login(server, "alice", plugins=plugins)
        frm, seconds, status = await last(alice, "bob@localhost")
        assert (frm, status) == ("bob@localhost", "Heading Home") and 0 <= seconds < 120
        await close(alice)

    asyncio.run(before_restart())
    server.restart()
    asyncio.run(after_restart())
