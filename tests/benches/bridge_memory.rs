//! The bridge's memory per open browser terminal, with the WebSocket buffers it ships
//! with beside the library's defaults (128 KiB each), in one run.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p ptyd-tests --bench bridge_memory`

use anyhow::Result;
use ptyd_tests::bridge::{Bridge, WsClient};
use ptyd_tests::{rss_bytes, Daemon, DaemonOptions};

const SOCKETS: usize = 200;

async fn per_socket(daemon: &Daemon, args: &[&str]) -> Result<f64> {
    let mut all = vec!["--no-spawn-daemon"];
    all.extend_from_slice(args);
    let bridge = Bridge::start_with_env(daemon.socket(), &all, &[("RUST_LOG", "warn")]).await?;
    let mut sockets = Vec::new();
    // One terminal first, so lazily allocated state is not counted against the others.
    let id = bridge.create("").await?;
    sockets.push(bridge.connect(&id, None).await?);
    let before = rss_bytes(bridge.pid()).unwrap_or(0) as f64;
    for _ in 0..SOCKETS {
        let id = bridge.create("").await?;
        let mut ws: WsClient = bridge.connect(&id, None).await?;
        ws.send_input(b"echo ready\r").await?;
        ws.read_until("ready", ptyd_tests::TIMEOUT).await?;
        sockets.push(ws);
    }
    let after = rss_bytes(bridge.pid()).unwrap_or(0) as f64;
    for id in
        bridge.get("/api/terminals").await?.json()?["terminals"].as_array().into_iter().flatten()
    {
        if let Some(id) = id["id"].as_str() {
            bridge.delete(&format!("/api/terminals/{id}")).await?;
        }
    }
    Ok((after - before) / SOCKETS as f64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let daemon = Daemon::start(DaemonOptions::new().env("RUST_LOG", "warn").args([
        "--capacity",
        "1000",
        "--screen",
        "off",
    ]))
    .await?;
    let shipped = per_socket(&daemon, &[]).await?;
    println!("bridge RSS per open terminal ({SOCKETS} sockets):");
    println!("  {:>6.1} KiB with the shipped buffers", shipped / 1024.0);
    for (read, write) in [("2048", "2048"), ("8192", "8192"), ("131072", "131072")] {
        let kib =
            per_socket(&daemon, &["--ws-read-buffer", read, "--ws-write-buffer", write]).await?;
        println!(
            "  {:>6.1} KiB with --ws-read-buffer {read} --ws-write-buffer {write}",
            kib / 1024.0
        );
    }
    Ok(())
}
