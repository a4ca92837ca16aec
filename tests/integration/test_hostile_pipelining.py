"""A client that pipelines requests to its own account without waiting for answers
(issue 9, item 5): each asks the user's actor for a storage write, which is slower than
reading them, so without a bound they would pile up in the actor's mailbox. The session
has `session_inflight_requests_max` credits; out of them it stops reading its socket, and
the client is slowed down by TCP instead of growing the server's memory. Every request
is still answered, once."""
import select
import threading
import time

from conftest import PASSWORD
from rawxmpp import Raw

REQUESTS = 3000
NAME_BYTES = 8000  # each request carries this much, so a queue of them shows in RSS


def plain_login(port, user):
    raw = Raw(port)
    raw.open()
    assert "<success" in raw.auth_plain(user, PASSWORD)
    raw.buf = b""
    raw.open()
    raw.buf = b""
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    raw.read_until(b"</iq>")
    raw.buf = b""
    return raw


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_pipelined_roster_sets_are_all_answered_without_queueing_them(martlet_server):
    server = martlet_server(c2s={"require_tls": False, "plain_without_tls": True})
    alice = plain_login(server.port, "alice")
    name = "n" * NAME_BYTES
    answered = []

    def read_answers():
        # The socket stays blocking: a timeout set on it would apply to the writer's
        # sendall too, which then gives up whenever the server pauses reading for longer
        # (it does, by design, while out of credit), and the server never sees the rest.
        data, deadline = b"", time.time() + 60
        while data.count(b"id='r") < REQUESTS and time.time() < deadline:
            readable, _, _ = select.select([alice.sock], [], [], 1)
            if not readable:
                continue
            chunk = alice.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        answered.append(data)

    alice.sock.settimeout(30)  # the writer's bound: a server that stops reading for good
    reader = threading.Thread(target=read_answers)
    reader.start()
    rss_before = rss_kb(server.proc.pid)
    rss_peak = rss_before
    sets = "".join(
        f"<iq type='set' id='r{i}'><query xmlns='jabber:iq:roster'>"
        f"<item jid='carol@localhost' name='{name}'/></query></iq>" for i in range(REQUESTS))
    writer = threading.Thread(target=alice.send, args=(sets,))
    writer.start()
    while writer.is_alive() or reader.is_alive():
        rss_peak = max(rss_peak, rss_kb(server.proc.pid))
        time.sleep(0.05)
    data = answered[0]
    assert data.count(b"type='result'") == REQUESTS, data[-300:]
    # With the bound, at most the credits' worth of requests (64 x 8 kB) waits in the
    # server; without it, thousands did (tens of MB).
    grown_mb = (rss_peak - rss_before) / 1024
    assert grown_mb < 12, f"the server grew {grown_mb:.0f} MB while the requests came in"
    assert server.metric_sum("martlet_session_reads_paused_total") > 0
    alice.close()
