// The @xmpp/client (xmpp.js 0.14) logins of scripts/bench-login.sh, timed inside this
// process with performance.now(), one client at a time (each stops before the next starts):
//   sasl2   N password logins: SCRAM-SHA-1 in a XEP-0388 SASL2 <authenticate/> carrying a
//           XEP-0386 Bind 2 request with XEP-0198 <enable/> inline and a XEP-0484 FAST
//           <request-token/>; from start() to "online".
//   fast    N logins of new client instances given the FAST token (HT-SHA-256-NONE), with
//           Bind 2 and SM inline as above; from start() to "online".
//   resume  one client logged in with the token; N times its socket is destroyed (a phone
//           losing its network) and @xmpp/client's reconnect module (delay 0) comes back
//           with the token and <resume/> in its one <authenticate/>; from the reconnect's
//           "reconnecting" to streamManagement's "resumed".
// "online" fires as Bind 2's <bound/> is read, before the <enabled/> inside it is: a login
// counts as usable one setImmediate later, once the whole SASL2 <success/> is processed,
// and must have XEP-0198 on by then. fast and resume get a token by one untimed password
// login when no earlier mode of this run left one. Every client has the same user-agent id
// (one phone), so the server gives it the same resource and token slot each time.
//
//   NODE_EXTRA_CA_CERTS=<server's dev-cert.pem> \
//     node benches/login/login.mjs SERVICE USER PASSWORD N MODES
//   SERVICE: xmpp://127.0.0.1:PORT (STARTTLS) or xmpps://127.0.0.1:PORT (XEP-0368 Direct
//   TLS); MODES: a comma list of the above, run in that order.
// One JSON line per login on stdout:
//   {"method": MODE, "i": k, "start": T0, "usable": T1, "ms": …}
// with T0, T1 in Unix seconds (to match the latency proxy's log).
//
// @xmpp/client is the one the integration tests install (tests/integration/js, `npm ci`):
// an ES module is resolved from the importing file's directory and NODE_PATH does not
// apply to `import`, so it is imported by path.
//
// @xmpp/client 0.14 needs one fix to log in reliably over TLS on loopback; it is shared
// with the tests: tests/integration/js/open-first.mjs.
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "../../tests/integration/js/node_modules/@xmpp");
const load = (file) => import(pathToFileURL(path.join(modules, file)).href);
const { client, xml } = await load("client/index.js");
const { listenFirst } = await import(pathToFileURL(path.join(here, "../../tests/integration/js/open-first.mjs")).href);

const [service, username, password, countArg, modesArg] = process.argv.slice(2);
const count = Number(countArg);
const AGENT_ID = "loginbench-phone";
const TRIAL_TIMEOUT_MS = 30_000;
const SETTLE_MS = 200; // between a resumption and the next drop: the server's side settles

const epoch = () => (performance.timeOrigin + performance.now()) / 1000;
const say = (obj) => console.log(JSON.stringify(obj));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let token = null;

function phone({ withPassword }) {
  const xmpp = client({
    service,
    domain: "localhost",
    username,
    // Without the password only the token can log in: a FAST failure shows as a failure.
    password: withPassword ? password : "not-the-password",
    resource: "phone",
    userAgent: xml("user-agent", { id: AGENT_ID }, xml("software", {}, "martlet loginbench")),
  });
  xmpp.fast.fetchToken = async () => token;
  xmpp.fast.saveToken = async (t) => {
    token = t;
  };
  xmpp.fast.deleteToken = async () => {
    token = null;
  };
  xmpp.on("error", (err) => console.error(`login.mjs: ${err}`));
  return listenFirst(xmpp);
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${TRIAL_TIMEOUT_MS} ms`)), TRIAL_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Starts `xmpp`; resolves with [t0, t1] (performance.now() and Unix seconds) when usable.
async function timedStart(xmpp, what) {
  const usable = new Promise((resolve) => {
    xmpp.once("online", () => setImmediate(() => resolve([performance.now(), epoch()])));
  });
  const start = epoch();
  const t0 = performance.now();
  await within(xmpp.start(), what);
  const [t1, end] = await within(usable, what);
  if (!xmpp.streamManagement.enabled || !xmpp.streamManagement.id) {
    throw new Error(`${what}: online without XEP-0198 resumption enabled`);
  }
  return { start, usable: end, ms: +(t1 - t0).toFixed(2) };
}

async function stop(xmpp) {
  xmpp.reconnect.stop();
  await within(xmpp.stop(), "stop");
}

async function sasl2Logins(n, method) {
  for (let i = 0; i < n; i++) {
    token = null; // a first login: the password, and a token asked for
    const xmpp = phone({ withPassword: true });
    const result = await timedStart(xmpp, "sasl2 login");
    if (!token) throw new Error("sasl2 login: no FAST token issued");
    if (method) say({ method, i, ...result });
    await stop(xmpp);
  }
}

async function fastLogins(n) {
  if (!token) await sasl2Logins(1, null);
  for (let i = 0; i < n; i++) {
    const xmpp = phone({ withPassword: false });
    if (!token) throw new Error("fast login: no token");
    const result = await timedStart(xmpp, "fast login");
    say({ method: "fast", i, ...result });
    await stop(xmpp);
  }
}

async function resumptions(n) {
  if (!token) await sasl2Logins(1, null);
  const xmpp = phone({ withPassword: false });
  xmpp.reconnect.delay = 0;
  await timedStart(xmpp, "fast login before resumptions");
  xmpp.on("online", () => console.error("login.mjs: bound anew instead of resuming"));
  for (let i = 0; i < n; i++) {
    await sleep(SETTLE_MS);
    let start, t0;
    const reconnecting = new Promise((resolve) => xmpp.reconnect.once("reconnecting", resolve)).then(() => {
      start = epoch();
      t0 = performance.now();
    });
    const resumed = new Promise((resolve) => {
      xmpp.streamManagement.once("resumed", () => resolve([performance.now(), epoch()]));
    });
    // After STARTTLS, @xmpp/client's socket wraps node's TLSSocket.
    (xmpp.socket.socket ?? xmpp.socket).destroy();
    await within(reconnecting, "reconnect");
    const [t1, end] = await within(resumed, "resumption");
    say({ method: "resume", i, start, usable: end, ms: +(t1 - t0).toFixed(2) });
  }
  await stop(xmpp);
}

const modes = { sasl2: (n) => sasl2Logins(n, "sasl2"), fast: fastLogins, resume: resumptions };
try {
  for (const mode of modesArg.split(",")) {
    if (!modes[mode]) throw new Error(`unknown mode ${mode}`);
    await modes[mode](count);
  }
  process.exit(0);
} catch (err) {
  console.error(`login.mjs: ${err.stack ?? err}`);
  process.exit(1);
}
