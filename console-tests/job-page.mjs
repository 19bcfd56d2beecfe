// The console test: a real job run by five real runners, opened in headless Chromium.
//
// env: TESSERA_URL, JOB_ID (completed, 20 SleepTask(i) from 5 runners), RUNNING_JOB_ID (a job
// still running, to cancel from the page), SCREENSHOTS (a directory).
import { mkdirSync } from "node:fs";
import { launch, check } from "./browser.mjs";

const url = process.env.TESSERA_URL;
const job = process.env.JOB_ID;
const running = process.env.RUNNING_JOB_ID;
const deep = process.env.DEEP_JOB_ID;
const withResult = process.env.RESULT_JOB_ID;
const unserved = process.env.UNSERVED_JOB_ID;
const deployed = process.env.DEPLOYED_JOB_ID;
const digest = process.env.DIGEST;

async function post(path, body) {
  const r = await fetch(url + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status + " " + (await r.text()));
  return r.json();
}
const shots = process.env.SCREENSHOTS || "screenshots";
mkdirSync(shots, { recursive: true });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // A Content-Security-Policy violation (a refused style or script) is logged as an error.
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  // Jobs page: both jobs listed, newest first.
  await page.goto(url + "/");
  await page.waitForSelector("body[data-ready]");
  const rows = await page.$$eval("tr[data-job-id]", (trs) => trs.map((t) => t.dataset.jobId));
  check(rows.includes(job) && rows.includes(running), "jobs page lists both jobs: " + rows);
  check(rows.indexOf(running) < rows.indexOf(job), "newest first");
  await page.screenshot({ path: shots + "/jobs.png" });

  // Job page: the tree shows the root and 20 SleepTask(i) rows.
  await page.goto(url + "/jobs/" + job);
  await page.waitForSelector("body[data-ready]");
  await page.waitForFunction(() => document.querySelectorAll("#tree [role=treeitem]").length >= 21);
  const names = await page.$$eval("#tree [role=treeitem] .name", (ns) => ns.map((n) => n.textContent));
  check(names[0] === "ParallelSleepWorkflow", "root first: " + names[0]);
  for (let i = 0; i < 20; i++) check(names.includes("SleepTask(" + i + ")"), "tree row SleepTask(" + i + ")");
  check(names.length === 21, "21 rows, got " + names.length);

  // Timeline: 5 runner lanes whose SleepTask bars overlap.
  const lanes = await page.$$eval("#timeline .lane", (ls) => ls.map((l) => ({
    runner: l.dataset.runner,
    bars: [...l.querySelectorAll(".bar")].map((b) => ({ left: parseFloat(b.style.left), width: parseFloat(b.style.width), title: b.title })),
  })));
  check(lanes.length === 5, "5 runner lanes, got " + lanes.length);
  const sleeps = lanes.flatMap((l, i) => l.bars.filter((b) => b.title.startsWith("SleepTask(")).map((b) => ({ ...b, lane: i })));
  check(sleeps.length === 20, "20 sleep bars, got " + sleeps.length);
  check(lanes.every((l) => l.bars.length > 0), "every lane has bars");
  const edges = sleeps.flatMap((b) => [[b.left, 1], [b.left + b.width - 0.5, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0, most = 0;
  for (const [, d] of edges) { now += d; most = Math.max(most, now); }
  check(most >= 5, "at least five bars overlap, got " + most);
  const title = await page.getAttribute("#timeline .bar >> nth=3", "title");
  check(/attempt 1/.test(title), "a bar names its task on hover: " + title);
  await page.screenshot({ path: shots + "/job.png", fullPage: true });

  // The logs panel names each line's task.
  const logTasks = await page.$$eval("#logs .log .task", (ns) => ns.map((n) => n.textContent.trim()));
  check(logTasks.length >= 41 && logTasks.filter((t) => /^SleepTask\(\d+\)$/.test(t)).length === 40,
    "log lines name their tasks: " + logTasks.slice(0, 5));

  // Logs panel filtered to one task shows its "Finished sleep task" line.
  const taskId = await page.getAttribute('#tree [role=treeitem]:has(.name:text-is("SleepTask(7)"))', "data-task-id");
  await page.selectOption("#log-task", taskId);
  await page.waitForFunction((id) => {
    const lines = [...document.querySelectorAll("#logs .log")];
    return lines.length > 0 && lines.every((l) => l.dataset.taskId === id) && lines.some((l) => l.textContent.includes("Finished sleep task"));
  }, taskId);
  const logText = await page.textContent("#logs");
  check(logText.includes("index=7"), "the filtered logs are SleepTask(7)'s: " + logText);
  check(!logText.includes("index=8"), "no other task's lines");

  // The task view: clicking a row shows its input and attempts.
  await page.click('#tree [role=treeitem]:has(.name:text-is("SleepTask(7)"))');
  await page.waitForSelector("#task-view:not([hidden]) pre");
  const input = await page.textContent("#task-view pre");
  check(input.includes('"index": 7'), "task view shows the input: " + input);
  await page.screenshot({ path: shots + "/task.png", fullPage: true });

  // A completed job's result (its root's output, here its merge step's) heads its page.
  await page.goto(url + "/jobs/" + withResult);
  await page.waitForSelector("body[data-ready]");
  await page.waitForSelector("#job-result:not([hidden]) pre");
  const result = JSON.parse(await page.textContent("#job-result pre"));
  check(result.words === 6 && result.top[0].word === "c" && result.top[0].count === 3, "the job's result: " + JSON.stringify(result));
  check((await page.textContent("#job-result")).includes("The output of its subtask") === false, "no subtask note for the job's own result");
  await page.screenshot({ path: shots + "/result.png" });
  const info = await page.textContent("#timeline-info");
  check(info.startsWith("4 attempts on 1 runner") && !info.includes("1 runners"), "counts agree with their nouns: " + info);

  // Live updates keep the tree as the person left it: three levels expanded, a row selected,
  // the same DOM rows (updated in place, not rebuilt), through ten changes pushed by the server.
  await page.goto(url + "/jobs/" + deep);
  await page.waitForSelector("body[data-ready]");
  const treeItem = (name) => '#tree [role=treeitem]:has(> .name:text-is("' + name + '"))';
  for (const name of ["A", "B"]) {
    await page.waitForSelector(treeItem(name));
    await page.click(treeItem(name) + " > .toggle");
  }
  await page.waitForFunction(() => document.querySelectorAll("#tree [role=treeitem]").length === 15);
  await page.click(treeItem("B") + " > .name");
  await page.evaluate(() => {
    for (const item of document.querySelectorAll("#tree [role=treeitem]")) item.dataset.mark = "original";
  });
  for (let i = 1; i <= 10; i++) {
    const claimed = await post("/v1/runner/claim", { runner_id: "browser-test", cluster: "deep", identifiers: [{ name: "Leaf", version: "v0.0" }], max: 1, wait_ms: 0 });
    const t = claimed.tasks[0];
    check(t, "update " + i + ": a leaf to complete");
    await post("/v1/runner/report", { runner_id: "browser-test", reports: [{ task_id: t.task_id, lease: t.lease, report: { outcome: "computed" } }] });
    await page.waitForSelector('#tree [data-task-id="' + t.task_id + '"] .badge.s-computed', { timeout: 15000 });
    const kept = await page.evaluate(() => {
      const items = [...document.querySelectorAll("#tree [role=treeitem]")];
      const get = (n) => items.find((it) => it.querySelector(":scope > .name").textContent === n);
      return {
        expanded: ["Root", "A", "B"].every((n) => get(n)?.getAttribute("aria-expanded") === "true"),
        rows: items.length,
        sameRows: items.every((it) => it.dataset.mark === "original"),
        selected: get("B")?.classList.contains("sel"),
      };
    });
    check(kept.expanded && kept.rows === 15, "update " + i + ": still three levels expanded: " + JSON.stringify(kept));
    check(kept.sameRows, "update " + i + ": rows updated in place, not rebuilt");
    check(kept.selected, "update " + i + ": the selection stays");
  }
  // The task view shows a computed task's output: pretty JSON, or its size and a download.
  for (const [output, expect] of [[btoa('{"leaf":11,"words":["a","b"]}'), "json"], [btoa("\u0000\u00ff\u0001binary"), "binary"]]) {
    const claimed = await post("/v1/runner/claim", { runner_id: "browser-test", cluster: "deep", identifiers: [{ name: "Leaf", version: "v0.0" }], max: 1, wait_ms: 0 });
    const t = claimed.tasks[0];
    check(t, "a leaf to complete with an output");
    await post("/v1/runner/report", { runner_id: "browser-test", reports: [{ task_id: t.task_id, lease: t.lease, report: { outcome: "computed", output } }] });
    const row = '#tree [data-task-id="' + t.task_id + '"]';
    await page.waitForSelector(row + " .badge.s-computed", { timeout: 15000 });
    await page.click(row + " > .name");
    // The view shows this task (not the one shown before) with its output.
    await page.waitForFunction((id) => {
      const view = document.querySelector("#task-view:not([hidden])");
      return view && view.textContent.includes(id) && view.querySelector("#task-output");
    }, t.task_id);
    if (expect === "json") {
      const shown = await page.textContent("#task-output pre");
      check(JSON.parse(shown).words[1] === "b" && shown.includes("\n  "), "the output as pretty JSON: " + shown);
    } else {
      const text = await page.textContent("#task-output");
      check(text.includes("9 B of binary data"), "a binary output's size: " + text);
      const link = await page.getAttribute("#task-output a[download]", "href");
      check(link && link.startsWith("blob:"), "a binary output's download: " + link);
    }
  }
  const updates = Number(await page.evaluate(() => document.body.dataset.updates || 0));
  check(updates >= 10, "the page took at least ten pushed updates, got " + updates);
  await page.screenshot({ path: shots + "/deep.png", fullPage: true });

  // Runners page: the five runners with files and the fleet runner, each saying what it serves.
  await page.click("nav >> text=Runners");
  await page.waitForSelector("body[data-ready]");
  await page.waitForSelector("#runners tr[data-runner-id]");
  const serves = await page.$$eval("#runners tr[data-runner-id] .serves", (ns) => ns.map((n) => n.textContent));
  check(serves.length >= 6, "the runners page lists every runner seen: " + serves.length);
  check(serves.filter((s) => s === "deployed components").length === 1, "one fleet runner: " + serves);
  check(serves.filter((s) => s.startsWith("files: ") && s.includes("SleepTask@v0.0")).length >= 5, "runners with files say which: " + serves);
  await page.screenshot({ path: shots + "/runners.png", fullPage: true });

  // Components page: the deployed component, its digest and task types.
  await page.click("nav >> text=Components");
  await page.waitForSelector("body[data-ready]");
  const comp = await page.waitForSelector('#components tr[data-digest="' + digest + '"]');
  const compText = await comp.textContent();
  check(compText.includes("parallel_sleep") && compText.includes(digest.slice(0, 19))
    && compText.includes("ParallelSleepWorkflow@v0.0, SleepTask@v0.0"), "the components page shows it: " + compText);
  await page.screenshot({ path: shots + "/components.png", fullPage: true });

  // A task a fleet runner ran names the digest it pinned and ran.
  await page.goto(url + "/jobs/" + deployed);
  await page.waitForSelector("body[data-ready]");
  await page.waitForFunction(() => document.querySelectorAll("#tree [role=treeitem]").length >= 3);
  await page.click('#tree [role=treeitem]:has(.name:text-is("SleepTask(1)"))');
  await page.waitForSelector("#task-view:not([hidden]) #task-component");
  const pinned = await page.getAttribute("#task-component b", "title");
  check(pinned === digest, "the task view names the pinned component: " + pinned);
  const ran = await page.getAttribute("#attempts tbody td.mono[title]", "title");
  check(ran === digest, "the attempt names the component that ran it: " + ran);

  // A task no runner serves says why it waits.
  await page.goto(url + "/jobs/" + unserved);
  await page.waitForSelector("body[data-ready]");
  await page.waitForSelector("#unserved:not([hidden])", { timeout: 15000 });
  const why = await page.textContent("#unserved");
  check(why.includes("⚠ 1 task waiting: no runner in cluster default has served ParallelSleepWorkflow@v0.9")
    && why.includes("runners seen there serve ParallelSleepWorkflow v0.0"), "the page says why the task waits: " + why);
  await page.screenshot({ path: shots + "/unserved.png", fullPage: true });

  // Cancel from the page cancels a running job.
  await page.goto(url + "/jobs/" + running);
  await page.waitForSelector("body[data-ready]");
  page.once("dialog", (d) => d.accept());
  await page.click("#cancel-job");
  await page.waitForSelector("#job-header .badge.s-canceled", { timeout: 15000 });
  const state = await (await fetch(url + "/v1/jobs/" + running)).json();
  check(state.state === "canceled", "the API says canceled: " + state.state);
  await page.screenshot({ path: shots + "/canceled.png", fullPage: true });
  check(errors.length === 0, "the page threw: " + errors.join("; "));
  console.log("console test passed; screenshots in " + shots);
} finally {
  await browser.close();
}
