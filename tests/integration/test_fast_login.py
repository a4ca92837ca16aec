"""Mobile fast login with @xmpp/client: XEP-0388 SASL2, XEP-0386 Bind 2 with XEP-0198
inline, and XEP-0484 FAST tokens (HT-SHA-256-NONE), so that a returning client
authenticates, binds or resumes in one round trip. slixmpp plays the contact."""
import asyncio
import json
import os
import subprocess
from pathlib import Path

from clients import close, login
from conftest import DOMAIN, PASSWORD
from rawxmpp import Raw

JS_DIR = Path(__file__).parent / "js"
WAIT_SECS = 20


class Phone:
    """fast.mjs: one @xmpp/client session, driven by lines on stdin, reporting JSON lines."""

    @classmethod
    async def start(cls, server, user, password, agent, token=None, inline=()):
        self = cls()
        args = [str(JS_DIR / "fast.mjs"), str(server.port), user, password, agent]
        if token:
            args.append(json.dumps(token))
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=server.ca, INLINE=",".join(inline))
        self.proc = await asyncio.create_subprocess_exec(
            "node", *args, cwd=JS_DIR, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seen, self.pending = [], []
        return self

    async def next(self, event, timeout=WAIT_SECS):
        """The oldest report of `event` not taken yet; `seen` keeps every report, in order."""
        for i, report in enumerate(self.pending):
            if report["event"] == event:
                return self.pending.pop(i)

        async def find():
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    err = await self.proc.stderr.read()
                    raise AssertionError(f"fast.mjs ended before {event!r}: {self.seen} {err.decode()}")
                report = json.loads(line)
                self.seen.append(report)
                if report["event"] == event:
                    return report
                self.pending.append(report)
        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {event!r} from fast.mjs in {timeout} s; it reported {self.seen}") from None

    def command(self, line):
        self.proc.stdin.write(line.encode() + b"\n")

    async def quit(self):
        self.command("quit")
        await asyncio.wait_for(self.proc.wait(), WAIT_SECS)


def test_sasl2_binds_enables_sm_and_issues_a_token_in_one_step(martlet_server):
    server = martlet_server()

    async def run():
        bob = await login(server, "bob")
        phone = await Phone.start(server, "alice", PASSWORD, "agent-1")
        online = await phone.next("online")
        # Bind 2 made the resource from the client's tag, and XEP-0198 came on inline.
        assert online["jid"].startswith("alice@localhost/phone."), online
        assert online["smId"], online
        token = (await phone.next("token"))["token"]
        assert token["mechanism"] == "HT-SHA-256-NONE" and token["token"] and token["expiry"]
        assert server.metric_sum("martlet_sasl2_logins_total") == 1
        bob.send_message(mto=online["jid"], mbody="hi phone", mtype="chat")
        assert (await phone.next("message"))["body"] == "hi phone"
        phone.command(f"send bob@{DOMAIN} hi bob")
        msg = await bob.next_message()
        assert msg["body"] == "hi bob" and str(msg["from"]) == online["jid"]
        await phone.quit()
        await close(bob)

    asyncio.run(run())


def test_bind2_turns_on_carbons_and_starts_inactive(martlet_server):
    server = martlet_server()

    async def run():
        bob, desk = await login(server, "bob"), await login(server, "alice", resource="desk")
        phone = await Phone.start(server, "alice", PASSWORD, "agent-1", inline=("carbons", "inactive"))
        online = await phone.next("online")
        await desk.next_presence(lambda p: str(p["from"]) == online["jid"])
        # Inactive from the start (XEP-0352): a presence waits; the carbon (XEP-0280) of a
        # chat to the desk resource is urgent and brings it along.
        bob.send_presence(pto=online["jid"])
        await asyncio.sleep(1)
        assert not [r for r in phone.seen if r["event"] == "presence" and r["from"].startswith("bob@")], phone.seen
        bob.send_message(mto=f"alice@{DOMAIN}/desk", mbody="to the desk", mtype="chat")
        assert (await desk.next_message())["body"] == "to the desk"
        assert (await phone.next("carbon"))["body"] == "to the desk"
        kinds = [r["event"] for r in phone.seen if r["event"] in ("presence", "carbon")]
        assert kinds[-2:] == ["presence", "carbon"], phone.seen
        await phone.quit()
        await close(bob, desk)

    asyncio.run(run())


def test_a_dropped_phone_comes_back_with_its_token_and_resumes(martlet_server):
    """The network goes; @xmpp/client reconnects with FAST and <resume/> in its one
    <authenticate/>, and gets what was sent meanwhile, once."""
    server = martlet_server()

    async def run():
        bob = await login(server, "bob")
        phone = await Phone.start(server, "alice", PASSWORD, "agent-1")
        online = await phone.next("online")
        await phone.next("token")
        bob.send_message(mto=online["jid"], mbody="before", mtype="chat")
        assert (await phone.next("message"))["body"] == "before"
        phone.command("drop")
        bob.send_message(mto=online["jid"], mbody="while away", mtype="chat")
        await phone.next("resumed")
        assert (await phone.next("message"))["body"] == "while away"
        assert server.metric_sum("martlet_fast_logins_total") == 1
        await asyncio.sleep(0.5)
        bodies = [r["body"] for r in phone.seen if r["event"] == "message"]
        assert bodies == ["before", "while away"], bodies
        # Resumed, not bound again: still one session, under the same JID.
        phone.command(f"send bob@{DOMAIN} back")
        msg = await bob.next_message()
        assert msg["body"] == "back" and str(msg["from"]) == online["jid"]
        await phone.quit()
        await close(bob)

    asyncio.run(run())


def test_a_token_logs_in_without_the_password_across_a_restart_until_the_password_changes(martlet_server):
    server = martlet_server()

    async def run():
        phone = await Phone.start(server, "alice", PASSWORD, "agent-1")
        first = await phone.next("online")
        token = (await phone.next("token"))["token"]
        await phone.quit()
        server.restart()
        # The password given is wrong: only the token can log this client in.
        again = await Phone.start(server, "alice", "not-the-password", "agent-1", token)
        online = await again.next("online")
        assert online["jid"] == first["jid"], "one client, one resource (Bind 2 with its user-agent id)"
        assert server.metric_sum("martlet_fast_logins_total") == 1
        await again.quit()
        # Another client cannot use this client's token.
        stranger = await Phone.start(server, "alice", "not-the-password", "agent-2", token)
        failed = await stranger.next("failed")
        assert failed["condition"] == "not-authorized", failed
        await stranger.proc.wait()
        assert any(r["event"] == "token-deleted" for r in stranger.seen)
        # A new password logs every client out.
        server.cli("user", "passwd", f"alice@{DOMAIN}", "new-password")
        after = await Phone.start(server, "alice", "not-the-password", "agent-1", token)
        failed = await after.next("failed")
        assert failed["condition"] == "not-authorized", failed
        await after.proc.wait()

    asyncio.run(run())


def sasl2_open(server):
    raw = Raw(server.port)
    raw.open()
    return raw, raw.starttls(server.ca)


def test_sasl2_is_offered_after_tls_and_refuses_bad_requests(martlet_server):
    server = martlet_server()
    raw, features = sasl2_open(server)
    assert "<authentication xmlns='urn:xmpp:sasl:2'>" in features or 'xmlns="urn:xmpp:sasl:2"' in features
    for inline in ("urn:xmpp:bind:0", "urn:xmpp:fast:0", "HT-SHA-256-NONE"):
        assert inline in features, features
    # A mechanism never offered; then FAST without a user-agent id (XEP-0484 needs one).
    raw.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X-UNKNOWN'/>")
    reply = raw.read_until(b"</failure>")
    assert "urn:xmpp:sasl:2" in reply and "invalid-mechanism" in reply, reply
    raw.buf = b""
    raw.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>"
             "<initial-response>YWxpY2UAAAA=</initial-response></authenticate>")
    reply = raw.read_until(b"</failure>")
    assert "malformed-request" in reply, reply
    # A third failure ends the stream (auth_failures_max = 3).
    raw.buf = b""
    raw.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>"
             "<initial-response>YWxpY2UAAAA=</initial-response><user-agent id='x'/></authenticate>")
    assert "not-authorized" in raw.read_until(b"</failure>")
    assert raw.closed_by_server()
    assert "not-authorized" in raw.buf.decode(errors="replace")
