"""RFC 6121 §3-4: the subscription handshake, presence broadcast and probes, and
unavailable presence when a contact goes away — cleanly or by a dead TCP connection."""
import asyncio

from clients import close, login


def from_bare(jid):
    return lambda p: p["from"].bare == jid


async def subscribe_both_ways(alice, bob):
    a, b = alice.boundjid.bare, bob.boundjid.bare
    alice.send_presence(pto=b, ptype="subscribe")
    await bob.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == a)
    bob.send_presence(pto=a, ptype="subscribed")
    await alice.next_presence(lambda p: p["type"] == "subscribed" and p["from"].bare == b)
    bob.send_presence(pto=a, ptype="subscribe")
    await alice.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == b)
    alice.send_presence(pto=b, ptype="subscribed")
    await bob.next_presence(lambda p: p["type"] == "subscribed" and p["from"].bare == a)


def test_subscription_handshake_then_presence_both_ways(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        # Each side now sees the other available (sent on approval, RFC 6121 §3.1.5).
        await alice.next_presence(lambda p: p["type"] == "available" and p["from"].bare == "bob@localhost")
        await bob.next_presence(lambda p: p["type"] == "available" and p["from"].bare == "alice@localhost")
        await alice.get_roster()  # XEP-0237: may answer "unchanged"; the client keeps its copy
        assert alice.client_roster["bob@localhost"]["subscription"] == "both"
        await close(alice, bob)

        # Later logins learn each other's presence through broadcast and probes.
        alice = await login(server, "alice", resource="again")
        bob = await login(server, "bob", resource="again")
        await alice.next_presence(lambda p: p["type"] == "available" and str(p["from"]) == "bob@localhost/again")
        await bob.next_presence(lambda p: p["type"] == "available" and str(p["from"]) == "alice@localhost/again")
        await close(alice, bob)

    asyncio.run(run())


def test_unavailable_when_tcp_dies(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await alice.next_presence(lambda p: p["type"] == "available" and p["from"].bare == "bob@localhost")
        bob.abort()  # no </stream:stream>: the socket just closes
        gone = await alice.next_presence(lambda p: p["type"] == "unavailable" and p["from"].bare == "bob@localhost")
        assert str(gone["from"]) == "bob@localhost/test"
        await close(alice)

    asyncio.run(run())


def test_no_presence_without_subscription(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        bob.send_presence(pstatus="busy")
        await asyncio.sleep(0.5)
        seen = list(alice.unmatched)
        while not alice.presences.empty():
            seen.append(alice.presences.get_nowait())
        assert not [p for p in seen if p["from"].bare == "bob@localhost"], seen
        await close(alice, bob)

    asyncio.run(run())


def test_roster_set_push_and_remove(martlet_server, storage):
    server = martlet_server(storage=storage)

    async def run():
        alice = await login(server, "alice")
        other = await login(server, "alice", resource="other")
        pushed = asyncio.Event()
        other.add_event_handler("roster_update", lambda _: pushed.set())
        alice.update_roster("carol@localhost", name="Carol", groups=["friends"])
        # RFC 6121 §2.1.6: the other resource, which asked for the roster, gets the push.
        await asyncio.wait_for(pushed.wait(), 5)
        item = other.client_roster["carol@localhost"]
        assert item["name"] == "Carol" and item["groups"] == ["friends"] and item["subscription"] == "none"
        alice.del_roster_item("carol@localhost")
        await asyncio.sleep(0.5)
        await other.get_roster()
        assert "carol@localhost" not in other.client_roster
        await close(alice, other)

    asyncio.run(run())


def test_directed_presence_and_its_unavailable_on_disconnect(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        alice.send_presence(pto="bob@localhost/test", pstatus="just for you")
        got = await bob.next_presence(lambda p: p["from"].bare == "alice@localhost" and p["type"] == "available")
        assert got["status"] == "just for you"
        alice.abort()  # RFC 6121 §4.6.3: the server sends unavailable to directed recipients
        await bob.next_presence(lambda p: p["from"].bare == "alice@localhost" and p["type"] == "unavailable")
        await close(bob)

    asyncio.run(run())


def test_pending_subscription_request_waits_for_login(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        alice.send_presence(pto="bob@localhost", ptype="subscribe")
        await asyncio.sleep(0.5)
        # RFC 6121 §3.1.3: bob was offline; the request is replayed when he comes online.
        bob = await login(server, "bob")
        await bob.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == "alice@localhost")
        # Declining it tells alice, whose roster item is left without a subscription.
        bob.send_presence(pto="alice@localhost", ptype="unsubscribed")
        await alice.next_presence(lambda p: p["type"] == "unsubscribed" and p["from"].bare == "bob@localhost")
        await alice.get_roster()  # XEP-0237: may answer "unchanged"; the client keeps its copy
        assert alice.client_roster["bob@localhost"]["subscription"] == "none"
        await close(alice, bob)

    asyncio.run(run())


def test_unsubscribe_stops_presence(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await alice.next_presence(lambda p: p["type"] == "available" and p["from"].bare == "bob@localhost")
        alice.send_presence(pto="bob@localhost", ptype="unsubscribe")
        # bob's server-side subscription from alice ends: alice sees bob go unavailable.
        await alice.next_presence(lambda p: p["type"] == "unavailable" and p["from"].bare == "bob@localhost")
        await bob.get_roster()  # XEP-0237: may answer "unchanged"; the client keeps its copy
        assert bob.client_roster["alice@localhost"]["subscription"] == "to"
        await close(alice, bob)

    asyncio.run(run())


def test_new_resource_learns_its_siblings_presence(martlet_server):
    server = martlet_server()

    async def run():
        phone = await login(server, "alice", resource="phone")
        laptop = await login(server, "alice", resource="laptop")
        # RFC 6121 §4.2.2: the server sends the new resource the presence of the user's others.
        await laptop.next_presence(lambda p: str(p["from"]) == "alice@localhost/phone" and p["type"] == "available")
        await phone.next_presence(lambda p: str(p["from"]) == "alice@localhost/laptop" and p["type"] == "available")
        await close(phone, laptop)

    asyncio.run(run())


def test_directed_presence_without_broadcast_still_ends_unavailable(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice", presence=False)
        bob = await login(server, "bob")
        alice.send_presence(pto="bob@localhost/test")
        await bob.next_presence(lambda p: p["from"].bare == "alice@localhost" and p["type"] == "available")
        alice.abort()
        await bob.next_presence(lambda p: p["from"].bare == "alice@localhost" and p["type"] == "unavailable")
        await close(bob)

    asyncio.run(run())


def test_roster_versioning(martlet_server):
    """XEP-0237: a client holding the current version gets an empty answer; a push carries
    the new version."""
    import re
    from conftest import PASSWORD
    from rawxmpp import Raw
    server = martlet_server()
    raw = Raw(server.port)
    assert "urn:xmpp:features:rosterver" in raw.authenticate(server.ca, "alice", PASSWORD)
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    raw.read_until(b"</iq>")

    def get(ver):
        raw.buf = b""
        raw.send(f"<iq type='get' id='g'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
        return raw.read_until(b"id='g'", b'id="g"')

    first = get("")
    ver = re.search(r"ver='([^']+)'", first).group(1)
    assert "<query" not in get(ver).split("id='g'")[1]  # current: no roster sent again
    raw.buf = b""
    raw.send("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>")
    push = raw.read_until(b"carol@localhost")
    new_ver = re.search(r"ver='([^']+)'", push).group(1)
    assert new_ver != ver
    assert "carol@localhost" in get(ver) and f"ver='{new_ver}'" in get(ver)
