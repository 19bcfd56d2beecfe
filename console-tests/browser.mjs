// Shared: launch Debian's Chromium headless through playwright-core.
import { chromium } from "playwright-core";

export async function launch() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

export function check(condition, message) {
  if (!condition) throw new Error("check failed: " + message);
}
