"""Issue 9: hostile XML that cost seconds of a core (deep nesting) or ended the process
(namespace declarations minidom's writer panicked on)."""
import time

from conftest import PASSWORD
from rawxmpp import Raw



def features_wait_secs(server):
    start = time.monotonic()
    other = Raw(server.port)
    assert "features>" in other.open()
    other.close()
    return time.monotonic() - start


def test_deep_stanza_is_refused_before_auth_and_others_are_served(martlet_server):
    server = martlet_server()
    deep = Raw(server.port)
    deep.open()
    deep.send("<a>" * 80_000)
    # Another client on each core (two connections) gets its features promptly.
    assert max(features_wait_secs(server) for _ in range(4)) < 2.0
    assert "<policy-violation" in deep.read_until(b"</stream:stream>")
    assert deep.closed_by_server()


def send_as_alice(server, stanza):
    """Sends `stanza` from a fresh login of alice; returns her connection."""
    alice = Raw(server.port)
    alice.login(server.ca, "alice", PASSWORD, "r")
    alice.send(stanza)
    return alice


def test_namespace_declarations_do_not_end_the_server(martlet_server):
    server = martlet_server()
    bob = Raw(server.port)
    bob.login(server.ca, "bob", PASSWORD, "r")
    for stanza in [
        "<message to='bob@localhost/r' xmlns:xml='http://www.w3.org/XML/1998/namespace'><body>1</body></message>",
        "<message to='bob@localhost/r' xmlns:p='urn:a'><p:x xmlns:p='urn:b'/><body>2</body></message>",
        "<message to='bob@localhost/r' xmlns:tns0='urn:z' tns0:a='1'><x xmlns:q='urn:q'><y q:b='2'/></x><body>3</body></message>",
    ]:
        alice = send_as_alice(server, stanza)
        n = stanza.split("<body>")[1].split("<")[0]
        assert f"<body>{n}</body>" in bob.read_until(f"<body>{n}</body>".encode())
        alice.close()
    for stanza in [
        "<message to='bob@localhost/r' xmlns:p='http://www.w3.org/2000/xmlns/'/>",
        "<message to='bob@localhost/r' xmlns:xml='urn:other'/>",
        "<message to='bob@localhost/r' xmlns:xmlns='urn:x'/>",
    ]:
        alice = send_as_alice(server, stanza)
        assert "<not-well-formed" in alice.read_until(b"</stream:stream>")
        alice.close()
    assert server.proc.poll() is None
    assert max(features_wait_secs(server) for _ in range(4)) < 2.0
