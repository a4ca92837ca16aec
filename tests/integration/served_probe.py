"""Checks that a server under attack still serves everyone else, on every core.

The abuse tests call `assert_every_core_serves(server)` while (or right after) a hostile
client does its worst. Connections reach the cores through SO_REUSEPORT's hash of the
address pair, so several fresh logins land on every core with near certainty (16 on two
cores all landing on one: 2 in 65,536); each must log in and get a XEP-0199 ping answered
within bounds a healthy server meets even on a busy 2-core machine, and the per-core
session gauge must show that every core took part.
"""
import time

from conftest import DOMAIN, PASSWORD
from rawxmpp import Raw

PROBES = 16
LOGIN_SECS_MAX = 5.0
PING_SECS_MAX = 1.0


def assert_every_core_serves(server, user="probe", probes=PROBES):
    """Logs `probes` fresh sessions of `user` (created if missing) in and pings the server
    from each; fails naming the slowest if any is slower than the bounds above, or if a
    core served none of them."""
    if not getattr(server, "_probe_user", False):
        server.add_user(user)
        server._probe_user = True
    before = _sessions_per_core(server)
    conns, slowest = [], (0.0, 0.0)
    try:
        for i in range(probes):
            r = Raw(server.port, timeout=LOGIN_SECS_MAX)
            start = time.monotonic()
            r.login(server.ca, user, PASSWORD, resource=f"probe{i}-{time.time_ns()}")
            logged_in = time.monotonic()
            r.buf = b""
            r.send(f"<iq type='get' id='probe{i}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
            r.read_until(f"id='probe{i}'".encode(), timeout=PING_SECS_MAX * 2)
            pinged = time.monotonic()
            slowest = max(slowest[0], logged_in - start), max(slowest[1], pinged - logged_in)
            conns.append(r)
        after = _sessions_per_core(server)
        idle_cores = [core for core in after if after[core] - before.get(core, 0) <= 0]
        assert not idle_cores, f"cores {idle_cores} took none of {probes} probe sessions"
        assert slowest[0] <= LOGIN_SECS_MAX, f"a login took {slowest[0]:.2f} s"
        assert slowest[1] <= PING_SECS_MAX, f"a ping took {slowest[1]:.2f} s"
        return slowest
    finally:
        for r in conns:
            r.close()


def _sessions_per_core(server):
    return {core: v for (name, core), v in server.metrics().items() if name == "martlet_sessions"}
