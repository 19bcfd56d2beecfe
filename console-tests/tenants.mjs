// Signing in to the console of a server with keys: the page asks for a key, refuses a wrong
// one, shows one tenant's jobs to that tenant's key, and the Tenants page only to operators.
//
// env: TESSERA_URL, TENANT_KEY (a read key of tenant "a"), OPERATOR_KEY, OURS (a job of "a"),
// THEIRS (a job of "b"), SCREENSHOTS.
import { mkdirSync } from "node:fs";
import { launch, check } from "./browser.mjs";

const url = process.env.TESSERA_URL;
const shots = process.env.SCREENSHOTS || "screenshots";
mkdirSync(shots, { recursive: true });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Refused requests (401 before signing in, 404 for the other tenant's job) are expected.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });

  await page.goto(url + "/");
  await page.waitForSelector("form#sign-in");
  await page.screenshot({ path: shots + "/sign-in.png" });

  // Signed out, a link with a key still signs nobody in: the form asks, and nothing is kept.
  await page.goto(url + "/?token=" + encodeURIComponent(process.env.OPERATOR_KEY));
  await page.waitForSelector("form#sign-in");
  check(!page.url().includes("token"), "the key left the address: " + page.url());
  check(await page.evaluate(() => localStorage.getItem("tessera-token")) === null, "a link's key is not kept");

  // A wrong key: refused, still on the sign-in page, nothing stored.
  await page.fill("#key", "tsk_0123456789abcdef_" + "0".repeat(64));
  await page.click("form#sign-in button");
  await page.waitForFunction(() => document.getElementById("sign-in-error").textContent.length > 0);
  check(await page.evaluate(() => localStorage.getItem("tessera-token")) === null, "a refused key is not kept");

  // Tenant a's key: a's job listed, b's not; the header names the tenant and role.
  await page.fill("#key", process.env.TENANT_KEY);
  await page.click("form#sign-in button");
  await page.waitForSelector("body[data-ready] tr[data-job-id]");
  const rows = await page.$$eval("tr[data-job-id]", (trs) => trs.map((t) => t.dataset.jobId));
  check(rows.includes(process.env.OURS), "the tenant's own job is listed: " + rows);
  check(!rows.includes(process.env.THEIRS), "another tenant's job is not listed: " + rows);
  const who = await page.textContent("#identity");
  check(who === "tenant a · read", "the header names tenant and role: " + who);
  check(await page.isHidden("#nav-tenants"), "no Tenants page for a tenant's key");
  await page.screenshot({ path: shots + "/signed-in.png" });

  // A link carrying another key (the operator's) does not sign anyone in or switch keys: the
  // key leaves the address at once (and the history entry), and the page says why.
  await page.goto(url + "/?token=" + encodeURIComponent(process.env.OPERATOR_KEY) + "&state=running");
  await page.waitForSelector("body[data-ready]");
  const address = page.url();
  check(!address.includes("token") && !address.includes(process.env.OPERATOR_KEY), "the key left the address: " + address);
  check(address.includes("state=running"), "the rest of the address stays: " + address);
  const historyHasKey = await page.evaluate((k) => location.href.includes(k) || JSON.stringify(history.state || {}).includes(k), process.env.OPERATOR_KEY);
  check(!historyHasKey, "the history entry does not hold the key");
  check(await page.evaluate(() => localStorage.getItem("tessera-token")) === process.env.TENANT_KEY, "the signed-in key was not replaced");
  check(await page.textContent("#identity") === "tenant a · read", "still tenant a");
  check(/ignored/.test(await page.textContent("#notice")), "the page says the link's key was ignored");
  check(!(await page.textContent("#who")).includes("null"), "the header shows no stray null");

  // Another tenant's job page is as missing as a job that never was.
  await page.goto(url + "/jobs/" + process.env.THEIRS);
  await page.waitForSelector("body[data-ready]");
  const missing = await page.textContent("#app");
  check(/does not exist/.test(missing), "another tenant's job does not exist: " + missing);

  // Signing out forgets the key.
  await page.goto(url + "/");
  await page.waitForSelector("#sign-out");
  await page.click("#sign-out");
  await page.waitForSelector("form#sign-in");
  check(await page.evaluate(() => localStorage.getItem("tessera-token")) === null, "signed out");

  // The operator: every tenant's jobs, and the Tenants page with both tenants.
  await page.fill("#key", process.env.OPERATOR_KEY);
  await page.click("form#sign-in button");
  await page.waitForSelector("body[data-ready] tr[data-job-id]");
  const all = await page.$$eval("tr[data-job-id]", (trs) => trs.map((t) => t.dataset.jobId));
  check(all.includes(process.env.OURS) && all.includes(process.env.THEIRS), "the operator sees both: " + all);
  const whose = await page.textContent("tr[data-job-id='" + process.env.THEIRS + "'] .tenant");
  check(whose === "b", "the operator's list says whose each job is: " + whose);
  await page.click("#nav-tenants");
  await page.waitForSelector("body[data-ready] tr[data-tenant]");
  const tenants = await page.$$eval("tr[data-tenant]", (trs) => trs.map((t) => t.dataset.tenant));
  check(["a", "b", "default"].every((t) => tenants.includes(t)), "tenants listed: " + tenants);
  const queuedA = await page.textContent("tr[data-tenant=a] .usage-queued");
  check(queuedA.startsWith("1 of "), "tenant a's usage shows its queued task: " + queuedA);
  await page.screenshot({ path: shots + "/tenants.png" });

  check(errors.length === 0, "no page errors: " + errors.join("; "));
  console.log("tenant console checks passed");
} finally {
  await browser.close();
}
