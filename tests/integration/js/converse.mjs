// Drives Converse.js in Debian's Chromium, headless (puppeteer-core; no browser download):
// opens PAGE (which logs alice in over WebSocket or BOSH), then walks the steps below, printing one
// JSON line per step reached. On a failure it saves a screenshot to SHOT and exits 1.
// usage: node converse.mjs PAGE SHOT     (CHROMIUM: the browser binary, /usr/bin/chromium;
// TRUSTED_SPKI: the base64 SHA-256 of a self-signed certificate's key to trust, for wss://)
import puppeteer from "puppeteer-core";

const [page_url, shot] = process.argv.slice(2);
const say = (event, extra = {}) => console.log(JSON.stringify({ event, ...extra }));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    ...(process.env.TRUSTED_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.TRUSTED_SPKI}`] : [])],
});
const page = await browser.newPage();
page.on("console", (m) => console.error("page:", m.text()));
page.on("pageerror", (e) => console.error("page error:", e.message));
page.on("requestfailed", (r) => console.error("request failed:", r.url()));
page.on("response", (r) => { if (r.status() >= 400) console.error("HTTP", r.status(), r.url()); });
const until = (fn, arg, timeout = 30000) => page.waitForFunction(fn, { timeout, polling: 100 }, arg);
try {
  await page.goto(page_url);
  await until(() => window.martlet?.connected === true);
  say("connected");
  await until(async () => (await window.martlet.showOf("bob@localhost")) === "online");
  say("bob-online");
  await page.evaluate(() => window.martlet.send("bob@localhost", "hello from converse"));
  say("sent");
  await until((b) => window.martlet.received.includes(b), "hello back");
  say("received");
  await page.reload();
  await until(() => window.martlet?.connected === true);
  say("reconnected");
  await until((b) => window.martlet.received.includes(b), "after reload");
  say("received-after-reload");
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error("failed:", e.message);
  await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
