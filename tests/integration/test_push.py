"""XEP-0357 Push Notifications, end to end: the "app server" is a slixmpp client on the same
domain (there is no s2s); it gets the summary publish when a message arrives that none of
the user's clients will see now (no session, every session hibernating under XEP-0198 or
inactive under XEP-0352), registrations survive a restart, and pushes are paced."""
import asyncio
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from clients import close, login
from test_stream_management import lose_connection

PUSH = "{urn:xmpp:push:0}"
PUBSUB = "{http://jabber.org/protocol/pubsub}"
DATA = "{jabber:x:data}"
APP = "app@localhost/push"


async def app_server(server):
    """A client that answers every pubsub publish it gets, and keeps them in `.pushes`."""
    app = await login(server, "app", resource="push")
    app.pushes = asyncio.Queue()

    def on_publish(iq):
        app.pushes.put_nowait(iq)
        iq.reply(clear=True).send()

    app.register_handler(Callback("push", MatchXPath(f"{{jabber:client}}iq/{PUBSUB}pubsub"), on_publish))
    return app


def push_iq(client, action, jid=APP, node="alice-phone", secret=None):
    iq = client.make_iq_set()
    el = ET.SubElement(iq.xml, PUSH + action, {"jid": jid, **({"node": node} if node else {})})
    if secret:
        x = ET.SubElement(el, DATA + "x", {"type": "submit"})
        for var, value in (("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options"), ("secret", secret)):
            ET.SubElement(ET.SubElement(x, DATA + "field", {"var": var}), DATA + "value").text = value
    return iq.send()


def summary(iq):
    """(from, node, {field: value}) of a push, and the publish-options' secret."""
    publish = iq.xml.find(f"{PUBSUB}pubsub/{PUBSUB}publish")
    form = publish.find(f"{PUBSUB}item/{PUSH}notification/{DATA}x")
    fields = {f.get("var"): f.findtext(DATA + "value") for f in form.findall(DATA + "field")}
    options = iq.xml.find(f"{PUBSUB}pubsub/{PUBSUB}publish-options/{DATA}x")
    secret = None if options is None else {f.get("var"): f.findtext(DATA + "value") for f in options.findall(DATA + "field")}.get("secret")
    return iq["from"].bare, publish.get("node"), fields, secret


async def next_push(app, timeout=5):
    return summary(await asyncio.wait_for(app.pushes.get(), timeout))


async def no_push(app, wait=0.7):
    await asyncio.sleep(wait)
    assert app.pushes.empty(), "unexpected push"


def test_push_reaches_the_app_server_while_the_user_is_offline(martlet_server, storage):
    server = martlet_server(users=("alice", "bob", "app"), storage=storage)

    async def run():
        app = await app_server(server)
        alice = await login(server, "alice")
        await push_iq(alice, "enable", secret="s3cret")
        features = (await alice.plugin["xep_0030"].get_info("alice@localhost"))["disco_info"]["features"]
        assert "urn:xmpp:push:0" in features
        bob = await login(server, "bob")
        others = (await bob.plugin["xep_0030"].get_info("alice@localhost"))["disco_info"]["features"]
        assert "urn:xmpp:push:0" not in others
        await close(alice)

        bob.send_message(mto="alice@localhost", mbody="wake up", mtype="chat")
        got = await next_push(app)
        assert got[:2] == ("alice@localhost", "alice-phone")
        assert got[2] == {"FORM_TYPE": "urn:xmpp:push:summary", "message-count": "1", "last-message-sender": "bob@localhost"}
        assert got[3] == "s3cret"  # the enable's publish-options go along
        assert "wake up" not in str(app.pushes)  # the body stays with the server
        await close(app, bob)

        server.restart()  # registrations are stored
        app = await app_server(server)
        bob = await login(server, "bob")
        bob.send_message(mto="alice@localhost", mbody="still there?", mtype="chat")
        assert (await next_push(app))[:2] == ("alice@localhost", "alice-phone")
        # Online and active: the message is seen, nobody is woken.
        alice = await login(server, "alice")
        assert [(await alice.next_message())["body"] for _ in range(2)] == ["wake up", "still there?"]
        bob.send_message(mto="alice@localhost", mbody="hi", mtype="chat")
        assert (await alice.next_message())["body"] == "hi"
        await no_push(app)
        # Chat states and other bodiless messages never wake anyone.
        await close(alice)
        bob.send_message(mto="alice@localhost", mtype="chat", mbody="")
        await no_push(app)
        # Disabled (all nodes of that app server): no more pushes.
        alice = await login(server, "alice")
        await push_iq(alice, "disable", node=None)
        await close(alice)
        bob.send_message(mto="alice@localhost", mbody="gone", mtype="chat")
        await no_push(app)
        await close(app, bob)

    asyncio.run(run())


def test_push_when_every_session_is_inactive_or_hibernating(martlet_server):
    server = martlet_server(users=("alice", "bob", "app"), stream_management={"resume_timeout_secs": 30})

    async def run():
        app = await app_server(server)
        bob = await login(server, "bob")
        phone = await login(server, "alice", resource="phone", plugins=("xep_0198",))
        await push_iq(phone, "enable")
        # XEP-0352: the phone says it is in a pocket.
        phone.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        bob.send_message(mto="alice@localhost", mbody="one", mtype="chat")
        assert (await next_push(app))[2]["last-message-sender"] == "bob@localhost"
        # Back to active: no push.
        phone.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.2)
        bob.send_message(mto="alice@localhost", mbody="two", mtype="chat")
        await no_push(app)
        # XEP-0198: the connection is lost, the session waits to be resumed.
        await lose_connection(phone, server, server.metric_sum("martlet_connections"))
        bob.send_message(mto="alice@localhost", mbody="three", mtype="chat")
        assert (await next_push(app))[:2] == ("alice@localhost", "alice-phone")
        # One active session among dormant ones is enough to see it.
        laptop = await login(server, "alice", resource="laptop")
        bob.send_message(mto="alice@localhost", mbody="four", mtype="chat")
        assert (await laptop.next_message())["body"] == "four"
        await no_push(app)
        await close(app, bob, laptop)

    asyncio.run(run())


async def error_of(call):
    try:
        await call
    except IqError as e:
        return e.condition, e.text
    raise AssertionError("the request succeeded")


def test_push_limits_and_refusals(martlet_server):
    server = martlet_server(users=("alice", "bob", "app"),
                            limits={"push_notifications_per_user_per_minute": 2, "push_services_max": 1})

    async def run():
        app = await app_server(server)
        alice = await login(server, "alice")
        # No s2s: an app server on another domain cannot be reached, and the error says so.
        condition, text = await error_of(push_iq(alice, "enable", jid="push.example.org"))
        assert condition == "remote-server-not-found" and "server-to-server" in text
        # A bare account JID would be answered by the server, never reach the app.
        assert (await error_of(push_iq(alice, "enable", jid="app@localhost")))[0] == "not-acceptable"
        assert (await error_of(push_iq(alice, "enable", node=None)))[0] == "bad-request"
        await push_iq(alice, "enable")
        assert (await error_of(push_iq(alice, "enable", node="another")))[0] == "resource-constraint"
        await close(alice)

        bob = await login(server, "bob")
        for i in range(5):
            bob.send_message(mto="alice@localhost", mbody=f"m{i}", mtype="chat")
        for _ in range(2):
            await next_push(app)
        await no_push(app)  # the rest of the minute's messages wait for the next push
        await close(app, bob)

    asyncio.run(run())
