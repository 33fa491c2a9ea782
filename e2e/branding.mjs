// A reseller's brand in headless Chromium: run by host/tests/dashboard.rs,
// which starts a server with a branded reseller whose tenant has an invoice.
// Chromium resolves the reseller's domain to the server on loopback, so the
// pages are requested through that domain as a tenant's browser would. The
// sign-in page, the tenant's pages and its invoice PDF must show the
// reseller's brand and never the platform's name; the PDF is saved to
// $SCREENSHOTS for the test to read.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const DOMAIN = env("DOMAIN");
const PORT = env("PORT");
const BRAND = env("BRAND");
const SHOTS = env("SCREENSHOTS");
const BASE = `http://${DOMAIN}:${PORT}`;
mkdirSync(SHOTS, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--host-resolver-rules=MAP ${DOMAIN} 127.0.0.1`,
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
const scriptErrors = [];
page.on("pageerror", (error) => scriptErrors.push(`${page.url()}: ${error.message}`));

async function branded(what) {
  const title = await page.title();
  const html = await page.content();
  check(title.includes(BRAND), `${what}: the title ${JSON.stringify(title)} names ${BRAND}`);
  check(!/tollgate/i.test(html), `${what}: the page names the platform`);
}

// The sign-in page on the reseller's domain is in its brand.
await page.goto(`${BASE}/sign-in`);
check((await page.textContent("h1")).includes(BRAND), "the sign-in heading");
check((await page.locator("img.logo").count()) === 1, "the logo on the sign-in page");
await branded("sign-in");
await page.screenshot({ path: join(SHOTS, "sign-in.png"), fullPage: true });

await page.fill("#key", env("TENANT_KEY"));
await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);

// Every page of the tenant's: the brand in the header, its colour, its
// support address, and retail prices only.
for (const [path, name] of [
  ["/app/credits", "credits"],
  ["/app/invoices", "invoices"],
  ["/app/usage", "usage"],
]) {
  const response = await page.goto(`${BASE}${path}`);
  check(response.status() === 200, `${path}: ${response.status()}`);
  check((await page.textContent("header .brand")).includes(BRAND), `${path}: the header's brand`);
  const accent = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue("--accent").trim());
  check(accent === env("PRIMARY"), `${path}: the brand's colour, got ${accent}`);
  check((await page.textContent("footer.support")).includes(env("SUPPORT")), `${path}: the support address`);
  await branded(path);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}
await page.goto(`${BASE}/app/credits`);
const credits = await page.content();
check(credits.includes("63.70"), "the Starter plan at its retail price");
check(!credits.includes("49.00"), "no wholesale price on the credits page");

// The invoice PDF, downloaded through the reseller's domain.
await page.goto(`${BASE}/app/invoices`);
const [download] = await Promise.all([page.waitForEvent("download"), page.click("a[download] >> nth=0")]);
const pdfPath = join(SHOTS, "invoice.pdf");
await download.saveAs(pdfPath);
writeFileSync(join(SHOTS, "invoice.path"), pdfPath);

await browser.close();
if (scriptErrors.length > 0) {
  console.error(scriptErrors.join("\n"));
  process.exit(1);
}
console.log("branding: every check passed");
