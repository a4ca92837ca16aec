// Logs in with @xmpp/client, joins a XEP-0045 room under a nick, sends one groupchat
// message once its self-presence (status 110) came, waits for a groupchat message from
// someone else, prints it as JSON on stdout, and logs out.
// usage: node muc.mjs PORT USER PASSWORD ROOM NICK BODY     (NODE_EXTRA_CA_CERTS = the server's CA)
import { client, xml } from "@xmpp/client";

import { listenFirst } from "./open-first.mjs";

const [port, username, password, room, nick, body] = process.argv.slice(2);
const MUC = "http://jabber.org/protocol/muc";
const MUC_USER = `${MUC}#user`;
const xmpp = listenFirst(client({ service: `xmpp://127.0.0.1:${port}`, domain: "localhost", username, password, resource: "js" }));
const deadline = setTimeout(() => { console.error("timeout"); process.exit(3); }, 15000);
xmpp.on("error", (err) => { console.error("error", err.toString()); process.exit(2); });
xmpp.on("stanza", async (stanza) => {
  const from = stanza.attrs.from ?? "";
  if (stanza.is("presence") && from === `${room}/${nick}`) {
    if (stanza.attrs.type === "error") { console.error("join refused", stanza.toString()); process.exit(4); }
    const codes = (stanza.getChild("x", MUC_USER)?.getChildren("status") ?? []).map((s) => s.attrs.code);
    if (codes.includes("110")) {
      await xmpp.send(xml("message", { to: room, type: "groupchat" }, xml("body", {}, body)));
    }
  }
  if (stanza.is("message") && stanza.attrs.type === "groupchat" && stanza.getChildText("body") && from !== `${room}/${nick}`) {
    console.log(JSON.stringify({ from, body: stanza.getChildText("body") }));
    clearTimeout(deadline);
    await xmpp.stop();
    process.exit(0);
  }
});
xmpp.on("online", async () => {
  await xmpp.send(xml("presence", { to: `${room}/${nick}` }, xml("x", { xmlns: MUC }, xml("history", { maxstanzas: "0" }))));
});
await xmpp.start();
