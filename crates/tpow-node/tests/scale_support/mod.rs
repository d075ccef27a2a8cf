//! Helpers of `network_scale.rs`: a cluster of node processes with fixed p2p
//! ports (so a restarted node is found again at its address), a seeded random
//! generator and topology, node-log parsing, and the failure diagnostic.
//!
//! Every child is killed (SIGKILL) and reaped when the [`Cluster`] drops, on
//! every exit path including a panic; the nodes also get `--parent-pid`, so
//! they stop by themselves if the test process itself is killed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, good enough to draw a topology.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Node `i` dials `dials[i]`: 2 or 3 distinct others, no pair linked twice,
/// the whole graph connected (redrawn until all holds), and no node taking more
/// than `max_in` inbound connections from 127.0.0.1.
///
/// The inbound count is not the in-degree: a node dials each configured peer
/// twice when that peer is already listening as it starts (see
/// `network_scale.rs`, "Known node behaviour"), and both connections count. So a
/// link costs its target 2 when the target starts first (`start_pos`) or when
/// the dialler is restarted during the churn (`restarted`), else 1.
pub fn topology(rng: &mut Rng, n: usize, max_in: usize, start_pos: &[usize], restarted: &[usize]) -> Vec<Vec<usize>> {
    'draw: loop {
        let mut dials = vec![Vec::new(); n];
        let mut load = vec![0; n];
        let mut linked: HashSet<(usize, usize)> = HashSet::new();
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for &i in &order {
            let want = 2 + rng.below(2) as usize;
            let mut cands: Vec<usize> = (0..n).filter(|&j| j != i && !linked.contains(&(i.min(j), i.max(j)))).collect();
            rng.shuffle(&mut cands);
            for j in cands {
                let cost = if start_pos[j] < start_pos[i] || restarted.contains(&i) { 2 } else { 1 };
                if load[j] + cost > max_in {
                    continue;
                }
                dials[i].push(j);
                load[j] += cost;
                linked.insert((i.min(j), i.max(j)));
                if dials[i].len() == want {
                    break;
                }
            }
            if dials[i].len() < want {
                continue 'draw;
            }
            dials[i].sort();
        }
        let adj = undirected(&dials);
        if bfs(&adj, 0).iter().all(|d| *d != usize::MAX) {
            return dials;
        }
    }
}

fn undirected(dials: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); dials.len()];
    for (i, ds) in dials.iter().enumerate() {
        for &j in ds {
            adj[i].push(j);
            adj[j].push(i);
        }
    }
    adj
}

fn bfs(adj: &[Vec<usize>], from: usize) -> Vec<usize> {
    let mut dist = vec![usize::MAX; adj.len()];
    dist[from] = 0;
    let mut q = VecDeque::from([from]);
    while let Some(u) = q.pop_front() {
        for &v in &adj[u] {
            if dist[v] == usize::MAX {
                dist[v] = dist[u] + 1;
                q.push_back(v);
            }
        }
    }
    dist
}

/// A tip read from `/api/tip`.
#[derive(Clone, Debug, PartialEq)]
pub struct TipSample {
    pub height: u64,
    pub id: String,
    pub work: u128,
}

/// One node process slot: the same data dir and p2p port across restarts.
struct Slot {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    http: String,
    peer_id: String,
    /// Byte offset of node.log where each run starts, and when it was spawned.
    runs: Vec<(u64, u64)>,
    /// Most work seen at its tip, and where (for the no-regression check).
    max_work: Option<(u128, TipSample)>,
}

/// The 16 nodes of the test.
pub struct Cluster {
    slots: Vec<Slot>,
    dials: Vec<Vec<usize>>,
    miners: Vec<usize>,
    genesis_ms: u64,
    violations: Vec<String>,
    /// Duration of each sweep of `/api/tip` over all nodes.
    sweeps_ms: Vec<f64>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.kill9(i);
        }
    }
}

impl Cluster {
    /// Reserves a loopback port per node (bound and released: nodes listen on
    /// them, and again after a restart). Linux prefers odd ports for bind(0)
    /// and even ones for connect(), and a killed node's port stays reserved by
    /// its TIME_WAIT sockets, so no outgoing connection takes a port meanwhile.
    pub fn new(root: &Path, dials: &[Vec<usize>], miners: &[usize]) -> Cluster {
        let listeners: Vec<TcpListener> =
            (0..dials.len()).map(|_| TcpListener::bind("127.0.0.1:0").expect("reserve a port")).collect();
        let slots = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Slot {
                dir: root.join(format!("n{i:02}")),
                port: l.local_addr().expect("port").port(),
                child: None,
                http: String::new(),
                peer_id: String::new(),
                runs: Vec::new(),
                max_work: None,
            })
            .collect();
        drop(listeners);
        let genesis_ms = wall_us() / 1000;
        Cluster {
            slots,
            dials: dials.to_vec(),
            miners: miners.to_vec(),
            genesis_ms,
            violations: Vec::new(),
            sweeps_ms: Vec::new(),
        }
    }

    fn size(&self) -> usize {
        self.slots.len()
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}{i:02}", if self.miners.contains(&i) { "miner" } else { "relay" })
    }

    pub fn describe(&self) -> String {
        let hops = self.hops();
        let mut s = String::from("topology (node: dials -> ...; farthest hop count from each miner):\n");
        for (i, ds) in self.dials.iter().enumerate() {
            let names: Vec<String> = ds.iter().map(|&j| self.name(j)).collect();
            s += &format!("  {} (port {}): {}\n", self.name(i), self.slots[i].port, names.join(" "));
        }
        for &m in &self.miners {
            let far = hops[m].iter().max().copied().unwrap_or(0);
            s += &format!("  {}: farthest node {far} hops away\n", self.name(m));
        }
        s
    }

    /// Hop counts between every pair, over the undirected topology.
    pub fn hops(&self) -> Vec<Vec<usize>> {
        let adj = undirected(&self.dials);
        (0..self.size()).map(|i| bfs(&adj, i)).collect()
    }

    fn addr(&self, i: usize) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.slots[i].port)
    }

    /// Starts node `i` (first start or restart on the same dir and port) and
    /// waits until its HTTP API answers.
    pub fn start(&mut self, i: usize) {
        assert!(self.slots[i].child.is_none(), "{} already running", self.name(i));
        let peers: Vec<String> = self.dials[i].iter().map(|&j| self.addr(j)).collect();
        let listen = self.addr(i);
        let mine = self.miners.contains(&i);
        let genesis = self.genesis_ms;
        let name = self.name(i);
        let slot = &mut self.slots[i];
        std::fs::create_dir_all(&slot.dir).expect("data dir");
        let _ = std::fs::remove_file(slot.dir.join("http-addr"));
        let log_path = slot.dir.join("node.log");
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tpow-node"));
        cmd.args(["run", "--chain", "devnet", "--http", "127.0.0.1:0", "--no-web", "--p2p", &listen])
            .arg("--data-dir")
            .arg(&slot.dir)
            .arg("--genesis-time-ms")
            .arg(genesis.to_string());
        if mine {
            cmd.args(["--mine", "--threads", "1"]);
        }
        for p in &peers {
            cmd.arg("--peer").arg(p);
        }
        if cfg!(feature = "chat") {
            cmd.arg("--no-chat");
        }
        cmd.arg("--parent-pid").arg(std::process::id().to_string());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        cmd.env("RUST_LOG", "info,libp2p=warn,tpow_node::p2p=debug");
        slot.runs.push((offset, wall_us()));
        slot.child = Some(cmd.spawn().expect("spawn tpow-node"));
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let http = std::fs::read_to_string(slot.dir.join("http-addr")).unwrap_or_default();
            if !http.trim().is_empty() {
                slot.http = http.trim().to_string();
                if let Some((200, body)) = get(&slot.http, "/api/info") {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    slot.peer_id = v["peer_id"].as_str().unwrap_or_default().to_string();
                    return;
                }
            }
            if let Some(Ok(Some(status))) = slot.child.as_mut().map(|c| c.try_wait()) {
                panic!("{name} exited at start with {status}; log:\n{}", tail(&log_path, offset, 40));
            }
            assert!(Instant::now() < until, "{name} did not start; log:\n{}", tail(&log_path, offset, 40));
            sleep_ms(50);
        }
    }

    /// SIGKILL and reap (no cleanup by the node).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.slots[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn alive(&self, i: usize) -> bool {
        self.slots[i].child.is_some()
    }

    /// Every node's tip (None: down or not answering), checked for regressions:
    /// a node's total work never goes down, across restarts included.
    pub fn tips(&mut self) -> Vec<Option<TipSample>> {
        let t0 = Instant::now();
        let tips: Vec<Option<TipSample>> = (0..self.size()).map(|i| self.tip(i)).collect();
        self.sweeps_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        for (i, t) in tips.iter().enumerate() {
            let Some(t) = t else { continue };
            let name = self.name(i);
            let slot = &mut self.slots[i];
            match &slot.max_work {
                Some((w, seen)) if t.work < *w => self.violations.push(format!(
                    "{name}: tip went back from {} {} (work {w}) to {} {} (work {})",
                    seen.height, seen.id, t.height, t.id, t.work
                )),
                Some((w, _)) if t.work == *w => {}
                _ => slot.max_work = Some((t.work, t.clone())),
            }
        }
        tips
    }

    /// A sweep for the regression check only.
    pub fn poll_safety(&mut self) {
        let _ = self.tips();
    }

    fn tip(&self, i: usize) -> Option<TipSample> {
        if !self.alive(i) {
            return None;
        }
        let (status, body) = get(&self.slots[i].http, "/api/tip")?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(TipSample {
            height: v["height"].as_u64()?,
            id: v["id"].as_str()?.to_string(),
            work: v["total_work"].as_str()?.parse().ok()?,
        })
    }

    /// All nodes up and on one tip.
    pub fn converged(&self, tips: &[Option<TipSample>]) -> bool {
        let Some(Some(first)) = tips.first() else { return false };
        tips.iter().all(|t| t.as_ref().is_some_and(|t| t.id == first.id))
    }

    pub fn best_height(&mut self) -> u64 {
        self.tips().iter().flatten().map(|t| t.height).max().unwrap_or(0)
    }

    /// Remote addresses of node `i`'s peers, and whether it dialled each.
    fn peers(&self, i: usize) -> Option<Vec<(String, bool)>> {
        if !self.alive(i) {
            return None;
        }
        let (status, body) = get(&self.slots[i].http, "/api/peers")?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(
            v["peers"]
                .as_array()?
                .iter()
                .map(|p| (p["address"].as_str().unwrap_or_default().to_string(), p["outbound"] == true))
                .collect(),
        )
    }

    /// Configured links (i dials j) that are down.
    pub fn missing_links(&self) -> Vec<(usize, usize)> {
        let mut missing = Vec::new();
        for i in 0..self.size() {
            let peers = self.peers(i).unwrap_or_default();
            for &j in &self.dials[i] {
                let addr = self.addr(j);
                if !peers.iter().any(|(a, out)| *out && *a == addr) {
                    missing.push((i, j));
                }
            }
        }
        missing
    }

    pub fn all_links_up(&self) -> bool {
        self.missing_links().is_empty()
    }

    /// Polls every 250 ms until `cond` holds; past `deadline`, fails with the
    /// diagnostic.
    pub fn wait(
        &mut self,
        what: &str,
        deadline: Instant,
        mut cond: impl FnMut(&Cluster, &[Option<TipSample>]) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let tips = self.tips();
            if cond(self, &tips) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {:.0}s waiting for {what}\n{}",
                    started.elapsed().as_secs_f64(),
                    diagnose(self)
                );
            }
            sleep_ms(250);
        }
    }

    /// Best-chain ids of node `i`, heights `from..=to`.
    pub fn best_chain(&self, i: usize, to: u64) -> Vec<String> {
        let mut ids = Vec::new();
        let mut from = 0;
        while from <= to {
            let count = (to - from + 1).min(500);
            let path = format!("/api/headers?from={from}&count={count}&format=json");
            let (status, body) = get(&self.slots[i].http, &path).expect("headers");
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            for h in v["headers"].as_array().expect("headers") {
                ids.push(h["id"].as_str().expect("id").to_string());
            }
            from += count;
        }
        ids
    }

    pub fn id_at(&self, i: usize, height: u64) -> Option<String> {
        let (status, body) = get(&self.slots[i].http, &format!("/api/headers?from={height}&count=1&format=json"))?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (status == 200).then(|| v["headers"][0]["id"].as_str().map(str::to_string)).flatten()
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.slots[i].dir.join("node.log")).unwrap_or_default()
    }

    /// The log split by run (first start, then each restart).
    pub fn runs(&self, i: usize) -> Vec<String> {
        let bytes = std::fs::read(self.slots[i].dir.join("node.log")).unwrap_or_default();
        let starts: Vec<usize> = self.slots[i].runs.iter().map(|(o, _)| *o as usize).collect();
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let e = starts.get(k + 1).copied().unwrap_or(bytes.len()).min(bytes.len());
                String::from_utf8_lossy(&bytes[s.min(e)..e]).to_string()
            })
            .collect()
    }

    /// When node `i` was spawned, each time (µs since the epoch).
    pub fn spawns_us(&self, i: usize) -> Vec<u64> {
        self.slots[i].runs.iter().map(|r| r.1).collect()
    }

    /// When node `i` was last spawned (µs since the epoch).
    pub fn spawned_us(&self, i: usize) -> u64 {
        self.slots[i].runs.last().map(|r| r.1).unwrap_or(0)
    }

    /// The greatest height any node had committed by `t_us`, from the logs.
    pub fn network_height_at(&self, logs: &[NodeLog], t_us: u64) -> u64 {
        logs.iter().flat_map(|l| l.tips.iter()).filter(|t| t.at_us <= t_us).map(|t| t.height).max().unwrap_or(0)
    }

    /// (median, max) duration of a sweep over every node's `/api/tip`, in ms.
    pub fn sweep_ms(&self) -> (u64, u64) {
        let mut v = self.sweeps_ms.clone();
        (percentile(&mut v, 0.5) as u64, percentile(&mut v, 1.0) as u64)
    }

    /// Fails if any node's tip went back (API samples: total work never
    /// decreases; logs: a lower new tip only through a reorg).
    pub fn check_no_regression(&self) {
        let mut v = self.violations.clone();
        for i in 0..self.size() {
            let log = parse_log(&self.log_text(i));
            for w in log.tips.windows(2) {
                if w[1].height < w[0].height && w[1].reorged == 0 {
                    v.push(format!(
                        "{}: new tip {} {} after {} {} without a reorg",
                        self.name(i),
                        w[1].height,
                        w[1].id,
                        w[0].height,
                        w[0].id
                    ));
                }
            }
        }
        assert!(v.is_empty(), "tips went backwards:\n{}\n{}", v.join("\n"), diagnose(self));
    }
}

/// The first moment at or after `from_us` when every node's committed tip
/// (its last `new tip` line, or what it loaded at start) was one block, from
/// the logs (µs resolution); a node counts as unknown from a spawn until its
/// `loaded height` line.
pub fn log_reconvergence(c: &Cluster, from_us: u64) -> Option<u64> {
    let mut timelines: Vec<Vec<(u64, String)>> = Vec::new();
    for i in 0..c.size() {
        let spawns = c.spawns_us(i);
        let mut ev: Vec<(u64, String)> = spawns.iter().map(|s| (*s, String::new())).collect();
        for (k, text) in c.runs(i).iter().enumerate() {
            let log = parse_log(text);
            if let Some(l) = log.loaded {
                ev.push((l.at_us.max(spawns[k] + 1), l.id));
            }
            ev.extend(log.tips.iter().map(|t| (t.at_us, t.id.clone())));
        }
        ev.sort_by_key(|e| e.0);
        timelines.push(ev);
    }
    let mut times: Vec<u64> = timelines.iter().flatten().map(|e| e.0).filter(|t| *t >= from_us).collect();
    times.sort();
    times.dedup();
    times.into_iter().find(|&t| {
        let states: Vec<Option<&String>> =
            timelines.iter().map(|ev| ev.iter().rev().find(|e| e.0 <= t).map(|e| &e.1)).collect();
        states.iter().all(|s| s.is_some_and(|s| !s.is_empty() && Some(s) == states[0].as_ref().copied()))
    })
}

/// Each node's state, for a failure message: tip, peers (by name), missing
/// links, and the log tail of the nodes that are off the majority tip or
/// missing a link.
pub fn diagnose(c: &Cluster) -> String {
    let by_addr: HashMap<String, String> = (0..c.size()).map(|i| (c.addr(i), c.name(i))).collect();
    let tips: Vec<Option<TipSample>> = (0..c.size()).map(|i| c.tip(i)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in tips.iter().flatten() {
        *count.entry(t.id.as_str()).or_default() += 1;
    }
    let majority = count.iter().max_by_key(|(_, n)| **n).map(|(id, _)| id.to_string()).unwrap_or_default();
    let missing = c.missing_links();
    let mut s = String::from("nodes (tip height id work | peers: out> / <in, by name or address):\n");
    let mut tails = Vec::new();
    for (i, t) in tips.iter().enumerate() {
        let tip = match t {
            Some(t) => format!("{} {} {}", t.height, &t.id[..16], t.work),
            None if c.alive(i) => "NOT ANSWERING".into(),
            None => "DOWN".into(),
        };
        let peers: Vec<String> = c
            .peers(i)
            .unwrap_or_default()
            .iter()
            .map(|(a, out)| {
                let n = by_addr.get(a).cloned().unwrap_or_else(|| a.clone());
                if *out {
                    format!("{n}>")
                } else {
                    format!("<{n}")
                }
            })
            .collect();
        let lost: Vec<String> = missing.iter().filter(|(a, _)| *a == i).map(|(_, b)| c.name(*b)).collect();
        s += &format!(
            "  {} {} pid {:?} | {tip} | {}{}\n",
            c.name(i),
            c.slots[i].peer_id,
            c.slots[i].child.as_ref().map(|ch| ch.id()),
            peers.join(" "),
            if lost.is_empty() { String::new() } else { format!(" | LINKS DOWN to {}", lost.join(" ")) }
        );
        if t.as_ref().is_none_or(|t| t.id != majority) || !lost.is_empty() {
            tails.push(i);
        }
    }
    for i in tails {
        let path = c.slots[i].dir.join("node.log");
        s += &format!("--- {} log tail ({}):\n{}\n", c.name(i), path.display(), tail(&path, 0, 25));
    }
    s
}

fn tail(path: &Path, from: u64, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[(from as usize).min(bytes.len())..]).to_string();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A `new tip` (or `loaded height`) line of a node log.
#[derive(Clone, Debug)]
pub struct TipEvent {
    pub at_us: u64,
    pub height: u64,
    /// First 8 bytes, hex (what the node logs).
    pub id: String,
    pub reorged: u64,
}

/// What the test reads from a node log.
#[derive(Default)]
pub struct NodeLog {
    pub tips: Vec<TipEvent>,
    /// Ids (8-byte hex) of blocks this node mined.
    pub mined: HashSet<String>,
    /// The first `loaded height` line (the chain read from the database at start).
    pub loaded: Option<TipEvent>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

pub fn parse_log(text: &str) -> NodeLog {
    let mut out = NodeLog::default();
    for line in text.lines() {
        let Some(at_us) = line.split_whitespace().next().and_then(parse_rfc3339_us) else { continue };
        if line.contains(" new tip") {
            let (Some(h), Some(id)) = (field(line, "height"), field(line, "id")) else { continue };
            out.tips.push(TipEvent {
                at_us,
                height: h.parse().unwrap_or(0),
                id: id.to_string(),
                reorged: field(line, "reorged").and_then(|r| r.parse().ok()).unwrap_or(0),
            });
        } else if line.contains(" mined block") {
            if let Some(id) = field(line, "id") {
                out.mined.insert(id.to_string());
            }
        } else if out.loaded.is_none() {
            // "loaded height H (id) in S s"
            if let Some(rest) = line.split("loaded height ").nth(1) {
                let mut w = rest.split_whitespace();
                let h = w.next().and_then(|h| h.parse().ok());
                let id = w.next().map(|i| i.trim_matches(|c| c == '(' || c == ')').to_string());
                if let (Some(height), Some(id)) = (h, id) {
                    out.loaded = Some(TipEvent { at_us, height, id, reorged: 0 });
                }
            }
        }
    }
    out
}

/// `2026-11-30T07:42:07.123456Z` as µs since the epoch (UTC only, what
/// tracing-subscriber writes).
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mi, ss) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(6).collect();
    let us = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mi) * 60 + ss) as u64 * 1_000_000 + us as u64)
}

/// The q-quantile (nearest rank) of `v`; NaN when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn fmt_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// A GET with `Connection: close`; None if the node does not answer.
pub fn get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    crate::common::request(addr, "GET", path, None)
}
