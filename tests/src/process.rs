//! Services as separate processes: the workspace's own binaries
//! (`nova-arbiter`, `nova-actuator`, ...), started with a policy file and a
//! NATS URL, killed with SIGKILL on demand and on drop. Their stderr is kept
//! line by line, so a test can read what an operator would see.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nova_shared::wire::Stage;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where cargo put the workspace's binaries: beside the running test's
/// `deps/` directory. `scripts/test.sh` builds them before the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the service binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The binary of a stage.
pub fn stage_binary(stage: Stage) -> PathBuf {
    binary(&format!("nova-{}", stage.as_str()))
}

/// One service process, killed on drop.
pub struct ServiceProcess {
    child: Child,
    /// Every line the process wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Told of every new stderr line.
    new_line: Arc<tokio::sync::Notify>,
}

impl ServiceProcess {
    /// Starts `program` with `args`; `env` is added to a cleaned
    /// environment (no AWS variables of the test's own, no IMDS lookups).
    pub fn spawn(program: PathBuf, args: &[String], env: &[(&str, &str)]) -> ServiceProcess {
        let mut command = Command::new(&program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") || key.starts_with("NOVA_") {
                command.env_remove(key);
            }
        }
        // The SDK's default chain would ask the EC2 metadata address, which
        // is not ours to contact; the test says what credentials exist.
        command
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/novacron-test/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/novacron-test/credentials",
            )
            .env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(tokio::sync::Notify::new());
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let (sink, notify) = (stderr.clone(), new_line.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("stderr lines").push(line);
                notify.notify_waiters();
            }
        });
        ServiceProcess {
            child,
            stderr,
            new_line,
        }
    }

    /// A stage's binary on `nats_url` with `policy`, plus `extra` flags.
    pub fn stage(
        stage: Stage,
        nats_url: &str,
        policy: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        let mut args = vec![
            "--nats-url".to_string(),
            nats_url.to_string(),
            "--policy".to_string(),
            policy.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::spawn(stage_binary(stage), &args, env)
    }

    /// Sends SIGHUP (the policy reload signal).
    pub fn hang_up(&self) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP {pid}");
    }

    /// SIGKILL, as a crash: nothing is finished, nothing acked.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits (within `limit`) for the process to end on its own.
    pub async fn wait_exit(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        crate::within("the process to exit", limit, self.child.wait())
            .await
            .expect("wait for the process")
    }

    /// Waits (within [`crate::WAIT`]) for a stderr line containing `needle`.
    pub async fn wait_line(&self, needle: &str) -> String {
        crate::within(&format!("a log line with {needle:?}"), crate::WAIT, async {
            loop {
                let notified = self.new_line.notified();
                if let Some(line) = self.lines_with(needle).into_iter().next() {
                    return line;
                }
                notified.await;
            }
        })
        .await
    }

    /// The stderr lines so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.stderr
            .lock()
            .expect("stderr lines")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}
