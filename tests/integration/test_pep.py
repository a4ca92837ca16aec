"""XEP-0163 PEP and XEP-0084 User Avatar with slixmpp's xep_0060/0163/0084/0115 plugins:
events reach exactly the contacts and own resources whose caps ask for the node (+notify),
a resource coming online gets the last item, items are read as the access model allows,
nodes survive a restart, and each bad request gets its XEP-0060 error."""
import asyncio
import base64
import hashlib
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004.stanza import Form

from clients import close, login
from test_presence import subscribe_both_ways

PUBSUB_ERRORS = "{http://jabber.org/protocol/pubsub#errors}"
METADATA = "urn:xmpp:avatar:metadata"
AVATAR = b"\x89PNG\r\n\x1a\n not really a png, but bytes all the same"
AVATAR_ID = hashlib.sha1(AVATAR).hexdigest()
PEP_PLUGINS = ("xep_0060", "xep_0163", "xep_0084", "xep_0115")


async def pep_client(server, user, resource="pep", notify=(), presence=True):
    """A client whose caps ask for avatar metadata (xep_0084 does) and `notify` nodes;
    every event notification it gets lands in `.events`."""
    client = await login(server, user, resource=resource, presence=False, plugins=PEP_PLUGINS)
    for node in notify:
        client.plugin["xep_0030"].add_feature(node + "+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.events = asyncio.Queue()
    client.add_event_handler("pubsub_publish", client.events.put_nowait)
    client.add_event_handler("pubsub_retract", client.events.put_nowait)
    if presence:
        client.send_presence()
    return client


async def next_event(client, timeout=5):
    msg = await asyncio.wait_for(client.events.get(), timeout)
    items = msg["pubsub_event"]["items"]
    return msg["from"].bare, items["node"], [(i.name, i["id"]) for i in items]


async def no_event(client, wait=0.7):
    await asyncio.sleep(wait)
    assert client.events.empty(), f"unexpected event: {client.events.get_nowait()}"


async def publish_metadata(client):
    info = {"id": AVATAR_ID, "type": "image/png", "bytes": len(AVATAR)}
    await client.plugin["xep_0084"].publish_avatar(AVATAR)
    await client.plugin["xep_0084"].publish_avatar_metadata(info)


def payload(tag="{urn:test:pep}x", text="hi"):
    el = ET.Element(tag)
    el.text = text
    return el


async def error_of(call):
    try:
        await call
    except IqError as e:
        app = [c.tag for c in e.iq["error"].xml if c.tag.startswith(PUBSUB_ERRORS)]
        return e.condition, app[0][len(PUBSUB_ERRORS):] if app else None
    raise AssertionError("the request succeeded")


def test_avatar_reaches_contacts_whose_caps_ask_for_it(martlet_server, storage):
    server = martlet_server(users=("alice", "bob", "carol"), storage=storage)

    async def run():
        alice = await pep_client(server, "alice")
        bob = await pep_client(server, "bob")
        await subscribe_both_ways(alice, bob)
        alice_too = await pep_client(server, "alice", resource="laptop")
        bob_plain = await login(server, "bob", resource="plain")  # no caps: no +notify
        bob_plain.events = asyncio.Queue()
        bob_plain.add_event_handler("pubsub_publish", bob_plain.events.put_nowait)
        carol = await pep_client(server, "carol")  # wants it, but is not a contact

        await publish_metadata(alice)
        for client in (bob, alice, alice_too):
            assert await next_event(client) == ("alice@localhost", METADATA, [("item", AVATAR_ID)])
        await no_event(bob)  # metadata only: nobody asked for the image node
        await no_event(bob_plain, 0)
        await no_event(carol, 0)

        # The contact fetches the image the metadata names (XEP-0084 §4.3).
        got = await bob.plugin["xep_0084"].retrieve_avatar("alice@localhost", AVATAR_ID)
        data = got["pubsub"]["items"]["item"]["avatar_data"]["value"]
        assert data == AVATAR
        with pytest.raises(IqError) as refused:
            await carol.plugin["xep_0084"].retrieve_avatar("alice@localhost", AVATAR_ID)
        assert refused.value.condition == "not-authorized"

        # §4.3.4: a resource coming online with +notify gets the last item; one whose caps
        # change to ask for a node gets that node's.
        late = await pep_client(server, "bob", resource="late")
        assert await next_event(late) == ("alice@localhost", METADATA, [("item", AVATAR_ID)])
        await alice.plugin["xep_0060"].publish(None, "urn:test:pep", id="n1", payload=payload())
        await no_event(bob)
        bob.plugin["xep_0030"].add_feature("urn:test:pep+notify")
        await bob.plugin["xep_0115"].update_caps(broadcast=True)
        assert await next_event(bob) == ("alice@localhost", "urn:test:pep", [("item", "n1")])

        # Retraction with notify='true' is an event too (XEP-0060 §7.2.2.1).
        await alice.plugin["xep_0060"].retract(None, "urn:test:pep", "n1", notify=True)
        assert await next_event(bob) == ("alice@localhost", "urn:test:pep", [("retract", "n1")])
        await close(alice, alice_too, bob, bob_plain, carol, late)

        # The nodes are stored: after a restart the items are still there.
        server.restart()
        bob = await pep_client(server, "bob")
        assert await next_event(bob) == ("alice@localhost", METADATA, [("item", AVATAR_ID)])
        items = await bob.plugin["xep_0060"].get_items("alice@localhost", METADATA)
        assert [i["id"] for i in items["pubsub"]["items"]] == [AVATAR_ID]
        await close(bob)

    asyncio.run(run())


def test_disco_on_a_bare_jid_lists_pep(martlet_server):
    server = martlet_server()

    async def run():
        alice = await pep_client(server, "alice")
        bob = await pep_client(server, "bob")
        for asker in (alice, bob):
            info = (await asker.plugin["xep_0030"].get_info("alice@localhost"))["disco_info"]
            assert ("pubsub", "pep", None, None) in info["identities"]
            assert ("account", "registered", None, None) in info["identities"]
            features = set(info["features"])
            for f in ("publish", "auto-create", "retrieve-items", "retract-items", "last-published",
                      "filtered-notifications", "publish-options", "access-presence"):
                assert f"http://jabber.org/protocol/pubsub#{f}" in features, f
        # The archive is queried by its owner only, so only the owner sees it listed.
        own = (await alice.plugin["xep_0030"].get_info("alice@localhost"))["disco_info"]["features"]
        other = (await bob.plugin["xep_0030"].get_info("alice@localhost"))["disco_info"]["features"]
        assert "urn:xmpp:mam:2" in own and "urn:xmpp:mam:2" not in other
        # The server itself is no PEP service.
        server_info = (await alice.plugin["xep_0030"].get_info("localhost"))["disco_info"]
        assert ("pubsub", "pep", None, None) not in server_info["identities"]
        await close(alice, bob)

    asyncio.run(run())


def options_form(**fields):
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


def test_publish_options_set_access_and_item_count(martlet_server):
    server = martlet_server(users=("alice", "bob", "carol"))

    async def run():
        alice = await pep_client(server, "alice")
        carol = await pep_client(server, "carol")
        pubsub = alice.plugin["xep_0060"]
        # An open node with room for many items (XEP-0223-style multi-item storage).
        for i in range(3):
            await pubsub.publish(None, "urn:test:open", id=f"i{i}", payload=payload(text=str(i)),
                                 options=options_form(access_model="open", max_items="max"))
        items = await carol.plugin["xep_0060"].get_items("alice@localhost", "urn:test:open")
        assert [i["id"] for i in items["pubsub"]["items"]] == ["i0", "i1", "i2"]
        newest = await carol.plugin["xep_0060"].get_items("alice@localhost", "urn:test:open", max_items=1)
        assert [i["id"] for i in newest["pubsub"]["items"]] == ["i2"]
        # Preconditions that the node does not meet fail (XEP-0060 §7.1.5).
        assert await error_of(pubsub.publish(None, "urn:test:open", payload=payload(),
                                             options=options_form(access_model="whitelist"))) == ("conflict", "precondition-not-met")
        # A whitelist node is the owner's alone.
        await pubsub.publish(None, "urn:test:private", payload=payload(), options=options_form(access_model="whitelist"))
        assert await error_of(carol.plugin["xep_0060"].get_items("alice@localhost", "urn:test:private")) == ("not-allowed", "closed-node")
        own = await pubsub.get_items(None, "urn:test:private")
        assert len(own["pubsub"]["items"]) == 1
        # The default node keeps one item.
        await pubsub.publish(None, "urn:test:one", id="a", payload=payload())
        await pubsub.publish(None, "urn:test:one", id="b", payload=payload())
        one = await pubsub.get_items(None, "urn:test:one")
        assert [i["id"] for i in one["pubsub"]["items"]] == ["b"]
        await close(alice, carol)

    asyncio.run(run())


def raw_publish(client, node, item):
    """A publish whose <item/> is given as XML, for the malformed cases."""
    iq = client.make_iq_set()
    iq.append(ET.fromstring(f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>{item}</publish></pubsub>"))
    return iq.send()


def test_bad_pep_requests_get_xep_0060_errors(martlet_server):
    server = martlet_server(limits={"pep_item_bytes_max": 1024, "pep_nodes_max": 2})

    async def run():
        alice = await pep_client(server, "alice")
        bob = await pep_client(server, "bob")
        await subscribe_both_ways(alice, bob)
        pubsub = alice.plugin["xep_0060"]
        assert await error_of(pubsub.get_items(None, "urn:test:none")) == ("item-not-found", None)
        assert await error_of(pubsub.retract(None, "urn:test:none", "x")) == ("item-not-found", None)
        # Only the owner publishes to its PEP service.
        assert await error_of(bob.plugin["xep_0060"].publish("alice@localhost", "urn:test:a", payload=payload())) == ("forbidden", None)
        assert await error_of(bob.plugin["xep_0060"].retract("alice@localhost", "urn:test:a", "x")) == ("forbidden", None)
        # Malformed publishes.
        assert await error_of(raw_publish(alice, "urn:test:a", "")) == ("bad-request", "payload-required")
        assert await error_of(raw_publish(alice, "urn:test:a", "<item id='1'/>")) == ("bad-request", "payload-required")
        two = "<item><x xmlns='urn:t'/></item><item><x xmlns='urn:t'/></item>"
        assert await error_of(raw_publish(alice, "urn:test:a", two)) == ("bad-request", "invalid-payload")
        # Too big.
        assert await error_of(pubsub.publish(None, "urn:test:a", payload=payload(text="z" * 1024))) == ("not-acceptable", "payload-too-big")
        # XEP-0084: an image under an id that is not its SHA-1, metadata that is not metadata.
        avatar = alice.plugin["xep_0084"]
        data = f"<item id='{'0' * 40}'><data xmlns='urn:xmpp:avatar:data'>{base64.b64encode(AVATAR).decode()}</data></item>"
        assert await error_of(raw_publish(alice, "urn:xmpp:avatar:data", data)) == ("bad-request", "invalid-payload")
        bogus = "<item id='x'><metadata xmlns='urn:xmpp:avatar:metadata'><info id='nothex'/></metadata></item>"
        assert await error_of(raw_publish(alice, METADATA, bogus)) == ("bad-request", "invalid-payload")
        # Node limit: two nodes, then no more.
        await avatar.publish_avatar(AVATAR)
        await pubsub.publish(None, "urn:test:a", payload=payload())
        assert await error_of(pubsub.publish(None, "urn:test:b", payload=payload())) == ("resource-constraint", None)
        # Not served: creating nodes explicitly, subscribing.
        assert await error_of(pubsub.create_node(None, "urn:test:c")) == ("feature-not-implemented", "unsupported")
        await close(alice, bob)

    asyncio.run(run())


from test_cluster import cluster  # noqa: E402,F401  (the fixture)


def test_pep_events_cross_cluster_nodes(cluster):
    nodes = cluster(n=2)

    async def run():
        alice = await pep_client(nodes[0], "alice")
        bob = await pep_client(nodes[1], "bob")
        await subscribe_both_ways(alice, bob)
        await publish_metadata(alice)
        assert await next_event(bob) == ("alice@localhost", METADATA, [("item", AVATAR_ID)])
        got = await bob.plugin["xep_0084"].retrieve_avatar("alice@localhost", AVATAR_ID)
        assert got["pubsub"]["items"]["item"]["avatar_data"]["value"] == AVATAR
        for node in nodes:  # a new resource on either node gets the last item
            late = await pep_client(node, "bob", resource=f"late-{node.name}")
            assert await next_event(late) == ("alice@localhost", METADATA, [("item", AVATAR_ID)])
            await close(late)
        await no_event(bob, 0)
        await close(alice, bob)

    asyncio.run(run())
