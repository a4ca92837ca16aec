// Logs in with @xmpp/client over STARTTLS (SCRAM is its first choice), sends one chat
// message, waits for one message back, prints it as JSON on stdout, and logs out.
// usage: node chat.mjs PORT USER PASSWORD TO BODY     (NODE_EXTRA_CA_CERTS = the server's CA)
// With XMPP_SERVICE set (e.g. ws://127.0.0.1:5280/xmpp-websocket, RFC 7395), it connects
// there instead (node 20: run with --experimental-websocket).
import { client, xml } from "@xmpp/client";

import { listenFirst } from "./open-first.mjs";

const [port, username, password, to, body] = process.argv.slice(2);
const xmpp = listenFirst(client({ service: process.env.XMPP_SERVICE ?? `xmpp://127.0.0.1:${port}`, domain: "localhost", username, password, resource: "js" }));
const deadline = setTimeout(() => { console.error("timeout"); process.exit(3); }, 15000);
let mechanism = null;
xmpp.on("error", (err) => { console.error("error", err.toString()); process.exit(2); });
xmpp.on("stanza", async (stanza) => {
  if (stanza.is("message") && stanza.getChildText("body")) {
    console.log(JSON.stringify({ from: stanza.attrs.from, body: stanza.getChildText("body"), mechanism }));
    clearTimeout(deadline);
    await xmpp.stop();
    process.exit(0);
  }
});
xmpp.on("online", async () => {
  mechanism = xmpp.sasl?.mechanism?.name ?? null;
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to, type: "chat" }, xml("body", {}, body)));
});
await xmpp.start();
