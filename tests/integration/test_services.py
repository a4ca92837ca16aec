"""Server-answered IQs (XEP-0030, XEP-0092, XEP-0199, XEP-0077) and the CLI's config check."""
import asyncio
import ssl
import subprocess

import pytest
import slixmpp

from clients import close, login
from conftest import BINARY, PASSWORD
from rawxmpp import Raw


def test_disco_version_ping(martlet_server):
    server = martlet_server()

    async def run():
        alice = await login(server, "alice")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        features = set(info["disco_info"]["features"])
        assert {"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version", "msgoffline"} <= features
        # Registration is off by default, so it is not advertised.
        assert "jabber:iq:register" not in features
        assert ("server", "im", None, "martlet") in info["disco_info"]["identities"]
        version = await alice.plugin["xep_0092"].get_version("localhost")
        assert version["software_version"]["name"] == "martlet"
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        # A payload nobody serves: service-unavailable (RFC 6120 §8.4).
        iq = alice.make_iq_get(queryxmlns="urn:example:nothing", ito="localhost")
        with pytest.raises(slixmpp.exceptions.IqError) as err:
            await iq.send(timeout=5)
        assert err.value.condition == "service-unavailable"
        await close(alice)

    asyncio.run(run())


def test_server_pings_client_and_client_answers(martlet_server):
    server = martlet_server(limits={"ping_interval_secs": 1, "idle_timeout_secs": 4})

    async def run():
        alice = await login(server, "alice")  # slixmpp answers XEP-0199 pings
        await asyncio.sleep(6)
        assert alice.is_connected()
        await close(alice)

    asyncio.run(run())


def test_in_band_registration(martlet_server):
    server = martlet_server(users=(), registration={"enabled": True})

    async def run():
        client = slixmpp.ClientXMPP("newbie@localhost/x", "pw-new")
        ctx = ssl.create_default_context(cafile=server.ca)
        ctx.check_hostname = False
        client.ssl_context = ctx
        client.enable_direct_tls = False
        client.register_plugin("xep_0077")
        client.plugin["xep_0077"].force_registration = True
        done = asyncio.Event()

        async def register(_):
            resp = client.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = "newbie"
            resp["register"]["password"] = "pw-new"
            await resp.send(timeout=5)
            done.set()

        client.add_event_handler("register", register)
        client.connect("127.0.0.1", server.port)
        await asyncio.wait_for(done.wait(), 10)
        client.disconnect()
        newbie = await login(server, "newbie", password="pw-new")
        await close(newbie)

    asyncio.run(run())
    server.stop()
    assert "newbie@localhost" in server.cli("user", "list").stdout.split()


def test_check_config_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nstanza_bytes = 5\n")
    out = subprocess.run([str(BINARY), "check-config", "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "limits.stanza_bytes" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text('domain = "example.org"\n')
    out = subprocess.run([str(BINARY), "check-config", "--config", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_user_commands_while_the_server_runs(martlet_server, storage):
    server = martlet_server(users=("alice",), storage=storage)
    added = server.cli("user", "add", "carol", stdin="carol-pw\n")  # password from stdin
    assert added.stdout.strip() == "added carol@localhost"
    assert "carol@localhost" in server.cli("user", "list").stdout.split()

    async def run():
        carol = await login(server, "carol", password="carol-pw")
        await close(carol)

    asyncio.run(run())
    server.cli("user", "del", "carol@localhost")
    assert "carol@localhost" not in server.cli("user", "list").stdout.split()


def test_server_caps_hash_its_disco_info(martlet_server):
    """XEP-0115: the <c/> stream feature's ver is slixmpp's own hash of what disco#info
    on that node answers."""
    import re
    server = martlet_server()
    features = Raw(server.port).authenticate(server.ca, "alice", PASSWORD)
    c = re.search(r"<c [^>]*xmlns='http://jabber.org/protocol/caps'[^>]*>", features).group(0)
    node, ver = re.search(r"node='([^']+)'", c).group(1), re.search(r"ver='([^']+)'", c).group(1)

    async def run():
        alice = await login(server, "alice", plugins=("xep_0115",))
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", node=f"{node}#{ver}")
        assert alice.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1") == ver
        await close(alice)

    asyncio.run(run())
