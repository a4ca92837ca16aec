"""Per-account data kept by the server: XEP-0054 vCards (set by the owner, read by anyone
through the owner's bare JID) and XEP-0049 private XML (read only by the owner), on both
storage backends and across a restart."""
import asyncio
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from clients import close, login


def test_vcard_set_by_owner_read_by_others(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice", plugins=("xep_0054",))
        bob = await login(server, "bob", plugins=("xep_0054",))
        card = alice.plugin["xep_0054"].make_vcard()
        card["FN"] = "Alice Liddell"
        card["NICKNAME"] = "alice"
        await alice.plugin["xep_0054"].publish_vcard(card)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", local=False)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        # No vCard yet: an empty one, not an error.
        empty = await alice.plugin["xep_0054"].get_vcard("bob@localhost", local=False)
        assert empty["vcard_temp"]["FN"] == ""
        await close(alice, bob)
        server.restart()
        bob = await login(server, "bob", plugins=("xep_0054",))
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", local=False)
        assert got["vcard_temp"]["NICKNAME"] in ("alice", ["alice"])
        await close(bob)

    asyncio.run(run())


def private(client, type_, inner):
    iq = client.make_iq_set() if type_ == "set" else client.make_iq_get()
    query = ET.SubElement(iq.xml, "{jabber:iq:private}query")
    query.append(inner)
    return iq.send()


def test_private_xml_is_the_owners_alone(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice")
        prefs = ET.Element("{exodus:prefs}exodus")
        ET.SubElement(prefs, "{exodus:prefs}defaultnick").text = "Hamlet"
        await private(alice, "set", prefs)
        got = await private(alice, "get", ET.Element("{exodus:prefs}exodus"))
        assert "Hamlet" in str(got)
        # Another namespace is another document: empty.
        other = await private(alice, "get", ET.Element("{other:ns}thing"))
        assert "Hamlet" not in str(other)
        # Nothing of alice's is bob's.
        bob = await login(server, "bob")
        theirs = await private(bob, "get", ET.Element("{exodus:prefs}exodus"))
        assert "Hamlet" not in str(theirs)
        # Reserved namespaces are refused (XEP-0049 §3).
        try:
            await private(alice, "set", ET.Element("{jabber:client}message"))
            raise AssertionError("jabber:client data was stored")
        except IqError as e:
            assert e.condition == "not-acceptable"
        await close(alice, bob)

    asyncio.run(run())


def test_private_xml_cap_refuses_a_new_namespace_not_a_replacement(martlet_server, storage):
    server = martlet_server(storage=storage, limits={"private_xml_docs_max": 2})

    def doc(namespace, text=None):
        el = ET.Element(f"{{{namespace}}}data")
        el.text = text
        return el

    async def stored(client, namespace):
        return str(await private(client, "get", doc(namespace)))

    async def run():
        alice = await login(server, "alice")
        await private(alice, "set", doc("a:ns", "one"))
        await private(alice, "set", doc("b:ns", "two"))
        try:
            await private(alice, "set", doc("c:ns", "three"))
            raise AssertionError("a third namespace was stored past private_xml_docs_max = 2")
        except IqError as e:
            assert (e.condition, e.etype) == ("resource-constraint", "wait")
        assert "three" not in await stored(alice, "c:ns")
        # At the cap, a stored namespace is still replaced.
        await private(alice, "set", doc("a:ns", "one again"))
        assert "one again" in await stored(alice, "a:ns")
        # The cap is alice's: bob has room of his own.
        bob = await login(server, "bob")
        await private(bob, "set", doc("c:ns", "bob's"))
        # Setting an empty element keeps no document, which makes room.
        await private(alice, "set", doc("b:ns"))
        assert "two" not in await stored(alice, "b:ns")
        await private(alice, "set", doc("c:ns", "three"))
        assert "three" in await stored(alice, "c:ns")
        await close(alice, bob)

    asyncio.run(run())
