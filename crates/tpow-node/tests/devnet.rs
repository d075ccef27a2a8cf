//! `tpow-node devnet` as a user runs it (the README's command).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{request, serial};

/// Kills the launcher (SIGKILL) on drop; its nodes follow it by themselves.
struct Launcher(std::process::Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port_block() -> u16 {
    // A free port from the OS; the devnet uses base..base+n and base+1000..base+1000+n.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = l.local_addr().expect("addr").port();
    if p > 60_000 {
        p - 10_000
    } else {
        p
    }
}

fn tip(addr: &str) -> Option<(u64, String)> {
    let (status, body) = request(addr, "GET", "/api/tip", None)?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    (status == 200).then(|| (v["height"].as_u64().unwrap_or(0), v["id"].as_str().unwrap_or("").to_string()))
}

#[test]
fn devnet_command_runs_connected_miners_and_they_die_with_it() {
    let _guard = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = free_port_block();
    let mut launcher = Launcher(
        Command::new(env!("CARGO_BIN_EXE_tpow-node"))
            .args(["devnet", "--nodes", "2", "--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(tmp.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("devnet"),
    );
    let urls = [format!("127.0.0.1:{base}"), format!("127.0.0.1:{}", base + 1)];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tips: Vec<Option<(u64, String)>> = urls.iter().map(|u| tip(u)).collect();
        if let [Some(a), Some(b)] = &tips[..] {
            if a.0 >= 4 && a == b {
                break;
            }
        }
        assert!(Instant::now() < deadline, "devnet did not converge: {tips:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // `--chat-nodes` defaults to 1: node 0 serves the model, node 1 only mines.
    if cfg!(feature = "chat") {
        let info = |u: &str| -> serde_json::Value {
            let (_, body) = request(u, "GET", "/api/info", None).expect("info");
            serde_json::from_slice(&body).expect("json")
        };
        let (first, second) = (info(&urls[0]), info(&urls[1]));
        assert_eq!(first["chat"]["backend"], "local", "{first}");
        assert_eq!(first["models"].as_array().map(Vec::len), Some(1), "{first}");
        assert!(second["chat"]["unavailable"].as_str().is_some_and(|w| w.contains("--no-chat")), "{second}");
    }
    let _ = launcher.0.kill();
    let _ = launcher.0.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while urls.iter().any(|u| tip(u).is_some()) {
        assert!(Instant::now() < deadline, "devnet nodes outlived their launcher");
        std::thread::sleep(Duration::from_millis(200));
    }
}
