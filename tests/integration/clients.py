"""slixmpp clients for the tests: log in over STARTTLS or Direct TLS with a chosen SASL
mechanism and collect what arrives in queues the tests can await."""
import asyncio
import ssl

import slixmpp

from conftest import DOMAIN, PASSWORD

WAIT_SECS = 10


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca, mech=None, direct_tls=False, plugins=()):
        super().__init__(jid, password)
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        self.ssl_context = ctx
        self.enable_plaintext = False
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        if mech:
            self.plugin["feature_mechanisms"].use_mech = mech
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.unmatched = []
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", lambda *_: self.failed.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self._presence)
        for plugin in ("xep_0030", "xep_0092", "xep_0199", "xep_0077", "xep_0203", *plugins):
            self.register_plugin(plugin)
        self.initial_presence = True
        # Subscriptions are the tests' to answer: slixmpp would otherwise approve and
        # subscribe back by itself, hiding what the server did.
        self.auto_authorize = None
        self.auto_subscribe = False

    async def _started(self, _):
        await self.get_roster()
        if self.initial_presence:
            # Ready once the server has reflected the presence back (RFC 6121 §4.4.2): only
            # then is this resource available to the router, so a test's next stanza from
            # another connection cannot overtake it.
            self.send_presence()
        else:
            self.ready.set()

    def _presence(self, presence):
        if self.initial_presence and not self.ready.is_set() and presence["from"] == self.boundjid:
            self.ready.set()
        self.presences.put_nowait(presence)

    async def next_message(self, timeout=WAIT_SECS):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_presence(self, match=lambda p: True, timeout=WAIT_SECS):
        """The oldest presence not yet taken for which `match` holds; the others stay
        for later calls."""
        for i, p in enumerate(self.unmatched):
            if match(p):
                return self.unmatched.pop(i)

        async def find():
            while True:
                p = await self.presences.get()
                if match(p):
                    return p
                self.unmatched.append(p)
        return await asyncio.wait_for(find(), timeout)


async def login(server, user, resource="test", mech=None, direct_tls=False, password=PASSWORD, presence=True,
                plugins=()):
    client = Client(f"{user}@{DOMAIN}/{resource}", password, server.ca, mech, direct_tls, plugins)
    client.initial_presence = presence
    client.connect(server.host, server.tls_port if direct_tls else server.port)
    ready = asyncio.ensure_future(client.ready.wait())
    failed = asyncio.ensure_future(client.failed.wait())
    done, pending = await asyncio.wait({ready, failed}, timeout=WAIT_SECS, return_when=asyncio.FIRST_COMPLETED)
    for f in pending:
        f.cancel()
    if ready not in done:
        client.abort()
        raise PermissionError(f"{user} could not log in ({'auth failed' if failed in done else 'timeout'})")
    return client


async def close(*clients):
    for c in clients:
        c.disconnect()
    await asyncio.sleep(0.2)
