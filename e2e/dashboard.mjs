// The dashboard end to end, in headless Chromium: run by host/tests/dashboard.rs,
// which starts a server with two tenants and passes their keys and objects in
// the environment. Every page is loaded at 1280 px and at 390 px wide, with a
// screenshot of each saved to $SCREENSHOTS, and any console error fails the run.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("BASE");
const SHOTS = env("SCREENSHOTS");
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
  ],
});

// Console errors while a page is shown by visit() fail it; elsewhere a
// refusal the run provokes on purpose (a 401, 403, 404 or 422) logs one.
// An uncaught script error fails the run wherever it happens.
const consoleErrors = [];
const scriptErrors = [];

async function newPage(width) {
  const context = await browser.newContext({ viewport: { width, height: width > 600 ? 900 : 844 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(`${page.url()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => scriptErrors.push(`${page.url()}: ${error.message}`));
  return page;
}

async function signIn(page, key) {
  await page.goto(`${BASE}/sign-in`);
  await page.fill("#key", key);
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
}

async function shot(page, name) {
  const width = page.viewportSize().width;
  await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`), fullPage: true });
}

/** A page that must render, as the signed-in user, with no console errors. */
async function visit(page, path, name) {
  const errorsBefore = consoleErrors.length;
  const response = await page.goto(`${BASE}${path}`);
  check(response.status() === 200, `${path} answered ${response.status()}: ${(await page.textContent("body")).slice(0, 300)}`);
  // Nothing is wider than the window: the page reads at this width.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `${path} is ${overflow} px wider than ${page.viewportSize().width} px`);
  await shot(page, name);
  const errors = consoleErrors.slice(errorsBefore);
  check(errors.length === 0, `console errors on ${path} at ${page.viewportSize().width} px:\n${errors.join("\n")}`);
}

const number = (text) => Number(text.replace(/[^0-9.-]/g, ""));

// ---- signing in: a bad key is refused beside the field ----
{
  const page = await newPage(1280);
  await page.goto(`${BASE}/sign-in`);
  await shot(page, "sign-in");
  await page.fill("#key", "tg_not-a-key");
  await page.click('button[type="submit"]');
  const error = await page.textContent("#key-error");
  check(/malformed, unknown or revoked/.test(error), `sign-in error: ${error}`);
  // Pages need a session.
  await page.goto(`${BASE}/app/credits`);
  check(page.url().endsWith("/sign-in"), `unsigned /app/credits went to ${page.url()}`);
  await page.context().close();
}

// ---- Acme's admin: credits, a package bought with the test card ----
const admin = await newPage(1280);
await signIn(admin, env("ACME_ADMIN_KEY"));
check(admin.url().endsWith("/app/credits"), `signed in to ${admin.url()}`);
const before = number(await admin.textContent("#available"));

// A card number is refused beside the token field; nothing is saved.
await admin.selectOption("#provider", "card");
await admin.selectOption("#method", "card");
await admin.fill("#token", "4242 4242 4242 4242");
await Promise.all([admin.waitForNavigation(), admin.click('#method-form button[type="submit"]')]);
const tokenError = await admin.textContent("#method-token-error");
check(/card number/.test(tokenError), `token error: ${tokenError}`);
await shot(admin, "credits-refused");

// The test card's token is saved, and pays for the first package.
await admin.goto(`${BASE}/app/credits`);
await admin.selectOption("#provider", "card");
await admin.selectOption("#method", "card");
await admin.fill("#token", "pm_card_visa");
await admin.fill("#label", "Test Visa");
await admin.check('#method-form input[name="default"]');
await Promise.all([admin.waitForNavigation(), admin.click('#method-form button[type="submit"]')]);
check((await admin.textContent("#payment-methods")).includes("Test Visa"), "the saved card is listed");

const packageCredits = Number(await admin.getAttribute("#purchase-form label.choice >> nth=0", "data-credits"));
await admin.check('#purchase-form input[name="package"] >> nth=0');
await admin.selectOption("#payment_method", { label: "Test Visa" });
await Promise.all([admin.waitForNavigation(), admin.click('#purchase-form button[type="submit"]')]);
const notice = await admin.textContent(".notice");
check(/Paid/.test(notice), `after buying: ${notice}`);
const after = number(await admin.textContent("#available"));
check(after === before + packageCredits, `balance ${before} + ${packageCredits} = ${after}?`);
check((await admin.textContent("#transactions")).includes("grant"), "the grant is in the history");
await shot(admin, "credits-bought");

// The filters refuse a bad time beside the form, and narrow by kind.
await admin.goto(`${BASE}/app/credits?kind=grant&from=yesterday`);
check(/RFC 3339/.test(await admin.textContent(".filters .field-error")), "a bad filter is explained");
await admin.goto(`${BASE}/app/credits?kind=grant`);
const kinds = await admin.$$eval("#transactions tbody tr td:nth-child(2)", (cells) => cells.map((cell) => cell.textContent));
check(kinds.length > 0 && kinds.every((kind) => kind === "grant"), `kind filter: ${kinds}`);

// A form without the page's CSRF token changes nothing.
const forged = await admin.request.post(`${BASE}/app/credits/purchase`, { form: { package: "pack-1000" }, maxRedirects: 0 });
check(forged.status() === 403, `a form without its CSRF token answered ${forged.status()}`);
const forgedApi = await admin.request.post(`${BASE}/app/api/billing/purchases`, { data: { package: "pack-1000" } });
check(forgedApi.status() === 403, `a script request without its CSRF token answered ${forgedApi.status()}`);

// ---- invoices: the package's invoice, paid, as a PDF ----
await visit(admin, "/app/invoices", "invoices");
check((await admin.textContent("#invoices")).includes("paid"), "the invoice is paid");
const [download] = await Promise.all([admin.waitForEvent("download"), admin.click("#invoices a[download] >> nth=0")]);
const pdfPath = join(SHOTS, "invoice.pdf");
await download.saveAs(pdfPath);
writeFileSync(join(SHOTS, "invoice.path"), pdfPath);

// ---- leads: a CSV imported with its columns mapped ----
await visit(admin, "/app/leads/import", "import");
const csv = ["Full First,Surname,E-mail Address,Employer,Favourite Colour"];
for (let n = 0; n < 2500; n++) csv.push(`Grace${n},Hopper,grace${n}@navy.example,"US Navy, Research",blue`);
csv.push("Nobody,,,,");
await admin.setInputFiles("#csv-file", { name: "leads.csv", mimeType: "text/csv", buffer: Buffer.from(csv.join("\n") + "\n") });
await admin.waitForSelector("#mapping:not([hidden])");
// The guess maps what it recognises; the rest is mapped by hand.
check((await admin.inputValue('select[data-column="E-mail Address"]')) === "email", "E-mail Address is guessed as email");
await admin.selectOption('select[data-column="Full First"]', "first_name");
await admin.selectOption('select[data-column="Surname"]', "last_name");
await admin.selectOption('select[data-column="Employer"]', "company");
await admin.selectOption('select[data-column="Favourite Colour"]', "custom.favourite_colour");
await shot(admin, "import-mapping");
await admin.click("#start-import");
await admin.waitForSelector("#import-report:not([hidden])", { timeout: 120000 });
const summary = await admin.textContent("#import-summary");
check(/2501 rows: 2500 created, 0 updated, 1 skipped/.test(summary), `import: ${summary}`);
check((await admin.textContent("#import-skips")).includes("line 2502"), `the skipped row's line: ${await admin.textContent("#import-skips")}`);
check((await admin.getAttribute("#import-progress", "value")) === "100", "the progress bar is full");
await shot(admin, "import-done");
await visit(admin, "/app/leads?q=grace2499", "leads-search");
check((await admin.textContent("#leads")).includes("US Navy, Research"), "the imported lead is found");
await admin.click("#leads a >> nth=0");
check((await admin.textContent("dl.fields")).includes("blue"), "the custom field is on the lead");

// ---- the pipeline: a deal dragged to another stage stays there ----
const pipeline = env("ACME_PIPELINE");
await visit(admin, `/app/pipelines/${pipeline}`, "board");
const deal = env("ACME_DEAL");
const columns = await admin.$$eval(".column", (nodes) => nodes.map((node) => node.dataset.stage));
const from = await admin.$eval(`[data-deal="${deal}"]`, (node) => node.closest(".column").dataset.stage);
const to = columns.find((stage) => stage !== from);
await admin.dragAndDrop(`[data-deal="${deal}"]`, `.column[data-stage="${to}"] .deals`);
await admin.waitForFunction(() => document.getElementById("board").dataset.moves === "1");
check(await admin.isHidden("#board-error"), `the move failed: ${await admin.textContent("#board-error")}`);
await admin.reload();
const stage = await admin.$eval(`[data-deal="${deal}"]`, (node) => node.closest(".column").dataset.stage);
check(stage === to, `after a reload the deal is in stage ${stage}, not ${to}`);
writeFileSync(join(SHOTS, "moved.txt"), `${deal} ${to}`);
await shot(admin, "board-moved");

// A new deal: a bad value is refused beside its field, then it is added.
await admin.click("details.new-deal summary");
await admin.fill("#deal-title", "Looms for Lovelace");
await admin.fill("#deal-value", "lots");
await Promise.all([admin.waitForNavigation(), admin.click('#deal-form button[type="submit"]')]);
check((await admin.textContent("#deal-form")).toLowerCase().includes("value"), `deal error: ${await admin.textContent("#deal-form")}`);
check(await admin.isVisible("#deal-form .field-error"), "the deal's error is shown beside a field");
await shot(admin, "board-refused");
await admin.fill("#deal-value", "1200.50");
await Promise.all([admin.waitForNavigation(), admin.click('#deal-form button[type="submit"]')]);
check((await admin.textContent("#board")).includes("Looms for Lovelace"), "the new deal is on the board");

// A lead enrolled in a sequence from its page.
await admin.goto(`${BASE}/app/leads/${env("ACME_LEAD")}`);
await Promise.all([admin.waitForNavigation(), admin.click('#enroll-form button[type="submit"]')]);
check(/Choose a sequence/.test(await admin.textContent("#enroll-form")), "enrolling without a sequence is refused beside it");

// ---- every tenant page, at 1280 and 390 px, without console errors ----
const tenantPages = [
  ["/app/credits", "credits"],
  ["/app/usage", "usage"],
  ["/app/invoices", "invoices"],
  ["/app/leads", "leads"],
  [`/app/leads/${env("ACME_LEAD")}`, "lead"],
  ["/app/leads/import", "import"],
  ["/app/sequences", "sequences"],
  [`/app/sequences/${env("ACME_SEQUENCE")}`, "sequence"],
  ["/app/sequences/new", "sequence-new"],
  ["/app/pipelines", "pipelines"],
  [`/app/pipelines/${pipeline}`, "board"],
  ["/app/plugins", "plugins"],
];
for (const width of [1280, 390]) {
  const page = width === 1280 ? admin : await newPage(width);
  if (width !== 1280) {
    await visit(page, "/sign-in", "sign-in");
    await signIn(page, env("ACME_ADMIN_KEY"));
  }
  for (const [path, name] of tenantPages) await visit(page, path, name);
}

// The sequence editor: a refused save says why beside the step.
await admin.goto(`${BASE}/app/sequences/new`);
await admin.fill("#seq-name", "Editor check");
await admin.selectOption("#new-step-kind", "wait");
await admin.click("#add-step");
await admin.fill('.step[data-kind="wait"] input', "0");
await admin.click("#save-sequence");
await admin.waitForSelector(".step-error:not([hidden]), #editor-error:not([hidden])");
await shot(admin, "sequence-refused");
await admin.fill('.step[data-kind="wait"] input', "2");
await Promise.all([admin.waitForNavigation(), admin.click("#save-sequence")]);
check(/\/app\/sequences\/\d+$/.test(admin.url()), `the new sequence is at ${admin.url()}`);

// ---- a member cannot reach the operator's pages ----
const member = await newPage(1280);
await signIn(member, env("ACME_MEMBER_KEY"));
for (const path of ["/app/revenue"]) {
  const response = await member.goto(`${BASE}${path}`);
  check(response.status() === 403, `a member on ${path}: ${response.status()}`);
}
await visit(member, "/app/credits", "member-credits");
check(!(await member.textContent("header nav")).includes("Revenue"), "a member's menu has no Revenue");
check((await member.$("#purchase-form")) === null, "a member is offered no purchase");

// ---- another tenant's objects are refused ----
const globex = await newPage(1280);
await signIn(globex, env("GLOBEX_KEY"));
for (const path of [
  `/app/leads/${env("ACME_LEAD")}`,
  `/app/pipelines/${pipeline}`,
  `/app/sequences/${env("ACME_SEQUENCE")}`,
]) {
  const response = await globex.goto(`${BASE}${path}`);
  check(response.status() === 404, `Globex on Acme's ${path}: ${response.status()}`);
}
await shot(globex, "refused");
await globex.goto(`${BASE}/app/credits`);
const moved = await globex.request.post(`${BASE}/app/api/deals/${deal}/move`, {
  data: { stage: Number(from), position: 0 },
  headers: { "X-CSRF-Token": await globex.getAttribute('meta[name="csrf-token"]', "content") },
});
check(moved.status() === 404, `Globex moving Acme's deal: ${moved.status()}`);

// ---- the operator's pages ----
for (const width of [1280, 390]) {
  const operator = await newPage(width);
  await signIn(operator, env("OPERATOR_KEY"));
  check(operator.url().endsWith("/app/revenue"), `the operator lands on ${operator.url()}`);
  for (const [path, name] of [
    ["/app/revenue", "revenue"],
    ["/app/usage", "operator-usage"],
    ["/app/plugins", "operator-plugins"],
  ])
    await visit(operator, path, name);
  const response = await operator.goto(`${BASE}/app/credits`);
  check(response.status() === 403, `the operator on a tenant page: ${response.status()}`);
}

// Signing out ends the session.
await admin.goto(`${BASE}/app/credits`);
await Promise.all([admin.waitForNavigation(), admin.click(".sign-out button")]);
await admin.goto(`${BASE}/app/credits`);
check(admin.url().endsWith("/sign-in"), "signed out");

await browser.close();
if (scriptErrors.length > 0) {
  console.error(scriptErrors.join("\n"));
  process.exit(1);
}
console.log("dashboard: every check passed");
