// Browser end-to-end test of the light client (pkg/) against a real devnet node,
// in headless Chromium driven by playwright-core:
//   node tests/light/run.mjs [--blocks N] [--bench] [--require-webgpu] [--node-bin PATH]
//                            [--data-dir DIR] [--mine-secs S] [--no-full] [--no-mine] [--runs N]
// It starts `tpow-node run` (devnet, genesis a day back so mining is cheap), a
// lying node (a proxy that inflates the announced work and forges the tip's
// output digest), serves pkg/ and page.html, then in the page: syncs with WebGPU
// and with the CPU worker, checks both engines give the header's digest, flags
// the liar, resumes from IndexedDB, follows the tip and verifies single headers.
// The page loads pkg/ as users do (`init()`: the simd128 build in Chromium); a
// second page forces the portable build (`?kernel=portable`, worker included) and
// must verify the same headers and vectors.
// --bench: a 10,000-header chain, cold syncs in sampled and full mode and the
// time to verify one mainnet header (test vector) per engine; prints JSON. Per
// kernel (simd128, portable): the mainnet header on cpu-wasm and cpu-worker
// (median of --runs, default 7) and a sampled cold sync on the CPU worker.
//   --data-dir DIR   keep the chain in DIR (its genesis in DIR/genesis-ms) and reuse it
//   --mine-secs S    stop mining after S seconds even below --blocks (a chain as long
//                    as S seconds of mining give)
//   --no-full        skip the full sync (long chains)
//   --no-mine        serve DIR as it is, mining nothing (a chain written by
//                    `sync_bench --generate-only DIR`); --blocks defaults to its height
// --bench also times a sampled cold sync on WebGPU against the honest node alone.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const argv = process.argv.slice(2);
const flag = (n) => argv.includes(n);
const opt = (n, d) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : d);
const BENCH = flag("--bench");
const NO_MINE = flag("--no-mine");
let BLOCKS = Number(opt("--blocks", BENCH ? "10000" : "300"));
const NODE_BIN = opt("--node-bin", path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/tpow-node"));
const REQUIRE_WEBGPU = flag("--require-webgpu");
const DATA_DIR = opt("--data-dir", null);
const MINE_SECS = Number(opt("--mine-secs", "0"));
const FULL = !flag("--no-full");
const RUNS = Number(opt("--runs", "7"));
// Vector files with their u64 nonces as strings (JSON numbers lose precision above 2^53).
const vectors = (name) =>
  JSON.parse(fs.readFileSync(path.join(ROOT, "tests/vectors", name), "utf8").replace(/"nonce": (\d+)/g, '"nonce": "$1"')).cases;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error("[light-test]", ...a);

const children = [];
function cleanup() { for (const c of children) { try { c.kill("SIGKILL"); } catch {} } }
process.on("exit", cleanup);
process.on("SIGINT", () => { cleanup(); process.exit(130); });

async function startNode(dir, genesis, mine) {
  try { fs.unlinkSync(path.join(dir, "http-addr")); } catch {}
  const args = ["run", "--chain", "devnet", "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
    "--data-dir", dir, "--genesis-time-ms", String(genesis)];
  if (mine) args.push("--mine", "--threads", "1");
  const logf = fs.openSync(path.join(dir, "node.log"), "a");
  const child = spawn(NODE_BIN, args, { stdio: ["ignore", logf, logf], env: { ...process.env, RUST_LOG: "warn" } });
  children.push(child);
  for (let i = 0; i < 300; i++) {
    const f = path.join(dir, "http-addr");
    if (fs.existsSync(f) && fs.readFileSync(f, "utf8").trim()) {
      const url = "http://" + fs.readFileSync(f, "utf8").trim();
      try { await (await fetch(url + "/api/health")).json(); return { child, url }; } catch {}
    }
    await sleep(100);
  }
  throw new Error("node did not start: " + fs.readFileSync(path.join(dir, "node.log"), "utf8").slice(-2000));
}

const tipOf = async (url) => (await fetch(url + "/api/tip")).json();

// A node that lies: it announces ten times the real work and forges the output
// digest of the tip header wherever it serves it.
function startLiar(honest) {
  const forge = (hex) => hex.slice(0, 320) + "ab".repeat(32);
  const server = http.createServer(async (req, res) => {
    const cors = { "access-control-allow-origin": "*" };
    try {
      const up = await fetch(honest + req.url);
      const buf = Buffer.from(await up.arrayBuffer());
      if (req.url.startsWith("/api/tip")) {
        const t = JSON.parse(buf);
        t.total_work = (BigInt(t.total_work) * 10n).toString();
        res.writeHead(200, { ...cors, "content-type": "application/json" });
        return res.end(JSON.stringify(t));
      }
      if (req.url.startsWith("/api/flyclient")) {
        const f = JSON.parse(buf);
        f.last[f.last.length - 1] = forge(f.last[f.last.length - 1]);
        res.writeHead(200, { ...cors, "content-type": "application/json" });
        return res.end(JSON.stringify(f));
      }
      if (req.url.startsWith("/api/headers") && buf.length >= 192) {
        buf.fill(0xab, buf.length - 32);
      }
      res.writeHead(up.status, { ...cors, "content-type": up.headers.get("content-type") || "application/octet-stream" });
      res.end(buf);
    } catch (e) { res.writeHead(502, cors); res.end(String(e)); }
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

function startStatic() {
  const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html", ".json": "application/json" };
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = p === "/" ? path.join(ROOT, "tests/light/page.html") : path.join(ROOT, p);
    const ok = (file.startsWith(path.join(ROOT, "pkg")) || file.startsWith(path.join(ROOT, "tests"))) && fs.existsSync(file);
    if (!ok) { res.writeHead(404); return res.end(); }
    res.writeHead(200, { "content-type": types[path.extname(file)] || "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

const dir = DATA_DIR ? (fs.mkdirSync(DATA_DIR, { recursive: true }), DATA_DIR) : fs.mkdtempSync(path.join(os.tmpdir(), "tpow-light-"));
const genesisFile = path.join(dir, "genesis-ms");
const genesis = fs.existsSync(genesisFile) ? Number(fs.readFileSync(genesisFile, "utf8")) : Date.now() - 86_400_000;
fs.writeFileSync(genesisFile, String(genesis));
if (NO_MINE && !DATA_DIR) throw new Error("--no-mine needs --data-dir");
let node = await startNode(dir, genesis, !NO_MINE);
if (NO_MINE && !argv.includes("--blocks")) BLOCKS = (await tipOf(node.url)).height;
log("node", node.url, NO_MINE ? "serving height" : "mining to height", BLOCKS);
const t0 = Date.now();
for (;;) {
  if (NO_MINE) {
    const h = (await tipOf(node.url)).height;
    if (h < BLOCKS) throw new Error(`--no-mine: ${dir} holds ${h} headers, fewer than --blocks ${BLOCKS}`);
    break;
  }
  const t = await tipOf(node.url);
  if (t.height >= BLOCKS) break;
  if (MINE_SECS && Date.now() - t0 > MINE_SECS * 1000) break;
  if (Date.now() - t0 > 1_800_000) throw new Error("mining too slow");
  await sleep(500);
}
if (!NO_MINE) log("mined", (await tipOf(node.url)).height, "blocks in", (Date.now() - t0) / 1000, "s");
if (BENCH && !NO_MINE) {
  // A still chain for stable numbers: restart the node without mining.
  node.child.kill("SIGKILL");
  await sleep(500);
  node = await startNode(dir, genesis, false);
}
const liar = await startLiar(node.url);
const site = await startStatic();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu"],
});
const page = await browser.newPage();
page.on("console", (m) => log("page:", m.text()));
page.on("pageerror", (e) => log("page error:", e.message));
await page.goto(site.url + "/");
await page.waitForFunction(() => document.getElementById("status").textContent === "ready", null, { timeout: 60_000 });
const cfg = { honest: node.url, liar: liar.url, genesis, blocks: BLOCKS, bench: BENCH, full: FULL, runs: RUNS, worker: site.url + "/pkg/tpow_light_worker.js" };
const mainnet = vectors("mainnet.json")[0];
const devnetCase = vectors("devnet.json")[1];

const result = await page.evaluate(async ({ cfg, mainnet, devnetCase }) => {
  const { LightClient, vectorDigest } = window.tpow;
  const out = { checks: [] };
  const check = (name, ok, detail) => out.checks.push({ name, ok: !!ok, detail: detail === undefined ? "" : String(detail) });

  // The build init() picked: simd128 (Chromium has WebAssembly SIMD), here and in the worker.
  out.kernel = window.tpow.kernel();
  check("Chromium supports WebAssembly SIMD and init() loads the simd128 build", window.tpow.simdSupported() && out.kernel === "simd128", out.kernel);
  const workerKernel = (url) => new Promise((resolve) => {
    const w = new Worker(url, { type: "module" });
    w.onmessage = (e) => { w.terminate(); resolve(e.data.kernel ?? e.data.error); };
    w.onerror = (e) => { w.terminate(); resolve("worker error: " + e.message); };
    w.postMessage({ id: 0, query: "kernel" });
  });
  out.workerKernel = await workerKernel(cfg.worker);
  check("the CPU worker loads the simd128 build too", out.workerKernel === "simd128", out.workerKernel);
  check("mainnet vector in page wasm", vectorDigest("mainnet", mainnet.prev_id, mainnet.template, mainnet.nonce) === mainnet.output_digest);
  const base = { chain: "devnet", genesisTimeMs: cfg.genesis, workerUrl: cfg.worker };
  const hdr = (hex) => ({ prevId: hex.slice(24, 88), template: hex.slice(0, 304),
    nonce: new DataView(Uint8Array.from(hex.slice(304, 320).match(/../g).map((b) => parseInt(b, 16))).buffer).getBigUint64(0, true).toString(),
    digest: hex.slice(320, 384) });

  // Vectors through the page's wasm.
  check("devnet vector in page wasm", vectorDigest("devnet", devnetCase.prev_id, devnetCase.template, devnetCase.nonce) === devnetCase.output_digest);

  // 1. Sampled sync with WebGPU (if offered), liar first in the list.
  const gpu = await LightClient.create({ ...base, nodes: [cfg.liar, cfg.honest], persist: false, gpu: true });
  out.gpuBackend = gpu.backend; out.adapter = gpu.adapter; out.gpuError = gpu.gpuError;
  let t = performance.now();
  const r1 = await gpu.sync();
  out.sampledGpu = { ms: performance.now() - t, passes: r1.passes, bytes: r1.bytes, height: r1.tip.height };
  check("sampled sync reaches the node's height", r1.tip.height >= cfg.blocks, r1.tip.height);
  const nodes = gpu.nodes();
  check("liar flagged", nodes[0].state === "invalid", JSON.stringify(nodes[0]));
  check("honest ok", nodes[1].state === "ok", JSON.stringify(nodes[1]));
  const backends = [...new Set(gpu.recent().map((r) => r.backend))];
  out.gpuRecentBackends = backends;
  check("passes ran on the preferred engine", backends.includes(gpu.backend), backends.join(","));

  // 2. The same on the CPU worker (no WebGPU).
  const cpu = await LightClient.create({ ...base, nodes: [cfg.honest], persist: false, gpu: false });
  t = performance.now();
  const r2 = await cpu.sync();
  out.sampledCpu = { ms: performance.now() - t, passes: r2.passes, bytes: r2.bytes, height: r2.tip.height, backend: cpu.backend };
  check("cpu client uses the worker", cpu.backend === "cpu-worker" && cpu.recent().every((r) => r.backend === "cpu-worker"), cpu.backend);

  // 3. WebGPU and CPU give the header's digest.
  const tip = hdr(cpu.tip().header);
  const engines = gpu.backend === "web-gpu" ? ["web-gpu", "cpu-wasm", "cpu-worker"] : ["cpu-wasm", "cpu-worker"];
  out.digests = {};
  for (const e of engines) out.digests[e] = (await cpu.digestOn(e, tip.prevId, tip.template, tip.nonce).catch(async () => gpu.digestOn(e, tip.prevId, tip.template, tip.nonce))).digest;
  check("engines agree with the header's digest", Object.values(out.digests).every((d) => d === tip.digest), JSON.stringify(out.digests));
  out.tipHeader = cpu.tip().header;

  // 4. verifyHeader: a real header, a truncated one.
  const raw = new Uint8Array(await (await fetch(cfg.honest + "/api/headers?from=5&count=1")).arrayBuffer());
  const v = await cpu.verifyHeader(raw);
  check("verifyHeader accepts header 5", v.height === 5, JSON.stringify(v));
  let err = null;
  try { await cpu.verifyHeader(raw.slice(0, 100)); } catch (e) { err = e; }
  check("truncated header is a typed error", err && err.kind === "decode", err && err.kind);

  if (!cfg.bench) {
    // 5. Persistence: a second client resumes from IndexedDB.
    const p1 = await LightClient.create({ ...base, nodes: [cfg.honest], persist: true, gpu: false });
    await p1.sync();
    const h1 = p1.tip().height;
    const p2 = await LightClient.create({ ...base, nodes: [cfg.honest], persist: true, gpu: false });
    check("reload resumes from IndexedDB", p2.tip().height === h1, `${p2.tip().height} vs ${h1}`);
    const r3 = await p2.sync();
    check("resumed sync only checks new headers", r3.passes <= Math.max(5, r3.tip.height - h1 + 1), `${r3.passes} passes for ${r3.tip.height - h1} new`);

    // 6. Follow the tip over the WebSocket (the node keeps mining).
    const start = p2.tip().height;
    const got = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 60_000);
      p2.subscribe((tip) => { if (tip.height > start) { clearTimeout(timer); resolve(tip); } });
    });
    check("follows a new tip over the WebSocket", got && got.height > start, got && got.height);
  } else {
    // Cold sampled sync on WebGPU against the honest node alone (above: with the liar).
    if (gpu.backend === "web-gpu") {
      const g = await LightClient.create({ ...base, nodes: [cfg.honest], persist: false, gpu: true });
      t = performance.now();
      const r = await g.sync();
      out.sampledGpuHonest = { ms: performance.now() - t, passes: r.passes, bytes: r.bytes, height: r.tip.height, backends: [...new Set(g.recent().map((x) => x.backend))] };
    }
    // Cold full sync on the CPU worker (sampled numbers above).
    if (cfg.full) {
      const full = await LightClient.create({ ...base, nodes: [cfg.honest], persist: false, gpu: false, mode: "full" });
      t = performance.now();
      const r4 = await full.sync();
      out.fullCpu = { ms: performance.now() - t, passes: r4.passes, bytes: r4.bytes, height: r4.tip.height };
    }
    // One mainnet header's forward pass (test vector), per engine.
    const mn = await LightClient.create({ chain: "mainnet", nodes: ["http://127.0.0.1:9"], persist: false, gpu: true });
    out.mainnet = {};
    for (const e of mn.backend === "web-gpu" ? ["web-gpu", "cpu-wasm"] : ["cpu-wasm"]) {
      await mn.digestOn(e, mainnet.prev_id, mainnet.template, mainnet.nonce); // warm-up (shaders, model)
      const d = await mn.digestOn(e, mainnet.prev_id, mainnet.template, mainnet.nonce);
      out.mainnet[e] = { ms: d.ms, ok: d.digest === mainnet.output_digest };
    }
  }
  return out;
}, { cfg, mainnet, devnetCase });

// The fallback: a page (and its worker) forced onto the portable build verifies the
// same vectors and headers.
const portablePage = await browser.newPage();
portablePage.on("console", (m) => log("portable page:", m.text()));
portablePage.on("pageerror", (e) => log("portable page error:", e.message));
await portablePage.goto(site.url + "/?kernel=portable");
await portablePage.waitForFunction(() => document.getElementById("status").textContent === "ready", null, { timeout: 60_000 });
const portable = await portablePage.evaluate(async ({ cfg, mainnet, devnetCase, tipHeader, simdDigests }) => {
  const { LightClient, vectorDigest, kernel } = window.tpow;
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail: detail === undefined ? "" : String(detail) });
  check("init({kernel: \"portable\"}) loads the portable build", kernel() === "portable", kernel());
  const worker = cfg.worker + "?kernel=portable";
  const workerKernel = await new Promise((resolve) => {
    const w = new Worker(worker, { type: "module" });
    w.onmessage = (e) => { w.terminate(); resolve(e.data.kernel ?? e.data.error); };
    w.postMessage({ id: 0, query: "kernel" });
  });
  check("workerUrl?kernel=portable loads the portable build in the worker", workerKernel === "portable", workerKernel);
  check("portable: devnet vector", vectorDigest("devnet", devnetCase.prev_id, devnetCase.template, devnetCase.nonce) === devnetCase.output_digest);
  check("portable: mainnet vector", vectorDigest("mainnet", mainnet.prev_id, mainnet.template, mainnet.nonce) === mainnet.output_digest);
  const cpu = await LightClient.create({ chain: "devnet", genesisTimeMs: cfg.genesis, workerUrl: worker, nodes: [cfg.honest], persist: false, gpu: false });
  const r = await cpu.sync();
  check("portable: sampled sync on the CPU worker", r.tip.height >= cfg.blocks && cpu.recent().every((x) => x.backend === "cpu-worker"), `${r.tip.height} ${r.passes} passes`);
  const hex = tipHeader;
  const h = { prevId: hex.slice(24, 88), template: hex.slice(0, 304),
    nonce: new DataView(Uint8Array.from(hex.slice(304, 320).match(/../g).map((b) => parseInt(b, 16))).buffer).getBigUint64(0, true).toString(),
    digest: hex.slice(320, 384) };
  const digests = {};
  for (const e of ["cpu-wasm", "cpu-worker"]) digests[e] = (await cpu.digestOn(e, h.prevId, h.template, h.nonce)).digest;
  check("portable: the simd128 page's tip header gets the same digest on both engines",
    Object.values(digests).every((d) => d === h.digest && d === simdDigests["cpu-wasm"]), JSON.stringify(digests));
  return { checks, kernel: kernel(), workerKernel, sampledCpu: { passes: r.passes, height: r.tip.height } };
}, { cfg, mainnet, devnetCase, tipHeader: result.tipHeader, simdDigests: result.digests });
result.checks.push(...portable.checks);
result.portable = { kernel: portable.kernel, workerKernel: portable.workerKernel, sampledCpu: portable.sampledCpu };

// Per kernel: one mainnet header (derivation + pass) on the page's thread and in
// the worker, median of RUNS after a warm-up; a cold sampled sync on the CPU worker.
if (BENCH) {
  result.kernels = {};
  for (const [k, p] of [["simd128", page], ["portable", portablePage]]) {
    result.kernels[k] = await p.evaluate(async ({ cfg, mainnet, k }) => {
      const { LightClient, kernel } = window.tpow;
      const worker = cfg.worker + (k === "portable" ? "?kernel=portable" : "");
      const mn = await LightClient.create({ chain: "mainnet", nodes: ["http://127.0.0.1:9"], persist: false, gpu: false, workerUrl: worker });
      const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
      const out = { kernel: kernel() };
      for (const e of ["cpu-wasm", "cpu-worker"]) {
        await mn.digestOn(e, mainnet.prev_id, mainnet.template, mainnet.nonce);
        const ms = [];
        let ok = true;
        for (let i = 0; i < cfg.runs; i++) {
          const d = await mn.digestOn(e, mainnet.prev_id, mainnet.template, mainnet.nonce);
          ms.push(d.ms);
          ok &&= d.digest === mainnet.output_digest;
        }
        out[e] = { medianMs: median(ms), minMs: Math.min(...ms), maxMs: Math.max(...ms), ok };
      }
      // Cold sampled syncs on the CPU: in the worker, then on the page's thread.
      for (const [name, workerUrl] of [["sampledCpuWorker", worker], ["sampledCpuWasm", undefined]]) {
        const c = await LightClient.create({ chain: "devnet", genesisTimeMs: cfg.genesis, workerUrl, nodes: [cfg.honest], persist: false, gpu: false });
        const t = performance.now();
        const r = await c.sync();
        out[name] = { ms: performance.now() - t, passes: r.passes, bytes: r.bytes, height: r.tip.height, backends: [...new Set(c.recent().map((x) => x.backend))] };
      }
      return out;
    }, { cfg, mainnet, k });
  }
}

await browser.close();
cleanup();
console.log(JSON.stringify(result, null, 2));
let failed = result.checks.filter((c) => !c.ok);
if (REQUIRE_WEBGPU && result.gpuBackend !== "web-gpu") failed.push({ name: "WebGPU required", detail: result.gpuError });
for (const c of result.checks) log(c.ok ? "ok  " : "FAIL", c.name, c.ok ? "" : c.detail);
if (failed.length) { log(failed.length, "check(s) failed"); process.exit(1); }
log("all", result.checks.length, "checks passed");
process.exit(0);
