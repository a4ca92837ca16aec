"""XEP-0215 External Service Discovery (issue 12): the configured STUN and TURN servers,
TURN with time-limited credentials a coturn with `use-auth-secret` accepts."""
import asyncio
import base64
import hashlib
import hmac
import time
import xml.etree.ElementTree as ET

from clients import close, login

NS = "urn:xmpp:extdisco:2"


def test_turn_credentials_follow_the_coturn_rest_convention(martlet_server):
    server = martlet_server(external_services=[
        {"type": "stun", "host": "stun.example.org", "port": 3478},
        {"type": "turn", "host": "turn.example.org", "port": 3478, "transport": "udp", "secret": "north", "credentials_ttl_secs": 600},
    ])

    async def run():
        alice = await login(server, "alice")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        assert NS in info["disco_info"]["features"]
        iq = alice.make_iq_get(ito="localhost")
        ET.SubElement(iq.xml, f"{{{NS}}}services")
        result = await iq.send(timeout=10)
        services = {s.get("type"): s for s in result.xml.find(f"{{{NS}}}services")}
        assert set(services) == {"stun", "turn"}
        assert services["stun"].get("username") is None
        turn = services["turn"]
        expiry, user = turn.get("username").split(":", 1)
        assert user == "alice@localhost" and 590 <= int(expiry) - time.time() <= 610
        expected = base64.b64encode(hmac.new(b"north", turn.get("username").encode(), hashlib.sha1).digest()).decode()
        assert turn.get("password") == expected

        only_turn = alice.make_iq_get(ito="localhost")
        ET.SubElement(only_turn.xml, f"{{{NS}}}services", {"type": "turn"})
        result = await only_turn.send(timeout=10)
        assert [s.get("type") for s in result.xml.find(f"{{{NS}}}services")] == ["turn"]
        await close(alice)

    asyncio.run(run())


def test_without_services_the_feature_is_not_advertised(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        assert NS not in info["disco_info"]["features"]
        await close(alice)

    asyncio.run(run())
