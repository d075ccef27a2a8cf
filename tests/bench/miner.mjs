// The web app's in-tab CPU miner (Web Worker, tpow-core in wasm) in headless
// Chromium: nonces per second with the simd128 build and with the portable one
// (?kernel=portable), one worker at 100 % intensity, against a local node.
//
//   node tests/bench/miner.mjs --node-bin PATH [--dist www/dist] [--chain devnet|mainnet]
//                              [--warmup-secs 10] [--secs 20]
//
// Starts `tpow-node run` (not mining; it only hands out work and takes shares) serving
// --dist, opens the app from it with ?gpu=0, starts the CPU miner and reads the
// miner's attempt counter over --secs after --warmup-secs. Prints JSON. A benchmark,
// not a test (tests/e2e checks that the CPU miner works with both builds).
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "../e2e/node_modules/playwright-core/index.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const argv = process.argv.slice(2);
const opt = (n, d) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : d);
const NODE_BIN = opt("--node-bin", path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/tpow-node"));
const DIST = path.resolve(opt("--dist", path.join(ROOT, "www/dist")));
const CHAIN = opt("--chain", "devnet");
const WARMUP = Number(opt("--warmup-secs", "10"));
const SECS = Number(opt("--secs", "20"));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error("[miner-bench]", ...a);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tpow-miner-bench-"));
const logf = fs.openSync(path.join(dir, "node.log"), "a");
const node = spawn(NODE_BIN, ["run", "--chain", CHAIN, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
  "--data-dir", dir, "--web-dir", DIST], { stdio: ["ignore", logf, logf], env: { ...process.env, RUST_LOG: "warn" } });
process.on("exit", () => { try { node.kill("SIGKILL"); } catch {} });
let url;
for (let i = 0; i < 300 && !url; i++) {
  const f = path.join(dir, "http-addr");
  if (fs.existsSync(f) && fs.readFileSync(f, "utf8").trim()) url = "http://" + fs.readFileSync(f, "utf8").trim();
  else await sleep(100);
}
if (!url) throw new Error("node did not start: " + fs.readFileSync(path.join(dir, "node.log"), "utf8").slice(-2000));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const out = { chain: CHAIN, warmupSecs: WARMUP, secs: SECS };
for (const kernel of ["simd128", "portable"]) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => log("page error:", e.message));
  await page.goto(`${url}/?gpu=0${kernel === "portable" ? "&kernel=portable" : ""}`);
  await page.waitForSelector("#tab-miner");
  await page.click("#tab-miner");
  await page.selectOption("[data-testid=miner-backend]", "cpu");
  await sleep(500);
  // One worker, 100 % of the time: the range inputs, set as a person would drag them.
  await page.$$eval("input[type=range]", (inputs) => {
    const [workers, duty] = inputs;
    workers.value = "1";
    workers.dispatchEvent(new Event("change", { bubbles: true }));
    duty.value = "100";
    duty.dispatchEvent(new Event("change", { bubbles: true }));
  });
  await page.click("[data-testid=miner-toggle]");
  const attempts = async () => Number(((await page.textContent("[data-testid=attempts]")) ?? "").replace(/[^0-9]/g, "")) || 0;
  await sleep(WARMUP * 1000);
  const a0 = await attempts();
  const t0 = Date.now();
  await sleep(SECS * 1000);
  const a1 = await attempts();
  const secs = (Date.now() - t0) / 1000;
  const panel = await page.$$eval(".stats div", (d) => d.map((x) => x.textContent).join(" | "));
  await page.click("[data-testid=miner-toggle]");
  out[kernel] = { noncesPerSec: (a1 - a0) / secs, attempts: a1 - a0, secs, panel };
  log(kernel, JSON.stringify(out[kernel]));
  await page.close();
}
await browser.close();
console.log(JSON.stringify(out, null, 2));
process.exit(0);
