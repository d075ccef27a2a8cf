//! `tpow-node devnet`: N mining nodes on 127.0.0.1 as child processes sharing one
//! genesis time, fully meshed, with a status line every few seconds. The first
//! `--chat-nodes` of them (default 1) serve chat; the rest only mine, so a
//! devnet does not hold N copies of the model.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Arguments of `tpow-node devnet`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevnetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// HTTP port of node 0; node i uses base+i for HTTP and base+1000+i for p2p.
    #[arg(long, default_value_t = 8645)]
    pub base_port: u16,
    /// Directory for the nodes' data (default: a fresh one under the temp dir).
    /// Reusing one resumes its chain.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Miner threads per node.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How many nodes serve chat: nodes 0..N-1 load the model (about 200 MB of
    /// memory each), the others run with --no-chat. 0: none.
    #[cfg(feature = "chat")]
    #[arg(long, default_value_t = 1)]
    pub chat_nodes: usize,
    /// Model file of the chat nodes (default: as `run`).
    #[cfg(feature = "chat")]
    #[arg(long, env = "TPOW_MODEL")]
    pub model: Option<PathBuf>,
    /// Chat nodes forward to this OpenAI-compatible server instead of loading a model.
    #[cfg(feature = "chat")]
    #[arg(long)]
    pub upstream: Option<String>,
}

/// Kills the children when dropped, whatever path leaves [`run`].
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// A minimal blocking HTTP GET of a loopback URL path, for the status line.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Runs the devnet until Ctrl-C.
pub fn run(args: DevnetArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the tpow-node binary")?;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tpow-devnet-{}", crate::time::now_ms())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let genesis_file = dir.join("genesis-time-ms");
    let genesis: u64 = match std::fs::read_to_string(&genesis_file) {
        Ok(s) => s.trim().parse().context("corrupt genesis-time-ms file")?,
        Err(_) => {
            let t = crate::time::now_ms();
            std::fs::write(&genesis_file, t.to_string()).context("writing genesis-time-ms")?;
            t
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc_flag(stop)?;
    }
    let mut children = Children(Vec::new());
    let mut urls = Vec::new();
    for i in 0..args.nodes {
        let http = format!("127.0.0.1:{}", args.base_port as usize + i);
        let p2p_port = args.base_port as usize + 1000 + i;
        let node_dir = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let log = std::fs::File::create(node_dir.join("node.log")).context("creating node.log")?;
        let mut cmd = Command::new(&exe);
        cmd.args(["run", "--chain", "devnet", "--mine"])
            .arg("--threads")
            .arg(args.threads.to_string())
            .arg("--data-dir")
            .arg(&node_dir)
            .args(["--http", &http])
            .arg("--p2p")
            .arg(format!("/ip4/127.0.0.1/tcp/{p2p_port}"))
            .arg("--genesis-time-ms")
            .arg(genesis.to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        #[cfg(feature = "chat")]
        if i < args.chat_nodes {
            if let Some(url) = &args.upstream {
                cmd.arg("--upstream").arg(url);
            }
            if let Some(model) = &args.model {
                // Absolute, in case the nodes are started elsewhere one day.
                cmd.arg("--model").arg(std::fs::canonicalize(model).unwrap_or_else(|_| model.clone()));
            }
        } else {
            cmd.arg("--no-chat");
        }
        for j in 0..i {
            cmd.arg("--peer").arg(format!("/ip4/127.0.0.1/tcp/{}", args.base_port as usize + 1000 + j));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        children.0.push(cmd.spawn().with_context(|| format!("starting node {i}"))?);
        #[cfg(feature = "chat")]
        let chat = if i < args.chat_nodes { "  chat: /v1/chat/completions" } else { "" };
        #[cfg(not(feature = "chat"))]
        let chat = "";
        println!("node-{i}: http://{http}/api/tip{chat}  (log: {})", node_dir.join("node.log").display());
        urls.push(http);
    }
    println!("devnet in {} with genesis time {genesis}; Ctrl-C stops all nodes", dir.display());
    // The app talks to every node (the first one serves it).
    let nodes: Vec<String> = urls.iter().map(|u| format!("http://{u}")).collect();
    if let Some(first) = nodes.first() {
        println!("\nopen the web app: {first}/?nodes={}\n", nodes.join(","));
    }
    let mut since = 0u32;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for (i, c) in children.0.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("node {i} exited with {status}; see its node.log");
            }
        }
        since += 1;
        if since == 25 {
            since = 0;
            let line: Vec<String> = urls
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let tip = http_get(u, "/api/tip")
                        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                        .map(|v| {
                            format!("{} {}", v["height"], v["id"].as_str().map_or("?", |s| s.get(..8).unwrap_or(s)))
                        })
                        .unwrap_or_else(|| "starting".into());
                    format!("node-{i}: {tip}")
                })
                .collect();
            println!("{}", line.join(" | "));
        }
    }
    println!("stopping {} nodes", children.0.len());
    Ok(())
}

/// Raises `flag` on Ctrl-C or SIGTERM (a small runtime just for the signals).
fn ctrlc_flag(flag: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("signal runtime")?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async {
            #[cfg(unix)]
            {
                let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            flag.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(())
}
