// Console benchmark: a 100,000-task job, opened in headless Chromium. Records the JSON bytes
// the job page loads before its first complete paint and the time to get there.
//
// env: TESSERA_URL (a running server). Run by bench/console-100k.sh.
import { launch, check } from "./browser.mjs";

const url = process.env.TESSERA_URL;
const N = Number(process.env.COUNT || 100000);
const id = (name) => ({ name, version: "v0.0" });
async function post(path, body) {
  const r = await fetch(url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await r.json();
  if (!r.ok) throw new Error(path + ": " + json.message);
  return json;
}
const claim = (max) => ({ runner_id: "bench", cluster: "default", identifiers: [id("Root"), id("Leaf")], max, wait_ms: 0 });

let t = Date.now();
const job = await post("/v1/jobs", { name: "console-100k", root: { identifier: id("Root"), input: {} } });
const root = (await post("/v1/runner/claim", claim(1))).tasks[0];
const leaves = Array.from({ length: N }, (_, i) => ({ identifier: id("Leaf"), input: { i }, display: "Leaf(" + i + ")" }));
await post("/v1/runner/report", { runner_id: "bench", reports: [{ task_id: root.task_id, lease: root.lease, report: { outcome: "computed", subtasks: leaves } }] });
let tasks = (await post("/v1/runner/claim", claim(1000))).tasks;
while (tasks.length) {
  const reports = tasks.map((x) => ({ task_id: x.task_id, lease: x.lease, report: { outcome: "computed" } }));
  tasks = (await post("/v1/runner/report", { runner_id: "bench", reports, claim: claim(1000) })).tasks;
}
const done = await (await fetch(url + "/v1/jobs/" + job.id)).json();
check(done.state === "completed" && done.task_counts.computed === N + 1, "job completed: " + JSON.stringify(done.task_counts));
console.log(`built a ${N + 1}-task job (all computed, one span each) in ${((Date.now() - t) / 1000).toFixed(1)} s`);

const browser = await launch();
try {
  for (let run = 1; run <= 3; run++) {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    let bytes = 0, requests = 0, largest = 0;
    let counting = true;
    page.on("response", async (r) => {
      if (!counting || !r.url().includes("/v1/")) return;
      try {
        const n = (await r.body()).length;
        bytes += n; requests += 1; largest = Math.max(largest, n);
      } catch {}
    });
    t = performance.now();
    await page.goto(url + "/jobs/" + job.id);
    await page.waitForSelector("body[data-ready]", { timeout: 60000 });
    const ms = performance.now() - t;
    counting = false;
    const rows = await page.$$eval("#tree [role=treeitem]", (n) => n.length);
    const bars = await page.$$eval("#timeline .bar", (n) => n.length);
    console.log(`run ${run}: first paint in ${ms.toFixed(0)} ms; ${requests} API requests, ${(bytes / 1024).toFixed(0)} KiB JSON (largest ${(largest / 1024).toFixed(0)} KiB); ${rows} tree rows, ${bars} timeline bars`);
    await page.close();
  }
} finally {
  await browser.close();
}
