// A fix to @xmpp/client 0.14 for the scripts that drive it (tests and benches/login).
// Its Connection.open() starts listening for the server's stream header only once the
// write of its own header has completed; over TLS a server on loopback often answers
// before that, and the login then fails with a TimeoutError although the server did
// everything. listenFirst() installs the same open(), listening before writing; nothing
// changes on the wire.
import { promise } from "@xmpp/events";

export function listenFirst(xmpp) {
  xmpp.open = openWaitingFirst;
  return xmpp;
}

// @xmpp/connection 0.14's Connection.open, with the wait for "open" set up first.
async function openWaitingFirst({ domain, lang }) {
  this._status("opening");
  const headerElement = this.headerElement();
  headerElement.attrs.to = domain;
  headerElement.attrs["xml:lang"] = lang;
  this.root = headerElement;
  this._attachParser(new this.Parser());
  const opened = promise(this, "open", "error", this.timeout);
  await this.write(this.header(headerElement));
  return opened;
}
