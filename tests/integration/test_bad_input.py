"""RFC 6120 stream errors for bad input, checked on the wire with a raw socket, and proof
that one bad client does not disturb another client on the same server."""
import asyncio

import pytest

from clients import close, login
from conftest import PASSWORD
from rawxmpp import Raw


def stream_error(text):
    assert "<stream:error>" in text, text
    return text.split("<stream:error><")[1].split(" ")[0]


def test_malformed_xml_is_not_well_formed(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.open()
    raw.send("<message><body>oops</message>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "not-well-formed"
    assert raw.closed_by_server()


@pytest.mark.parametrize("doc", [
    "<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY boom 'x'>]><stream:stream/>",
    "<?xml version='1.0'?><!ENTITY x 'y'>",
])
def test_dtd_and_entities_are_refused(martlet_server, doc):
    server = martlet_server()
    raw = Raw(server.port)
    raw.send(doc)
    assert stream_error(raw.read_until(b"</stream:stream>")) in ("restricted-xml", "not-well-formed")


def test_wrong_stream_namespace(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "invalid-namespace"


def test_wrong_content_namespace(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.open()
    raw.send("<message xmlns='jabber:server' to='bob@localhost'/>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "invalid-namespace"


def test_unknown_host(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    assert stream_error(raw.open(to="example.org")) == "host-unknown"


def test_stanza_before_auth_is_not_authorized(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.open()
    raw.send("<message to='bob@localhost'><body>hi</body></message>")
    assert stream_error(raw.read_until(b"</stream:stream>")) == "not-authorized"


def test_oversized_stanza_closes_only_that_stream(martlet_server):
    server = martlet_server(limits={"stanza_bytes_max": 16384})

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        raw = Raw(server.port)
        raw.login(server.ca, "alice", PASSWORD, resource="raw")
        raw.buf = b""
        raw.send("<message to='bob@localhost'><body>" + "x" * 40000 + "</body></message>")
        assert stream_error(raw.read_until(b"</stream:stream>")) == "policy-violation"
        assert raw.closed_by_server()
        # The core that held the bad stream still serves everyone else.
        alice.send_message(mto="bob@localhost", mbody="still here", mtype="chat")
        assert (await bob.next_message())["body"] == "still here"
        await close(alice, bob)

    asyncio.run(run())


def test_server_made_resource_and_jid_malformed(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    jid = raw.login(server.ca, "alice", PASSWORD)
    assert jid.startswith("alice@localhost/") and len(jid) > len("alice@localhost/")
    raw.buf = b""
    raw.send("<message to='a@b@c' id='m1'><body>x</body></message>")
    reply = raw.read_until(b"</message>")
    assert "type='error'" in reply and "jid-malformed" in reply


def test_plain_not_offered_without_tls(martlet_server):
    server = martlet_server(c2s={"require_tls": False, "plain_without_tls": False})
    features = Raw(server.port).open()
    assert "SCRAM-SHA-256" in features and ">PLAIN<" not in features


def test_auth_before_tls_when_required(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    features = raw.open()
    assert "<required/>" in features and "<mechanisms" not in features
    reply = raw.auth_plain("alice", PASSWORD)
    assert "encryption-required" in reply
