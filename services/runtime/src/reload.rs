//! Policy changes without a restart.
//!
//! A service gets its policy as a [`LivePolicy`]: the policy in force, with
//! its revision, and a way to wait for the next one. [`watch_file`] feeds
//! it: on SIGHUP, and when the file's content changes (read every
//! [`POLL_EVERY`]), it loads and validates the whole file. A valid file
//! whose revision differs replaces the policy; a bad one is refused, every
//! problem logged on a line of its own, counted as
//! `nova_policy_reloads_total{outcome="refused"}`, and the running policy
//! stays. A file that is the same as the last one read is not reported
//! again until it changes (or a SIGHUP asks).
//!
//! Polling, not inotify (`notify`): a read of a few kilobytes every 2 s
//! costs nothing, and follows the file however it is replaced (written in
//! place, renamed over by an editor, a Kubernetes ConfigMap's symlink swap),
//! where a watch on the file itself loses it at the first rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nova_shared::policy::{self, Policy, PolicyError, Revised};
use tokio::sync::watch;

use crate::telemetry::names;

/// How often the policy file is read for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The policy a service runs, and the ones that replace it.
#[derive(Debug, Clone)]
pub struct LivePolicy(watch::Receiver<Revised>);

impl LivePolicy {
    /// A policy that never changes: for embedding and tests.
    pub fn fixed(policy: impl Into<Revised>) -> Self {
        let (_, live) = channel(policy.into());
        live
    }

    /// The policy in force now.
    pub fn current(&self) -> Revised {
        self.0.borrow().clone()
    }

    /// Waits for the next policy and returns it; never completes for a
    /// policy that can no longer change (its [`PolicySender`] is gone), so
    /// it can sit in a `select!` beside the service's input.
    pub async fn changed(&mut self) -> Revised {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.0.borrow_and_update().clone()
    }
}

impl From<Arc<Policy>> for LivePolicy {
    fn from(policy: Arc<Policy>) -> Self {
        LivePolicy::fixed(policy)
    }
}

impl From<Policy> for LivePolicy {
    fn from(policy: Policy) -> Self {
        LivePolicy::fixed(policy)
    }
}

/// Replaces the policy of every [`LivePolicy`] made from it.
#[derive(Debug)]
pub struct PolicySender(watch::Sender<Revised>);

impl PolicySender {
    /// The policy in force.
    pub fn current(&self) -> Revised {
        self.0.borrow().clone()
    }

    /// Puts `policy` in force; receivers see it at their next wait.
    pub fn replace(&self, policy: Revised) {
        self.0.send_replace(policy);
    }

    /// Another receiver of the same policy.
    pub fn subscribe(&self) -> LivePolicy {
        LivePolicy(self.0.subscribe())
    }
}

/// A sender and a receiver of `initial` and the policies that follow it.
pub fn channel(initial: Revised) -> (PolicySender, LivePolicy) {
    let (tx, rx) = watch::channel(initial);
    (PolicySender(tx), LivePolicy(rx))
}

/// What one reload attempt did.
#[derive(Debug)]
pub enum Reloaded {
    /// A new revision is in force.
    Applied {
        /// The revision replaced.
        from: String,
        /// The revision now in force.
        to: String,
    },
    /// The file is valid and means what the policy in force means.
    Unchanged,
    /// The file is unreadable or invalid; the policy in force stays.
    Refused(PolicyError),
}

/// Loads `path`, validated whole, and puts it in force if its revision
/// differs from the one in force. Logs and counts the outcome: a refusal
/// as one error line per problem.
pub fn reload(path: &Path, sender: &PolicySender) -> Reloaded {
    let outcome = match policy::load_file(path) {
        Err(error) => Reloaded::Refused(error),
        Ok(policy) => {
            let next = Revised::new(Arc::new(policy));
            let from = sender.current().revision;
            if next.revision == from {
                Reloaded::Unchanged
            } else {
                let to = next.revision.clone();
                sender.replace(next);
                Reloaded::Applied { from, to }
            }
        }
    };
    let file = path.display().to_string();
    let running = sender.current().revision;
    let label = match &outcome {
        Reloaded::Applied { from, to } => {
            tracing::info!(file, from, to, "policy reloaded: revision {from} -> {to}");
            "applied"
        }
        Reloaded::Unchanged => {
            tracing::info!(file, revision = running, "policy file read: no change");
            "unchanged"
        }
        Reloaded::Refused(PolicyError::Invalid { problems, .. }) => {
            for problem in problems {
                tracing::error!(
                    file,
                    revision = running,
                    "policy reload refused, revision {running} stays: {file}: {problem}"
                );
            }
            "refused"
        }
        Reloaded::Refused(error) => {
            tracing::error!(
                file,
                revision = running,
                "policy reload refused, revision {running} stays: {error}"
            );
            "refused"
        }
    };
    metrics::counter!(names::POLICY_RELOADS, "outcome" => label).increment(1);
    outcome
}

/// Reloads `path` into `sender` on SIGHUP and whenever its content differs
/// from the last content read (checked every `poll`), until `shutdown`.
/// The SIGHUP handler is in place, and the file read, when this returns
/// (before the future is first polled), so a signal or a change that
/// follows is never missed.
pub fn watch_file(
    path: PathBuf,
    sender: PolicySender,
    poll: Duration,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let mut hangups = hangups();
    // What the service started with, so that an unchanged file reports nothing.
    let mut last = std::fs::read(&path).ok();
    async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let asked = tokio::select! {
                _ = &mut shutdown => return,
                _ = hangups.recv() => true,
                _ = ticks.tick() => false,
            };
            // A few kilobytes, read at most every `poll`: no need for a blocking pool.
            let content = std::fs::read(&path).ok();
            if asked {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the policy");
            } else if content == last {
                continue;
            }
            last = content;
            reload(&path, &sender);
        }
    }
}

/// SIGHUPs; one that never fires if the handler cannot be installed (then
/// the file's changes still reload, and a warning says SIGHUP will not).
fn hangups() -> Hangups {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Hangups(Some(signal)),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; policy file changes still reload");
            Hangups(None)
        }
    }
}

struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    async fn recv(&mut self) {
        if let Some(signal) = self.0.as_mut()
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "targets:\n  web: {rules: [q], max: 10, backend: {sim: {initial: 2}}}\nhorizontal_scaling_rules:\n  q:\n    scale_up: {condition: \"queue_depth > 1000\", action: \"add 5 workers\"}\n";

    fn start(dir: &Path) -> (PathBuf, PolicySender, LivePolicy) {
        let path = dir.join("policy.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let policy = policy::load_file(&path).unwrap();
        let (sender, live) = channel(Revised::from(policy));
        (path, sender, live)
    }

    #[test]
    fn a_bad_file_is_refused_with_every_problem_and_the_policy_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sender, live) = start(dir.path());
        let before = live.current().revision;
        let cases: &[(&str, &str, &str)] = &[
            ("the same file", GOOD, "unchanged"),
            (
                "two problems",
                &GOOD
                    .replace("max: 10", "max: ten")
                    .replace("queue_depth >", "queue_depth >>"),
                "refused 2",
            ),
            ("not YAML", "targets: [", "refused"),
            (
                "a valid change",
                &GOOD.replace("max: 10", "max: 20"),
                "applied",
            ),
        ];
        for (name, text, expected) in cases {
            let was = live.current().revision;
            std::fs::write(&path, text).unwrap();
            let got = match reload(&path, &sender) {
                Reloaded::Applied { from, to } => {
                    assert_eq!(
                        (from.as_str(), to.as_str()),
                        (was.as_str(), live.current().revision.as_str())
                    );
                    assert_ne!(from, to);
                    "applied".to_string()
                }
                Reloaded::Unchanged => "unchanged".to_string(),
                Reloaded::Refused(PolicyError::Invalid { problems, .. }) if problems.len() > 1 => {
                    format!("refused {}", problems.len())
                }
                Reloaded::Refused(_) => "refused".to_string(),
            };
            assert_eq!(got, *expected, "{name}");
            if got != "applied" {
                assert_eq!(live.current().revision, was, "{name}: the policy stays");
            }
        }
        assert_ne!(live.current().revision, before);
        assert_eq!(live.current().policy.targets["web"].max, 20);
    }

    #[tokio::test]
    async fn a_fixed_policy_never_changes() {
        let mut live = LivePolicy::fixed(policy::from_yaml(GOOD, "p.yaml").unwrap());
        let waited = tokio::time::timeout(Duration::from_millis(50), live.changed()).await;
        assert!(waited.is_err(), "no change ever comes");
    }

    /// The file's change is noticed by the poll; SIGHUP reloads a file
    /// whose change the (hour-long) poll would not see for an hour. A real
    /// signal to this test process: no other test here touches SIGHUP, and
    /// the handler is installed before it is sent.
    #[tokio::test]
    async fn a_change_of_the_file_and_a_sighup_reload_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let limit = Duration::from_secs(10);
        for (name, poll, hangup) in [
            ("file change", Duration::from_millis(50), false),
            ("SIGHUP", Duration::from_secs(3600), true),
        ] {
            let (path, sender, mut live) = start(dir.path());
            let (stop, stopped) = crate::shutdown::channel();
            let watcher = tokio::spawn(watch_file(path.clone(), sender, poll, stopped.signal()));
            std::fs::write(&path, GOOD.replace("max: 10", "max: 30")).unwrap();
            if hangup {
                // The handler was installed by `watch_file` above.
                let pid = std::process::id().to_string();
                let status = std::process::Command::new("kill")
                    .args(["-HUP", &pid])
                    .status()
                    .unwrap();
                assert!(status.success(), "{name}: kill -HUP");
            }
            let next = tokio::time::timeout(limit, live.changed())
                .await
                .unwrap_or_else(|_| panic!("{name}: no reload within {limit:?}"));
            assert_eq!(next.policy.targets["web"].max, 30, "{name}");
            stop.trigger();
            tokio::time::timeout(limit, watcher).await.unwrap().unwrap();
        }
    }
}
