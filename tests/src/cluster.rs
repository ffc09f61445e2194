//! A three-node NATS cluster with JetStream, on loopback, for fault tests.
//!
//! Each node has its own store (a temp dir kept across restarts) and fixed
//! client and route ports picked at start, so a node killed with SIGKILL
//! comes back on the same store and address, as a restarted server does.
//! [`NatsCluster::pause`] stops a node with SIGSTOP (a process that hangs:
//! its sockets stay open but nothing answers) until [`NatsCluster::resume`].
//! Settings follow `deploy/nats/cluster/` (`sync_interval: always`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{WAIT, spawn_until, tool, within};

/// One node's fixed addresses and store.
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// Three nats-servers in one cluster, killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    /// Every node's client URL, comma-separated (what services are given).
    pub urls: String,
}

/// A port that was free a moment ago: the cluster's route ports must be
/// known before any node starts, since every node lists all of them.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

impl NatsCluster {
    /// Starts three nodes and waits until each accepts clients.
    pub async fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitor_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("    nats-route://127.0.0.1:{port}"))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{\n  sync_interval: always\n  store_dir: \"{store}\"\n}}\n\
                 cluster {{\n  name: chaos\n  listen: 127.0.0.1:{route}\n  routes: [\n{routes}\n  ]\n}}\n",
                client = client_ports[i],
                monitor = monitor_ports[i],
                route = route_ports[i],
                store = store.display(),
                routes = routes.join("\n"),
            );
            std::fs::write(&config, text).expect("write node config");
            nodes.push(Node {
                name,
                client_port: client_ports[i],
                monitor_port: monitor_ports[i],
                config,
                child: None,
            });
        }
        let urls = nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            nodes,
            _dir: dir,
            urls,
        };
        for i in 0..3 {
            cluster.start_node(i).await;
        }
        cluster
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's name, as in its log lines (`n1`…).
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// (Re)starts node `node` on its store and waits until it accepts
    /// clients; returns when it did.
    pub async fn start_node(&mut self, node: usize) -> Instant {
        let entry = &mut self.nodes[node];
        assert!(entry.child.is_none(), "{} is already running", entry.name);
        let mut command = Command::new(tool("nats-server", "NOVA_NATS_SERVER"));
        command.arg("-c").arg(&entry.config);
        let (child, _) = spawn_until(command, &entry.name, "Server is ready").await;
        entry.child = Some(child);
        Instant::now()
    }

    /// Whether node `node` reports itself healthy on its monitoring port
    /// (`/healthz`: JetStream on, the meta leader known, and the streams and
    /// consumers it holds current, i.e. with leaders and caught up).
    pub async fn healthy(&self, node: usize) -> bool {
        let address = format!("127.0.0.1:{}", self.nodes[node].monitor_port);
        let ask = async {
            let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
            stream
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            Some(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"))
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), ask)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Waits (within `limit`) until node `node` is healthy; returns when.
    pub async fn wait_healthy(&self, node: usize, limit: std::time::Duration) -> Instant {
        within(
            &format!("{} to report healthy", self.nodes[node].name),
            limit,
            async {
                // Polled: the server offers no event to wait on.
                while !self.healthy(node).await {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        )
        .await;
        Instant::now()
    }

    /// SIGKILL: the node stops where it stands, as in a crash.
    pub async fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.start_kill();
            within("a killed node to exit", WAIT, child.wait())
                .await
                .expect("wait for node");
        }
    }

    /// Whether node `node` is running (possibly paused).
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// SIGSTOP: the node hangs with its connections open.
    pub fn pause(&self, node: usize) {
        self.signal(node, "-STOP");
    }

    /// SIGCONT after [`NatsCluster::pause`].
    pub fn resume(&self, node: usize) {
        self.signal(node, "-CONT");
    }

    fn signal(&self, node: usize, signal: &str) {
        let pid = self.nodes[node]
            .child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("{} is not running", self.nodes[node].name));
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (paused) process too.
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}
