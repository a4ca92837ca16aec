"""A deliberately dumb XMPP peer over a raw socket, for sending what real clients refuse to
send (garbage, oversized stanzas, wrong namespaces) and reading the server's exact reply."""
import base64
import socket
import ssl
import time

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>")


class Raw:
    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def open(self, to="localhost"):
        self.send(HEADER.format(to=to))
        return self.read_until(b"</stream:features>", b"</features>", b"</stream:stream>")

    def read_until(self, *markers, timeout=10):
        """Reads until one of `markers` arrives or the server closes; returns all read."""
        deadline = time.time() + timeout
        while not any(m in self.buf for m in markers):
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise TimeoutError(f"waited for {markers}, got {self.buf[-500:]!r}")
            if not chunk:
                break
            self.buf += chunk
        return self.buf.decode(errors="replace")

    def closed_by_server(self, timeout=10):
        """True once the server closes the connection (reads until EOF)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def starttls(self, ca):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(b"<proceed")
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        return self.open()

    def auth_plain(self, user, password):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.buf = b""
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return self.read_until(b"<success", b"</failure>", b"</stream:stream>")

    def authenticate(self, ca, user, password):
        """STARTTLS, PLAIN, the restarted stream: returns its features (bind, sm, ...)."""
        self.open()
        self.starttls(ca)
        assert "<success" in self.auth_plain(user, password)
        self.buf = b""
        features = self.open()
        self.buf = b""
        return features

    def login(self, ca, user, password, resource=None):
        """STARTTLS, PLAIN, bind: returns the bound JID."""
        self.authenticate(ca, user, password)
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>")
        reply = self.read_until(b"</iq>")
        return reply.split("<jid>")[1].split("</jid>")[0]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
