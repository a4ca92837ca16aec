"""XEP-0313 Message Archive Management and XEP-0359 stanza ids with slixmpp's xep_0313
plugin, on both storage backends: chats land in both parties' archives, queries filter by
contact and page with RSM, preferences keep a contact out, and the archive survives a
restart."""
import asyncio

from clients import close, login

ARCHIVE_WRITE_SECS = 0.5  # the archive writer commits in batches, behind the message path


async def archive(client, **kwargs):
    """The archived message bodies, oldest first."""
    result = await client.plugin["xep_0313"].retrieve(**kwargs)
    return [r["mam_result"]["forwarded"]["stanza"]["body"] for r in result["mam"]["results"]], result


def test_chats_are_archived_for_both_sides_and_page(martlet_server, storage):
    server = martlet_server(users=("alice", "bob", "carol"), storage=storage)

    async def run():
        alice = await login(server, "alice", plugins=("xep_0313", "xep_0359"))
        bob = await login(server, "bob", plugins=("xep_0313",))
        carol = await login(server, "carol")
        for i in range(5):
            alice.send_message(mto="bob@localhost", mbody=f"a{i}", mtype="chat")
            got = await bob.next_message()
            # XEP-0359: the copy bob receives carries its id in bob's archive.
            assert got["stanza_id"]["by"] == "bob@localhost" and got["stanza_id"]["id"], got
        carol.send_message(mto="alice@localhost", mbody="from carol", mtype="chat")
        await alice.next_message()
        await asyncio.sleep(ARCHIVE_WRITE_SECS)

        bodies, _ = await archive(bob)
        assert bodies == [f"a{i}" for i in range(5)]
        bodies, _ = await archive(alice)
        assert bodies == [f"a{i}" for i in range(5)] + ["from carol"]
        bodies, _ = await archive(alice, with_jid="carol@localhost")
        assert bodies == ["from carol"]

        # RSM: two at a time from the start, then the page after, then the last page.
        bodies, first = await archive(bob, rsm={"max": 2})
        assert bodies == ["a0", "a1"] and first["mam_fin"]["complete"] in ("false", False, "")
        bodies, _ = await archive(bob, rsm={"max": 2, "after": first["mam_fin"]["rsm"]["last"]})
        assert bodies == ["a2", "a3"]
        # From the newest end (RSM <before/>): slixmpp pages backwards, newest first.
        newest = [m["mam_result"]["forwarded"]["stanza"]["body"]
                  async for m in bob.plugin["xep_0313"].iterate(reverse=True, rsm={"max": 2}, total=2)]
        assert sorted(newest) == ["a3", "a4"], newest
        await close(alice, bob, carol)

        server.restart()
        bob = await login(server, "bob", plugins=("xep_0313",))
        bodies, _ = await archive(bob)
        assert bodies == [f"a{i}" for i in range(5)]
        await close(bob)

    asyncio.run(run())


def test_preferences_keep_a_contact_out(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice", plugins=("xep_0313",))
        bob = await login(server, "bob", plugins=("xep_0313",))
        iq = bob.make_iq_set()
        iq.append(prefs_xml("always", never=["alice@localhost"]))
        reply = await iq.send()
        assert "alice@localhost" in str(reply)
        alice.send_message(mto="bob@localhost", mbody="not kept by bob", mtype="chat")
        await bob.next_message()
        await asyncio.sleep(ARCHIVE_WRITE_SECS)
        assert (await archive(bob))[0] == []
        assert (await archive(alice))[0] == ["not kept by bob"]  # alice's preferences are hers
        await close(alice, bob)

    asyncio.run(run())


def prefs_xml(default, never=()):
    import xml.etree.ElementTree as ET
    prefs = ET.Element("{urn:xmpp:mam:2}prefs", default=default)
    ET.SubElement(prefs, "{urn:xmpp:mam:2}always")
    lst = ET.SubElement(prefs, "{urn:xmpp:mam:2}never")
    for j in never:
        ET.SubElement(lst, "{urn:xmpp:mam:2}jid").text = j
    return prefs


def test_bad_queries_get_stanza_errors(martlet_server):
    server = martlet_server()

    async def run():
        from slixmpp.exceptions import IqError
        alice = await login(server, "alice", plugins=("xep_0313",))
        try:
            await archive(alice, rsm={"after": "not-an-id"})
            raise AssertionError("a bad RSM id was accepted")
        except IqError as e:
            assert e.condition == "item-not-found"
        info = await alice.plugin["xep_0030"].get_info(jid="alice@localhost")
        assert "urn:xmpp:mam:2" in info["disco_info"]["features"]
        await close(alice)

    asyncio.run(run())


def test_archive_keeps_the_newest_past_the_cap(martlet_server, storage):
    server = martlet_server(storage=storage, limits={"mam_messages_per_user_max": 3})

    async def run():
        alice = await login(server, "alice", plugins=("xep_0313",))
        bob = await login(server, "bob", plugins=("xep_0313",))
        for i in range(5):
            alice.send_message(mto="bob@localhost", mbody=f"m{i}", mtype="chat")
            await bob.next_message()
        await asyncio.sleep(ARCHIVE_WRITE_SECS)
        # A rolling archive: the oldest went, from each side's archive.
        assert (await archive(bob))[0] == ["m2", "m3", "m4"]
        assert (await archive(alice))[0] == ["m2", "m3", "m4"]
        await close(alice, bob)

        # The count is stored: after a restart one more message still pushes the oldest out.
        server.restart()
        alice = await login(server, "alice", plugins=("xep_0313",))
        bob = await login(server, "bob", plugins=("xep_0313",))
        alice.send_message(mto="bob@localhost", mbody="m5", mtype="chat")
        await bob.next_message()
        await asyncio.sleep(ARCHIVE_WRITE_SECS)
        assert (await archive(bob))[0] == ["m3", "m4", "m5"]
        assert (await archive(alice))[0] == ["m3", "m4", "m5"]
        await close(alice, bob)

    asyncio.run(run())
