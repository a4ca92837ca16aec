"""Issue 9: a panic reached by one client's input ends that client's session (or drops the
one message), never the core or the process. Runs the `test-hooks` build, where a marked
stanza makes the chosen actor panic on purpose (src/test_hooks.rs): a stand-in for any bug
a client's input might reach, since the known ones are fixed."""
from conftest import DOMAIN, PASSWORD, TEST_HOOKS_BINARY
from rawxmpp import Raw
from served_probe import assert_every_core_serves


def panic_in(actor):
    return f"<panic xmlns='urn:martlet:test-hooks' in='{actor}'/>"


def login(server, user, resource):
    r = Raw(server.port)
    r.login(server.ca, user, PASSWORD, resource=resource)
    r.buf = b""
    return r


def chat(sender, to, body, extra=""):
    sender.send(f"<message to='{to}' type='chat'><body>{body}</body>{extra}</message>")


def test_a_panicking_session_ends_alone(martlet_server):
    server = martlet_server(users=("alice", "bob", "carol"), binary=TEST_HOOKS_BINARY)
    bob, carol = login(server, "bob", "r"), login(server, "carol", "r")
    alice = login(server, "alice", "r")

    chat(alice, f"bob@{DOMAIN}/r", "boom", panic_in("session"))
    closing = alice.read_until(b"</stream:stream>")
    assert "<internal-server-error" in closing, closing
    assert alice.closed_by_server()

    assert server.proc.poll() is None, "the process ended"
    assert server.metric_sum("martlet_actor_panics_total") == 1
    chat(carol, f"bob@{DOMAIN}/r", "after the panic")
    assert "after the panic" in bob.read_until(b"after the panic")
    assert "boom" not in bob.buf.decode()
    assert_every_core_serves(server)


def test_a_panicking_user_actor_drops_one_message_and_goes_on(martlet_server):
    server = martlet_server(users=("alice", "bob"), binary=TEST_HOOKS_BINARY)
    bob, alice = login(server, "bob", "r"), login(server, "alice", "r")

    chat(alice, f"bob@{DOMAIN}/r", "boom", panic_in("user"))
    chat(alice, f"bob@{DOMAIN}/r", "next one")
    assert "next one" in bob.read_until(b"next one")
    assert "boom" not in bob.buf.decode()

    assert server.proc.poll() is None, "the process ended"
    assert server.metric_sum("martlet_actor_panics_total") == 1
    alice.buf = b""
    alice.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "id='p1'" in alice.read_until(b"id='p1'"), "the sender's session should live on"
    assert_every_core_serves(server)
