// End-to-end test of the tpow web app in headless Chromium against a real devnet.
//
//   node tests/e2e/run.mjs --node target/release/tpow-node --dist www/dist
//
// Builds nothing. Starts `tpow-node devnet --nodes 2` on free ports, serves the
// built app from --dist with a small static server (the page is pointed at the
// nodes with ?nodes=...; with --served-by-node it is opened from node 0 itself),
// then checks the chain view, the chat and the miner, saving a screenshot of
// each view into tests/e2e/screenshots/. Exit status 0 only if every check passed.
// The app ships a portable and a simd128 build of each module (scripts/build-web.sh):
// Chromium must get the simd128 ones; a page opened with ?kernel=portable (and
// ?gpu=0: the verifier on the CPU) must verify and mine with the portable ones.

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, readFileSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, resolve, normalize, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
    return acc;
  }, []),
);
const nodeBin = resolve(args.node ?? join(repo, 'target/release/tpow-node'));
const dist = resolve(args.dist ?? join(repo, 'www/dist'));
const servedByNode = args['served-by-node'] === 'true';
const shots = join(here, 'screenshots');
mkdirSync(shots, { recursive: true });

const log = (...m) => console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...m);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failures = 0;
function check(ok, what) {
  log(ok ? 'PASS' : 'FAIL', what);
  if (!ok) failures += 1;
  return ok;
}
async function until(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(500);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
}
async function getJson(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}
function freePortBlock(n) {
  // A block of n consecutive free ports (and +1000 for p2p), tried at random.
  const tryPort = (p) =>
    new Promise((res) => {
      const s = net.createServer().once('error', () => res(false)).once('listening', () => s.close(() => res(true)));
      s.listen(p, '127.0.0.1');
    });
  return (async () => {
    for (let t = 0; t < 50; t++) {
      const base = 20000 + Math.floor(Math.random() * 20000);
      let ok = true;
      for (let i = 0; i < n && ok; i++) ok = (await tryPort(base + i)) && (await tryPort(base + 1000 + i));
      if (ok) return base;
    }
    throw new Error('no free ports');
  })();
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };
function serveDir(dir) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    let file = join(dir, path);
    try {
      if (statSync(file).isDirectory()) file = join(file, 'index.html');
      const body = readFileSync(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

const base = await freePortBlock(2);
const nodes = [`http://127.0.0.1:${base}`, `http://127.0.0.1:${base + 1}`];
const dataDir = mkdtempSync(join(tmpdir(), 'tpow-e2e-'));
log(`devnet: ${nodeBin} on ${nodes.join(', ')}, data in ${dataDir}`);
const devnet = spawn(nodeBin, ['devnet', '--nodes', '2', '--base-port', String(base), '--data-dir', dataDir], {
  cwd: repo,
  stdio: ['ignore', 'pipe', 'pipe'],
  detached: true,
  env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
});
let devnetLog = '';
devnet.stdout.on('data', (d) => (devnetLog += d));
devnet.stderr.on('data', (d) => (devnetLog += d));

let server;
let browser;
async function cleanup() {
  try { await browser?.close(); } catch {}
  server?.close();
  try { process.kill(-devnet.pid, 'SIGINT'); } catch {}
  await sleep(1500);
  try { process.kill(-devnet.pid, 'SIGKILL'); } catch {}
  try { rmSync(dataDir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 }); } catch {}
}

try {
  for (const n of nodes) await until(`${n}/api/health`, async () => (await getJson(`${n}/api/health`)).status === 'ok', 120_000);
  log('devnet is up');
  let pageUrl;
  if (servedByNode) {
    pageUrl = `${nodes[0]}/?nodes=${nodes.join(',')}`;
  } else {
    server = await serveDir(dist);
    pageUrl = `http://127.0.0.1:${server.address().port}/?nodes=${encodeURIComponent(nodes.join(','))}`;
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  // Answers the page had to handle: listed, and expected ones (a node without chat
  // says 503 to chat requests) are not counted as console errors.
  const expected = [];
  page.on('response', (r) => {
    if (r.status() >= 400) {
      log(`page got HTTP ${r.status()} from ${r.url()}`);
      if (r.status() === 503 && /\/v1\//.test(r.url())) expected.push(r.url());
    }
  });
  log(`opening ${pageUrl}`);
  await page.goto(pageUrl);
  const kernelOf = (p) => p.evaluate(async () => {
    for (let i = 0; i < 100 && !window.wasmBindings; i++) await new Promise((r) => setTimeout(r, 100));
    return window.wasmBindings?.kernel();
  });
  const kernel = await kernelOf(page);
  check(kernel === 'simd128', `Chromium loads the app's simd128 build (kernel ${kernel})`);

  // ---- chain view
  const pageHeight = async () => Number.parseInt((await page.textContent('[data-testid=tip-height]')) ?? '', 10);
  const h0 = await until('a verified tip on the page', async () => (await pageHeight()) >= 1 && (await pageHeight()), 120_000);
  log(`page tip ${h0}`);
  // The page follows the node: at some moment both show the same height.
  const matched = await until('the page tip to match /api/tip', async () => {
    const tip = await getJson(`${nodes[0]}/api/tip`);
    const h = await pageHeight();
    return h === tip.height ? h : false;
  }, 60_000).catch((e) => (log(String(e)), false));
  check(matched !== false, `page tip height equals the node's /api/tip height (${matched})`);
  const grown = await until('the page tip to grow', async () => ((await pageHeight()) > (matched || h0) ? await pageHeight() : false), 60_000).catch(() => false);
  check(grown !== false, `page tip grows (${matched || h0} -> ${grown})`);
  const verified = await page.$$eval('[data-testid=headers] tr[data-status=verified]', (r) => r.map((x) => x.textContent));
  check(verified.length >= 3, `headers marked verified: ${verified.length}`);
  const failed = await page.$$eval('[data-testid=headers] tr[data-status=failed]', (r) => r.length);
  check(failed === 0, `no header marked failed (${failed})`);
  const engine = await page.textContent('[data-testid=engine]');
  log(`verifier engine: ${engine}; example row: ${verified[0]}`);
  // With an adapter, the page races WebGPU against the CPU on its first headers and
  // keeps the faster (which one wins depends on the machine: not asserted).
  const adapter = await page.evaluate(async () => !!(navigator.gpu && await navigator.gpu.requestAdapter()));
  if (adapter) {
    check(/, the faster here \(WebGPU \d+ ms, CPU \d+ ms on \d+ headers\)/.test(engine ?? ''),
      `the page raced WebGPU against the CPU and kept the faster: "${engine}"`);
  }
  // The mode follows the network: a short devnet is verified in full (mainnet is
  // always sampled: www/src/chain.rs SyncMode::choose, unit-tested there).
  const security = await page.textContent('[data-testid=security]');
  check(/every header's forward pass .*\(full sync\)/.test(security ?? ''), `a short devnet is synced in full: guarantee "${security}"`);
  const nodesText = await page.textContent('[data-testid=nodes]');
  check(nodesText.split('online').length - 1 === 2, `both nodes listed online: ${nodesText}`);
  await page.screenshot({ path: join(shots, 'chain.png'), fullPage: true });
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  // The phone page verifies on the CPU (?gpu=0): the simd128 kernel in the page;
  // sampled (?sync=sampled), the mode mainnet always uses.
  await phone.goto(`${pageUrl}&gpu=0&sync=sampled`);
  await until('the phone page to catch up', async () => (await phone.textContent('[data-testid=sync-text]'))?.includes('(100 %)'), 120_000);
  const phoneSecurity = await phone.textContent('[data-testid=security]');
  check((phoneSecurity ?? '').startsWith('2^-50 against an attacker with < 50 % of the work'),
    `a sampled sync shows the security level it verified to: "${phoneSecurity}"`);
  const phoneEngine = await phone.textContent('[data-testid=engine]');
  check(/CPU \(wasm simd128/.test(phoneEngine ?? ''), `?gpu=0 verifies every header on the CPU with the simd128 kernel (${phoneEngine})`);
  const phoneFailed = await phone.$$eval('[data-testid=headers] tr[data-status=failed]', (r) => r.length);
  check(phoneFailed === 0, `simd128 verifier: no header marked failed (${phoneFailed})`);
  const phoneWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(phoneWidth <= 390, `no sideways scrolling of the page on a phone (width ${phoneWidth})`);
  await phone.screenshot({ path: join(shots, 'chain-phone.png'), fullPage: true });
  await phone.close();

  // ---- chat
  await page.click('#tab-chat');
  await until('a model in the chat picker', async () => (await page.$$('[data-testid=chat-model] option')).length > 0, 60_000);
  const choice = await page.$eval('[data-testid=chat-model]', (s) => s.options[s.selectedIndex]?.textContent);
  log(`chat model: ${choice}`);
  // The answer's quality, checked with greedy decoding (temperature 0 in the
  // settings; by default the app sends the model's recommended sampling).
  const placeholder = await page.getAttribute('[data-testid=chat-temperature]', 'placeholder');
  check(/recommended/.test(placeholder ?? ''), `temperature defaults to the model's recommendation (${placeholder})`);
  await page.click('details.chat-settings > summary');
  await page.fill('[data-testid=chat-temperature]', '0');
  await page.fill('#chat-input', 'What is the capital of France? Answer in one sentence.');
  // Streaming is proven by the page's own DOM updates, recorded as they happen
  // (a MutationObserver), not by sampling the text between polls: a fast machine
  // may finish a short answer between two polls.
  await page.evaluate(() => {
    window.__answerLengths = [];
    new MutationObserver(() => {
      const all = document.querySelectorAll('li.msg.assistant [data-testid=answer]');
      const el = all[all.length - 1];
      if (!el) return;
      const n = (el.textContent ?? '').replace('▍', '').length;
      const seen = window.__answerLengths;
      if (n > 0 && seen[seen.length - 1] !== n) seen.push(n);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await page.click('[data-testid=chat-send]');
  const answered = await until('the streamed answer to finish', async () => {
    const last = page.locator('li.msg.assistant').last();
    const text = (await last.locator('[data-testid=answer]').textContent()) ?? '';
    return (await last.getAttribute('data-streaming')) === 'false' ? text : false;
  }, 180_000).catch((e) => (log(String(e)), ''));
  check(/Paris/.test(answered), `greedy chat answer names Paris: ${JSON.stringify(answered.replace('▍', '').slice(0, 120))}`);
  const lengths = await page.evaluate(() => window.__answerLengths);
  check(lengths.length >= 2, `answer arrived in pieces (text lengths rendered: ${lengths.join(',')})`);
  const receipt = (await page.locator('li.msg.assistant').last().locator('[data-testid=receipt]').textContent()) ?? '';
  check(/signature valid/.test(receipt), `receipt checked in the browser: ${receipt}`);
  await page.screenshot({ path: join(shots, 'chat.png'), fullPage: true });

  // ---- miner
  await page.click('#tab-miner');
  const key = (await page.textContent('[data-testid=miner-key]')).trim();
  check(/^[0-9a-f]{64}$/.test(key), `miner key made in the browser: ${key}`);
  const sharesAt = async () => {
    const m = await getJson(`${nodes[0]}/api/miners`);
    return m.miners.find((e) => e.miner === key)?.shares ?? 0;
  };
  const before = await sharesAt();
  check(before === 0, `no shares before starting (${before})`);
  await page.click('[data-testid=miner-toggle]');
  const got = await until('accepted shares at the node', async () => ((await sharesAt()) >= 3 ? await sharesAt() : false), 120_000).catch((e) => (log(String(e)), 0));
  check(got >= 3, `node /api/miners counts accepted shares for the page's key (${got})`);
  await sleep(2000);
  const stats = await page.$$eval('.stats div', (d) => d.map((x) => x.textContent).join(' | '));
  log(`miner panel: ${stats}`);
  await page.screenshot({ path: join(shots, 'miner.png'), fullPage: true });
  await page.click('[data-testid=miner-toggle]');
  check((await page.textContent('[data-testid=miner-status]')) === 'stopped', 'miner shows stopped');
  await sleep(3000);
  const afterStop = await sharesAt();
  await sleep(8000);
  const later = await sharesAt();
  check(later === afterStop, `no shares after stopping (${afterStop} -> ${later})`);

  // ---- the CPU miner: the worker loads the simd128 module, its shares are accepted
  const mineOnCpu = async (p, label) => {
    await p.click('#tab-miner');
    await p.selectOption('[data-testid=miner-backend]', 'cpu');
    const start = await sharesAt();
    await p.click('[data-testid=miner-toggle]');
    const engineText = async () => p.$$eval('.stats div', (d) => d.map((x) => x.textContent).join(' | '));
    const engineOk = await until(`the ${label} CPU miner's engine`, async () => (await engineText()).includes(`CPU (wasm ${label})`), 60_000).catch(() => false);
    const shares = await until(`shares from the ${label} CPU miner`, async () => ((await sharesAt()) > start ? await sharesAt() : false), 90_000).catch(() => false);
    log(`${label} CPU miner panel: ${await engineText()}`);
    await p.click('[data-testid=miner-toggle]');
    check(engineOk !== false, `the CPU miner's worker runs the ${label} kernel`);
    check(shares !== false, `the ${label} CPU miner's shares are accepted (${start} -> ${shares})`);
  };
  await mineOnCpu(page, 'simd128');

  // ---- the fallback: the portable modules, forced
  const portable = await context.newPage();
  portable.on('pageerror', (e) => consoleErrors.push(String(e)));
  await portable.goto(`${pageUrl}&kernel=portable&gpu=0`);
  const pk = await kernelOf(portable);
  check(pk === 'portable', `?kernel=portable loads the portable build (kernel ${pk})`);
  await until('the portable page to catch up', async () => (await portable.textContent('[data-testid=sync-text]'))?.includes('(100 %)'), 120_000).catch((e) => log(String(e)));
  const pEngine = await portable.textContent('[data-testid=engine]');
  const pVerified = await portable.$$eval('[data-testid=headers] tr[data-status=verified]', (r) => r.length);
  const pFailed = await portable.$$eval('[data-testid=headers] tr[data-status=failed]', (r) => r.length);
  check(/CPU \(wasm portable/.test(pEngine ?? '') && pVerified >= 3 && pFailed === 0,
    `the portable verifier checks the headers (${pEngine}; ${pVerified} verified, ${pFailed} failed)`);
  await mineOnCpu(portable, 'portable');
  await portable.close();

  const unexpected = consoleErrors.filter((e) => !(expected.length && /503/.test(e)));
  check(unexpected.length === 0, `no errors in the page console${unexpected.length ? ': ' + unexpected.slice(0, 5).join(' / ') : ''}`);
} catch (e) {
  failures += 1;
  log('FAIL', e.stack ?? String(e));
  log('devnet output (tail):\n' + devnetLog.slice(-3000));
} finally {
  await cleanup();
}
log(failures === 0 ? 'all end-to-end checks passed' : `${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
