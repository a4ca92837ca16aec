"""Hostile delivery (issue 9): clients that stop reading must not make the server lose what
it accepted, nor hold its shutdown. Every message is accounted for: acknowledged by the
client (XEP-0198), stored offline, or bounced to its sender with an error."""
import re
import socket
import threading
import time

from conftest import PASSWORD
from rawxmpp import Raw

PAD = "x" * 1000


def slow_reader(port):
    """A raw client whose socket takes few bytes: a receive window of a few kilobytes, so
    the server's writes to it stall as soon as it stops reading."""
    raw = Raw.__new__(Raw)
    raw.sock = socket.socket()
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sock.settimeout(10)
    raw.sock.connect(("127.0.0.1", port))
    raw.buf = b""
    return raw


def login_with_sm(raw, server, resource):
    """Logs in, enables XEP-0198 (no resumption) and sends initial presence."""
    raw.login(server.ca, "alice", PASSWORD, resource=resource)
    raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
    raw.read_until(b"<enabled")
    raw.buf = b""
    raw.send("<presence/>")
    raw.read_until(b"<presence")


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Collector(threading.Thread):
    """Reads a raw client's socket until it closes, keeping every byte."""

    def __init__(self, raw):
        super().__init__(daemon=True)
        self.raw, self.data, self.lock = raw, b"", threading.Lock()

    def run(self):
        self.raw.sock.settimeout(None)
        while True:
            try:
                chunk = self.raw.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.data += chunk

    def text(self):
        with self.lock:
            return self.data.decode(errors="replace")


def read_while(raw, more, timeout):
    """Reads `raw` until `more(text)` is false, the server closes, or `timeout` passes."""
    deadline = time.time() + timeout
    while more(raw.buf.decode(errors="replace")) and time.time() < deadline:
        raw.sock.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = raw.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        if not chunk:
            break
        raw.buf += chunk
    return raw.buf.decode(errors="replace")


def error_ids(text):
    """Ids of the message errors in `text` (the server answers with the sender's id)."""
    ids = set()
    for tag in re.findall(r"<message [^>]*>", text):
        if re.search(r"type=['\"]error['\"]", tag):
            m = re.search(r"\bid=['\"]([^'\"]+)['\"]", tag)
            if m:
                ids.add(m.group(1))
    return ids


def bodies(text, prefix):
    return re.findall(r"<body>(" + prefix + r"\d+)" + PAD_RE, text)


PAD_RE = "x*</body>"


def test_full_session_mailbox_loses_nothing(martlet_server):
    """Issue 9 item 6: 3,000 chats to a client that stopped reading. Its queue overflows;
    what it could not take is re-routed (here: offline storage, then <resource-constraint/>
    once that is full), so acknowledged + stored + bounced = 3,000 exactly."""
    total = 3000
    server = martlet_server(limits={"session_mailbox_stanzas_max": 64, "send_stall_secs": 2})
    alice = slow_reader(server.port)
    login_with_sm(alice, server, "stalled")
    bob = Raw(server.port)
    bob.login(server.ca, "bob", PASSWORD, resource="sender")
    bob.buf = b""
    reader = Collector(bob)
    reader.start()
    for i in range(total):
        bob.send(f"<message to='alice@localhost/stalled' type='chat' id='m{i}'><body>m{i}{PAD}</body></message>")

    def settled():
        return (server.metric_sum("martlet_sessions") == 1
                and server.metric_sum("martlet_offline_stored_total") + len(error_ids(reader.text())) >= total)
    try:
        wait_for(settled, 60, "every message stored or bounced")
    finally:
        bounced = error_ids(reader.text())
        stored = server.metric_sum("martlet_offline_stored_total")
        print(f"stored offline {stored}, bounced {len(bounced)}, "
              f"mailbox overflows {server.metric_sum('martlet_session_mailbox_full_drops_total')}, "
              f"rerouted {server.metric_sum('martlet_undelivered_rerouted_total')}")
    assert server.metric_sum("martlet_session_mailbox_full_drops_total") >= 1, "the stalled queue never overflowed"
    assert server.metric_sum("martlet_stanzas_bounced_total") == len(bounced)
    # The stalled client acknowledged nothing; what is stored is exactly what was not bounced.
    again = Raw(server.port)
    again.login(server.ca, "alice", PASSWORD, resource="back")
    again.send("<presence/>")
    text = read_while(again, lambda t: len(bodies(t, "m")) < stored, 30)
    # Anything more (a copy) would come right behind.
    text = read_while(again, lambda t: True, 1)
    got = bodies(text, "m")
    ids = got
    assert len(ids) == len(set(ids)), "an offline message arrived twice"
    offline = set(ids)
    assert offline.isdisjoint(bounced), "a message was both stored and bounced"
    assert offline | bounced == {f"m{i}" for i in range(total)}, \
        f"{total - len(offline | bounced)} of {total} messages lost"


def test_shutdown_stores_unacked_of_a_client_that_does_not_read(martlet_server):
    """Issue 9 item 7: SIGTERM while a XEP-0198 client that does not read holds 100
    unacknowledged messages (the server's write to it stalled): the process exits within
    its 3 s grace period, and all 100 are in offline storage after the restart, once each."""
    count = 100
    big = "y" * 8000
    server = martlet_server()
    alice = slow_reader(server.port)
    login_with_sm(alice, server, "phone")
    bob = Raw(server.port)
    bob.login(server.ca, "bob", PASSWORD)
    routed_before = server.metric_sum("martlet_routed_stanzas_total")
    for i in range(count):
        bob.send(f"<message to='alice@localhost/phone' type='chat' id='s{i}'><body>s{i}:{big}</body></message>")
    wait_for(lambda: server.metric_sum("martlet_routed_stanzas_total") - routed_before >= count, 30,
             "every message routed to the stalled session")
    started = time.time()
    server.proc.terminate()
    server.proc.wait(timeout=15)
    took = time.time() - started
    server.proc = None
    assert took < 4.5, f"shutdown took {took:.1f} s"
    alice.close()
    bob.close()
    server.start()
    again = Raw(server.port)
    again.login(server.ca, "alice", PASSWORD, resource="laptop")
    again.send("<presence/>")
    text = read_while(again, lambda t: len(set(re.findall(r"<body>(s\d+):", t))) < count, 20)
    text = read_while(again, lambda t: True, 1)
    seen = set(re.findall(r"<body>(s\d+):", text))
    assert seen == {f"s{i}" for i in range(count)}, f"{count - len(seen)} of {count} lost at shutdown"
    found = re.findall(r"<body>(s\d+):", text)
    assert len(found) == count, "a message arrived twice"
