// Runs the tpow-wasm-simd-check module (see src/main.rs) without wasm-bindgen, in
// Node.js or in headless Chromium (run.html, served from here):
//   node run.mjs [--chromium] PATH/tpow-wasm-simd-check.wasm [check|bench|all] [reps]
// Exits non-zero when a check fails (a Rust panic traps; the panic message is logged
// first) or when the engine rejects the module (e.g. relaxed SIMD it does not know).
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const chromium = args[0] === "--chromium";
const [path, what = "all", reps = "20"] = chromium ? args.slice(1) : args;
if (!path) {
  console.error("usage: node run.mjs [--chromium] PATH.wasm [check|bench|all] [reps]");
  process.exit(2);
}

if (!chromium) {
  const mode = { check: 1, bench: 2, all: 3 }[what] ?? 3;
  let memory;
  const env = {
    tpow_now: () => performance.now(),
    tpow_log: (ptr, len) => console.log(new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len))),
  };
  try {
    const { instance } = await WebAssembly.instantiate(readFileSync(path), { env });
    memory = instance.exports.memory;
    instance.exports.tpow_run(mode, Number(reps));
  } catch (e) {
    console.error(`FAILED: ${e}`);
    process.exit(1);
  }
} else {
  // Serve run.html and the module on 127.0.0.1, open the page headless, and relay its
  // console lines (Chromium prints them with --enable-logging=stderr) until TPOW-DONE.
  const html = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "run.html"));
  const wasm = readFileSync(path);
  const server = createServer((req, res) => {
    if (req.url.startsWith("/m.wasm")) {
      res.writeHead(200, { "content-type": "application/wasm" }).end(wasm);
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end(html);
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const url = `http://127.0.0.1:${server.address().port}/run.html?wasm=/m.wasm&mode=${what}&reps=${reps}`;
  const profile = mkdtempSync(join(tmpdir(), "tpow-chromium-"));
  const browser = spawn(process.env.CHROMIUM ?? "/usr/bin/chromium", [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
    "--enable-logging=stderr", "--v=0", `--user-data-dir=${profile}`, url,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let ok = false;
  let buf = "";
  const done = new Promise((resolve) => {
    browser.stderr.on("data", (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const m = l.match(/CONSOLE[^\]]*\] "(.*)", source:/);
        if (!m) continue;
        console.log(m[1]);
        if (m[1].startsWith("TPOW-DONE")) {
          ok = m[1] === "TPOW-DONE ok";
          resolve();
        }
      }
    });
    browser.on("exit", resolve);
  });
  const timer = setTimeout(() => { console.error("FAILED: timeout"); browser.kill(); }, 600_000);
  await done;
  clearTimeout(timer);
  const exited = new Promise((resolve) => browser.exitCode !== null ? resolve() : browser.on("exit", resolve));
  browser.kill();
  await exited;
  server.close();
  // Chromium's helper processes can still be writing to the profile after the main
  // process exits: retry, and never let the cleanup decide the verdict.
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  } catch (e) {
    console.error(`note: could not remove ${profile} (${e.code})`);
  }
  process.exit(ok ? 0 : 1);
}
