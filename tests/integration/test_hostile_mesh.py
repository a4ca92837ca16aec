"""Hostile input on the cluster mesh port (issue 9, item 11): connections that never finish
the handshake, dripping a byte now and then so that no single read times out. Each
holds a listener thread while it handshakes, so the node must bound how many may be
pending ([cluster] pending_handshakes_max) and for how long (handshake_timeout_ms), and
a real peer must still get in once they are cut off."""
import socket
import threading
import time

from conftest import free_port
from test_cluster import outsider, wait_members

HANDSHAKE_TIMEOUT_MS = 1500
PENDING_MAX = 8
DRIPPERS = 40
DRIP_EVERY_SECS = 0.3
# Slack for a loaded 2-core box: the reaper's shutdown and our noticing it.
SLACK_SECS = 2.5
# A TLS record header announcing 512 bytes of handshake: rustls waits for all of them.
TLS_RECORD_HEAD = bytes([0x16, 0x03, 0x01, 0x02, 0x00])


def threads(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def first_node(martlet_server, storage):
    """A node alone on its mesh port, with this test's handshake limits."""
    port = free_port()
    node = outsider(martlet_server, storage, None, "node0", listen=f"127.0.0.1:{port}",
                    handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS, pending_handshakes_max=PENDING_MAX)
    node.mesh_port = port
    return node


class Dripper:
    """One connection to the mesh port sending a byte every DRIP_EVERY_SECS; records when
    the node closed it."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.opened = time.monotonic()
        self.closed = None
        self.sock.sendall(TLS_RECORD_HEAD[:1])
        self.sent = 1

    def step(self):
        """Sends the next byte; notes the close when the node hung up."""
        if self.closed is not None:
            return
        self.sock.settimeout(0)
        try:
            if self.sock.recv(1) == b"":
                raise ConnectionResetError
        except BlockingIOError:
            pass
        except OSError:
            self.closed = time.monotonic()
            self.sock.close()
            return
        byte = TLS_RECORD_HEAD[self.sent:self.sent + 1] or b"\0"
        try:
            self.sock.sendall(byte)
            self.sent += 1
        except OSError:
            self.closed = time.monotonic()
            self.sock.close()


def test_dripping_strangers_hold_few_threads_briefly_and_a_peer_still_joins(martlet_server, postgres_storage):
    a = first_node(martlet_server, postgres_storage)
    before = threads(a)

    drippers = [Dripper(a.mesh_port) for _ in range(DRIPPERS)]
    most = before
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_MS / 1000 + SLACK_SECS
    while time.monotonic() < deadline and any(d.closed is None for d in drippers):
        for d in drippers:
            d.step()
        most = max(most, threads(a))
        time.sleep(DRIP_EVERY_SECS)
    for d in drippers:
        if d.closed is None:
            d.sock.close()

    open_too_long = [d for d in drippers if d.closed is None]
    assert not open_too_long, f"{len(open_too_long)} of {DRIPPERS} connections still open past the handshake deadline"
    late = [d.closed - d.opened for d in drippers if d.closed - d.opened > HANDSHAKE_TIMEOUT_MS / 1000 + SLACK_SECS]
    assert not late, f"closed after {late} s"
    # One handshake thread per place, plus the reaper; a few spare for the node's own churn.
    assert most - before <= PENDING_MAX + 3, f"threads went from {before} to {most}"
    assert a.metric_sum("martlet_mesh_handshakes_refused_total") >= DRIPPERS - PENDING_MAX
    assert a.metric_sum("martlet_mesh_handshakes_timed_out_total") >= 1

    # The node took no harm: a real peer with the secret joins it.
    b = outsider(martlet_server, postgres_storage, a, "node1")
    both = {"node0": "up", "node1": "up"}
    wait_members(a, both)
    wait_members(b, both)
