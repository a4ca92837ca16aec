// A mobile-style @xmpp/client session for the fast-login tests: it logs in with SASL2
// (XEP-0388), binds with Bind 2 (XEP-0386) and enables XEP-0198 inline, and keeps the
// XEP-0484 FAST token the server issues. It reports on stdout, one JSON object per line:
//   {"event":"online","jid":…,"smId":…}   {"event":"token","token":{…}}
//   {"event":"resumed"}   {"event":"message","from":…,"body":…}   {"event":"error",…}
//   {"event":"carbon","body":…} (XEP-0280 <received/>)   {"event":"presence","from":…}
// and takes commands on stdin, one per line:
//   drop            — cut the TCP connection without a word (a phone losing its network);
//                     @xmpp/client reconnects on its own, with the token and <resume/>
//   send TO BODY    — a chat message
//   quit            — close the stream and exit
// usage: [INLINE=carbons,inactive] node fast.mjs PORT USER PASSWORD AGENT_ID [TOKEN_JSON]
//   INLINE: also ask Bind 2 to enable XEP-0280 carbons and/or start XEP-0352 inactive.
//   (NODE_EXTRA_CA_CERTS = the server's CA). With TOKEN_JSON the client starts with that
//   token, so it logs in with it first, whatever PASSWORD is.
import readline from "node:readline";

import { client, xml } from "@xmpp/client";

import { listenFirst } from "./open-first.mjs";

const [port, username, password, agentId, tokenJson] = process.argv.slice(2);
const say = (obj) => console.log(JSON.stringify(obj));

const xmpp = listenFirst(client({
  service: `xmpp://127.0.0.1:${port}`,
  domain: "localhost",
  username,
  password,
  resource: "phone",
  userAgent: xml("user-agent", { id: agentId }, xml("software", {}, "martlet tests")),
}));
const inline = (process.env.INLINE ?? "").split(",");
if (inline.includes("carbons")) {
  xmpp.bind2.use("urn:xmpp:carbons:2", () => xml("enable", { xmlns: "urn:xmpp:carbons:2" }));
}
if (inline.includes("inactive")) {
  xmpp.bind2.use("urn:xmpp:csi:0", () => xml("inactive", { xmlns: "urn:xmpp:csi:0" }));
}
let token = tokenJson ? JSON.parse(tokenJson) : null;
xmpp.fast.fetchToken = async () => token;
xmpp.fast.saveToken = async (t) => {
  token = t;
  say({ event: "token", token: t });
};
xmpp.fast.deleteToken = async () => {
  token = null;
  say({ event: "token-deleted" });
};

xmpp.on("error", (err) => say({ event: "error", error: err.toString(), condition: err.condition ?? null }));
// "online" fires as Bind 2's <bound/> is read, before the <enabled/> inside it: report
// once the whole SASL2 <success/> is processed.
xmpp.on("online", (jid) => setImmediate(() => say({ event: "online", jid: jid.toString(), smId: xmpp.streamManagement.id || null })));
xmpp.streamManagement.on("resumed", () => say({ event: "resumed" }));
xmpp.on("stanza", (stanza) => {
  const carbon = stanza.getChild("received", "urn:xmpp:carbons:2");
  if (stanza.is("message") && carbon) {
    const original = carbon.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message");
    say({ event: "carbon", body: original?.getChildText("body") ?? null });
  } else if (stanza.is("message") && stanza.getChildText("body")) {
    say({ event: "message", from: stanza.attrs.from, body: stanza.getChildText("body") });
  } else if (stanza.is("presence")) {
    say({ event: "presence", from: stanza.attrs.from });
  }
});

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const [command, to, ...words] = line.trim().split(" ");
  if (command === "drop") {
    // After STARTTLS, @xmpp/client's socket wraps node's TLSSocket.
    (xmpp.socket.socket ?? xmpp.socket).destroy();
  } else if (command === "send") {
    await xmpp.send(xml("message", { to, type: "chat" }, xml("body", {}, words.join(" "))));
  } else if (command === "quit") {
    await xmpp.stop();
    process.exit(0);
  }
});

await xmpp.start().catch((err) => {
  say({ event: "failed", error: err.toString(), condition: err.condition ?? null });
  process.exit(2);
});
await xmpp.send(xml("presence"));
