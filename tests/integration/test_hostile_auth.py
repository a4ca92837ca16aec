"""Hostile authentication and account attempts (issue 9): SCRAM probes for accounts that do not
exist, password-hashing floods, clients hanging up in the middle of SASL, sessions of deleted
accounts or changed passwords, registration floods. Raw sockets over plain TCP where TLS adds
nothing to what is tested (`require_tls = false`), so the flood is the server's work, not ours."""
import base64
import re
import socket
import statistics
import struct
import threading
import time

from conftest import PASSWORD
from rawxmpp import Raw

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
# Plain TCP with PLAIN allowed: these tests are about the server's work, not about TLS.
NO_TLS = {"require_tls": False, "plain_without_tls": True}


def scram_first(user, nonce="fyko+d2lbbFgONRv9qkxdawL"):
    first = base64.b64encode(f"n,,n={user},r={nonce}".encode()).decode()
    return f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>"


def server_first(raw, user):
    """Salt (bytes) and iteration count the server offers `user` in its SCRAM challenge."""
    raw.buf = b""
    raw.send(scram_first(user))
    reply = raw.read_until(b"</challenge>", b"</failure>", b"</stream:stream>")
    challenge = re.search(r"<challenge[^>]*>([^<]+)</challenge>", reply)
    assert challenge, reply
    fields = dict(f.split("=", 1) for f in base64.b64decode(challenge.group(1)).decode().split(","))
    return base64.b64decode(fields["s"]), int(fields["i"])


def scram_offer(server, user):
    raw = Raw(server.port)
    raw.open()
    try:
        return server_first(raw, user)
    finally:
        raw.close()


def wait_for(condition, what, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_scram_for_an_unknown_user_offers_the_same_salt_as_a_user_would(martlet_server):
    # Iterations other than scram-rs's built-in 4096, so a made-up offer shows where it comes from.
    server = martlet_server(c2s=NO_TLS, storage={"scram_iterations": 5000})
    alice_salt, alice_iterations = scram_offer(server, "alice")
    first = scram_offer(server, "nobody")
    assert scram_offer(server, "nobody") == first, "a non-user's salt changes between attempts"
    salt, iterations = first
    assert (len(salt), iterations) == (len(alice_salt), alice_iterations)
    assert scram_offer(server, "somebody-else")[0] != salt
    server.restart()
    assert scram_offer(server, "nobody") == first, "the made-up salt changed with a restart"


def test_scram_flood_for_unknown_users_does_not_stall_the_core(martlet_server):
    # One core: the flood and the victim share it.
    server = martlet_server(**{"": {"cores": 1}}, c2s=NO_TLS,
                            limits={"auth_failures_max": 100000, "auth_failures_per_ip_per_minute": 1000000})
    victim = Raw(server.port)
    victim.open()
    assert "<success" in victim.auth_plain("alice", PASSWORD)
    victim.buf = b""
    victim.open()
    victim.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    victim.read_until(b"</iq>")

    def ping_ms():
        victim.buf = b""
        start = time.perf_counter()
        victim.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        victim.read_until(b"type='result'")
        return (time.perf_counter() - start) * 1000

    baseline = statistics.median(ping_ms() for _ in range(20))
    flooders, attempts = 40, 100
    answered = []

    def flood(i):
        raw = Raw(server.port, timeout=120)
        raw.open()
        raw.buf = b""
        # Pipelined: the server works through them back to back.
        raw.send((scram_first(f"nobody{i}") + f"<abort xmlns='{SASL}'/>") * attempts)
        while raw.buf.count(b"</failure>") < attempts:
            chunk = raw.sock.recv(65536)
            if not chunk:
                break
            raw.buf += chunk
        answered.append(raw.buf.count(b"</failure>"))
        raw.close()

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(flooders)]
    for t in threads:
        t.start()
    wait_for(lambda: server.metric_sum("martlet_auth_failures_total") >= flooders, "the flood to start")
    during = [ping_ms() for _ in range(20)]
    flood_running = server.metric_sum("martlet_auth_failures_total") < flooders * attempts
    for t in threads:
        t.join(180)
    assert answered == [attempts] * flooders
    print(f"ping median {baseline:.1f} ms idle, {statistics.median(during):.1f} ms during the flood "
          f"(max {max(during):.1f} ms; flood still running after: {flood_running})")
    assert statistics.median(during) < baseline + 30, during


def test_hang_ups_in_the_middle_of_sasl_count_as_failures(martlet_server):
    server = martlet_server(**{"": {"cores": 1}}, c2s=NO_TLS, limits={"auth_failures_per_ip_per_minute": 3})
    for _ in range(3):
        raw = Raw(server.port)
        raw.open()
        server_first(raw, "alice")
        raw.close()  # gone before answering the challenge
    wait_for(lambda: server.metric_sum("martlet_auth_failures_total") >= 3, "the hang-ups to be counted")
    raw = Raw(server.port)
    raw.open()
    raw.buf = b""
    raw.send(scram_first("alice"))
    assert "<policy-violation" in raw.read_until(b"</stream:stream>")


def test_a_saturated_password_hashing_pool_answers_temporary_auth_failure(martlet_server):
    # One slow PBKDF2 thread with room for one more job: the rest of a burst is told to come back.
    server = martlet_server(c2s=NO_TLS, storage={"scram_iterations": 400000, "password_hash_threads": 1,
                                                 "password_hash_queue_jobs_max": 1},
                            limits={"auth_failures_max": 10, "auth_failures_per_ip_per_minute": 1000})
    conns = [Raw(server.port, timeout=60) for _ in range(6)]
    for raw in conns:
        raw.open()
        raw.buf = b""
    token = base64.b64encode(b"\0alice\0wrong-password").decode()
    for raw in conns:
        raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    replies = [raw.read_until(b"</failure>", b"<success", timeout=60) for raw in conns]
    busy = [r for r in replies if "temporary-auth-failure" in r]
    assert busy and len(busy) < len(replies), replies
    assert all("temporary-auth-failure" in r or "not-authorized" in r for r in replies), replies
    assert server.metric_sum("martlet_password_hash_busy_total") == len(busy)
    raw = conns[0]  # once the burst has passed, the right password works
    assert "<success" in raw.auth_plain("alice", PASSWORD)


# ---- sessions of deleted accounts and changed passwords (RFC 6120 §4.9.3.12, §4.9.3.16) ----

def sm_session(server, user, password=PASSWORD):
    """A bound raw session with XEP-0198 resumption on; returns it and its resume id."""
    raw = Raw(server.port)
    raw.open()
    assert "<success" in raw.auth_plain(user, password)
    raw.buf = b""
    raw.open()
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    raw.read_until(b"</iq>")
    raw.buf = b""
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    enabled = raw.read_until(b"<enabled")
    resume_id = re.search(r"<enabled[^>]* id=['\"]([^'\"]+)", enabled).group(1)
    raw.buf = b""
    return raw, resume_id


def hibernating_session(server, user, password=PASSWORD):
    """A session whose connection died (a reset, no stream close): it waits to be resumed."""
    raw, resume_id = sm_session(server, user, password)
    before = server.metric_sum("martlet_connections")
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    wait_for(lambda: server.metric_sum("martlet_connections") < before, "the server to see the connection die")
    return resume_id


def ended_with(raw, condition):
    text = raw.read_until(b"</stream:stream>")
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in text, text
    assert raw.closed_by_server(), "the stream ended but the connection stayed open"


def resume_fails(server, user, password, resume_id):
    raw = Raw(server.port)
    raw.open()
    assert "<success" in raw.auth_plain(user, password)
    raw.buf = b""
    raw.open()
    raw.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{resume_id}' h='0'/>")
    reply = raw.read_until(b"</failed>", b"<resumed", b"</stream:stream>")
    raw.close()
    assert "item-not-found" in reply, reply


def test_deleting_an_account_ends_its_live_and_hibernating_sessions(martlet_server):
    server = martlet_server(c2s=NO_TLS, stream_management={"resume_timeout_secs": 300})
    live, _ = sm_session(server, "alice")
    resume_id = hibernating_session(server, "alice")
    assert server.metric_sum("martlet_sessions") == 2
    server.cli("user", "del", "alice@localhost")
    ended_with(live, "not-authorized")
    wait_for(lambda: server.metric_sum("martlet_sessions") == 0, "the hibernating session to end")
    assert server.metric_sum("martlet_sessions_revoked_total") == 2
    # The name registered again is a new account: nothing of the old one's sessions is its.
    server.add_user("alice", "new-pw")
    resume_fails(server, "alice", "new-pw", resume_id)


def test_changing_the_password_in_band_resets_every_session(martlet_server):
    server = martlet_server(c2s=NO_TLS, registration={"enabled": True})
    changer, _ = sm_session(server, "alice")
    other, _ = sm_session(server, "alice")
    resume_id = hibernating_session(server, "alice")
    changer.send("<iq type='set' id='pw'><query xmlns='jabber:iq:register'>"
                 "<username>alice</username><password>new-pw</password></query></iq>")
    # XEP-0077 §3.3: the change is confirmed, then the stream is reset.
    assert "type='result'" in changer.read_until(b"id='pw'")
    ended_with(changer, "reset")
    ended_with(other, "reset")
    wait_for(lambda: server.metric_sum("martlet_sessions") == 0, "the hibernating session to end")
    resume_fails(server, "alice", "new-pw", resume_id)


def test_cancelling_registration_in_band_ends_the_other_sessions(martlet_server):
    server = martlet_server(c2s=NO_TLS, registration={"enabled": True})
    leaver, _ = sm_session(server, "alice")
    other, _ = sm_session(server, "alice")
    leaver.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
    assert "type='result'" in leaver.read_until(b"id='rm'")
    ended_with(leaver, "not-authorized")
    ended_with(other, "not-authorized")


def test_changing_the_password_through_the_admin_socket_resets_sessions(martlet_server):
    server = martlet_server(c2s=NO_TLS)
    live, _ = sm_session(server, "bob")
    server.cli("user", "passwd", "bob@localhost", "bobs-new-pw")
    ended_with(live, "reset")
    raw = Raw(server.port)
    raw.open()
    assert "not-authorized" in raw.auth_plain("bob", PASSWORD)


# ---- XEP-0077 registration rate (registrations_per_ip_per_hour) ----

def test_registrations_per_address_are_limited_across_cores(martlet_server):
    server = martlet_server(users=(), c2s=NO_TLS, registration={"enabled": True},
                            limits={"registrations_per_ip_per_hour": 2})
    # SO_REUSEPORT hashes each connection to a core: open some until both cores hold some.
    conns = []

    def cores_used():
        return sum(1 for (n, _), v in server.metrics().items() if n == "martlet_connections" and v > 0)

    while len(conns) < 8 or cores_used() < 2:
        assert len(conns) < 64, "the kernel never spread the connections over both cores"
        raw = Raw(server.port)
        raw.open()
        conns.append(raw)
    replies = []
    for i, raw in enumerate(conns):
        raw.buf = b""
        raw.send(f"<iq type='set' id='r{i}'><query xmlns='jabber:iq:register'>"
                 f"<username>new{i}</username><password>pw-{i}</password></query></iq>")
        replies.append(raw.read_until(b"</iq>", b"type='result'"))
    created = [r for r in replies if "type='result'" in r]
    refused = [r for r in replies if "<resource-constraint" in r]
    assert (len(created), len(refused)) == (2, len(conns) - 2), replies
    assert server.metric_sum("martlet_registrations_refused_total") == len(conns) - 2
    assert len([u for u in server.cli("user", "list").stdout.split() if u.startswith("new")]) == 2


# ---- credentials at rest: StoredKey/ServerKey only, never the salted password ----

def test_the_store_keeps_no_salted_password(martlet_server):
    import hashlib
    server = martlet_server(c2s=NO_TLS)
    salt, iterations = scram_offer(server, "alice")
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, iterations)
    raw = Raw(server.port)  # and logging in still works, by SCRAM's proof and by PLAIN
    raw.open()
    assert "<success" in raw.auth_plain("alice", PASSWORD)
    raw.close()
    server.stop()
    stored = (server.data / "martlet.redb").read_bytes()
    assert salt in stored, "the salt should be stored: the test looks in the right file"
    assert salted not in stored, "the SCRAM-SHA-256 salted password, enough to log in, is on disk"


def test_a_stream_that_authenticated_before_a_password_change_cannot_bind_after_it(martlet_server):
    # Revocation reaches bound sessions; one between SASL and bind is checked at bind.
    server = martlet_server(c2s=NO_TLS)
    raw = Raw(server.port)
    raw.open()
    assert "<success" in raw.auth_plain("bob", PASSWORD)
    raw.buf = b""
    raw.open()
    server.cli("user", "passwd", "bob@localhost", "bobs-new-pw")
    raw.buf = b""
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    ended_with(raw, "not-authorized")
    # With the new password, binding works.
    fresh = Raw(server.port)
    fresh.open()
    assert "<success" in fresh.auth_plain("bob", "bobs-new-pw")
    fresh.buf = b""
    fresh.open()
    fresh.buf = b""
    fresh.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert "<jid>bob@localhost/" in fresh.read_until(b"</iq>")
