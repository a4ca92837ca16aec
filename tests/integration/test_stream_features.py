"""RFC 6120 §4.3.2: the features element comes as `<stream:features>`, with the prefix the
stream header declares, at every point a client reads it. loudmouth (mcabber) matches that
literal name and Tsung waits for `</stream:features>`; a default-namespace `<features>`
left both hanging."""
import base64

from conftest import PASSWORD
from rawxmpp import Raw


def after_header(reply):
    """What the server wrote after its stream header."""
    start = reply.index("<stream:stream")
    return reply[reply.index(">", start) + 1:]


def test_features_carry_the_stream_prefix_before_and_after_tls_and_sasl(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    assert after_header(raw.open()).startswith("<stream:features><starttls "), raw.buf
    assert after_header(raw.starttls(server.ca)).startswith("<stream:features><mechanisms "), raw.buf
    assert "<success" in raw.auth_plain("alice", PASSWORD)
    raw.buf = b""
    features = after_header(raw.open())
    assert features.startswith("<stream:features><bind "), features
    assert features.endswith("</stream:features>"), features
    raw.close()


def test_sasl2_features_after_success_carry_the_stream_prefix(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.open()
    raw.starttls(server.ca)
    raw.buf = b""
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    raw.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>"
             f"<initial-response>{token}</initial-response><bind xmlns='urn:xmpp:bind:0'/></authenticate>")
    reply = raw.read_until(b"</stream:features>", b"</features>", b"</failure>")
    # SASL2 goes on without a stream restart: the features follow the success directly.
    assert "</success><stream:features>" in reply, reply
    raw.close()
