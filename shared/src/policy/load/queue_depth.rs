//! A target's `queue_depth:` block: the JetStream consumers whose lag
//! (pending plus ack-pending messages, as KEDA's NATS JetStream scaler
//! reads it) ingest turns into `queue_depth` samples of the target. One
//! consumer as a map, or several as a list of maps. Same walker, same
//! rule: every problem is collected with its path.

use serde_json::Value;

use super::{Walker, join};
use crate::policy::{DEFAULT_LAG_POLL_SECS, QueueDepthSource};

const KEYS: &[&str] = &["stream", "consumer", "server_url", "poll_every"];

/// A JetStream stream or consumer name: no whitespace, dots, wildcards or
/// path separators (nats-server's rule).
fn is_jetstream_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

impl Walker {
    /// `targets.<name>.queue_depth`.
    pub(super) fn queue_depth(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<Vec<QueueDepthSource>> {
        match value {
            Value::Array(items) => {
                let before = self.problems.len();
                let sources: Vec<Option<QueueDepthSource>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.queue_depth_source(item, &format!("{path}[{i}]")))
                    .collect();
                if self.problems.len() > before {
                    return None;
                }
                let sources: Vec<QueueDepthSource> = sources.into_iter().flatten().collect();
                for (i, source) in sources.iter().enumerate() {
                    if sources[..i].iter().any(|s| {
                        s.instance() == source.instance() && s.server_url == source.server_url
                    }) {
                        self.problem(
                            &format!("{path}[{i}]"),
                            format!("consumer {} is listed twice", source.instance()),
                        );
                    }
                }
                (self.problems.len() == before).then_some(sources)
            }
            other => self.queue_depth_source(other, path).map(|s| vec![s]),
        }
    }

    fn queue_depth_source(&mut self, value: &Value, path: &str) -> Option<QueueDepthSource> {
        let before = self.problems.len();
        let map = self.map(value, path, KEYS)?;
        let name = |walker: &mut Walker, key: &str, example: &str| match map.get(key) {
            None => {
                walker.problem(
                    &join(path, key),
                    format!("required: the JetStream {key} to read, e.g. {example}"),
                );
                None
            }
            Some(v) => walker.string(v, &join(path, key)).and_then(|s| {
                if is_jetstream_name(s) {
                    Some(s.to_string())
                } else {
                    walker.problem(
                        &join(path, key),
                        format!(
                            "{s:?} is not a JetStream {key} name (no spaces, dots, *, > or slashes)"
                        ),
                    );
                    None
                }
            }),
        };
        let stream = name(self, "stream", "JOBS");
        let consumer = name(self, "consumer", "workers");
        let server_url = match map.get("server_url") {
            None => Some(None),
            Some(v) => self.string(v, &join(path, "server_url")).and_then(|url| {
                let schemes = ["nats://", "tls://", "ws://", "wss://"];
                if url.split(',').all(|u| schemes.iter().any(|s| u.trim().starts_with(s))) {
                    Some(Some(url.to_string()))
                } else {
                    self.problem(
                        &join(path, "server_url"),
                        format!("{url:?} is not a NATS URL: expected nats://host:4222 (or tls://, ws://, wss://), several comma-separated"),
                    );
                    None
                }
            }),
        };
        let poll_every_secs = match map.get("poll_every") {
            None => Some(DEFAULT_LAG_POLL_SECS),
            Some(v) => match self.secs(v, &join(path, "poll_every")) {
                Some(0) => {
                    self.problem(&join(path, "poll_every"), "expected at least 1 second");
                    None
                }
                other => other,
            },
        };
        if self.problems.len() > before {
            return None;
        }
        Some(QueueDepthSource {
            stream: stream?,
            consumer: consumer?,
            server_url: server_url?,
            poll_every_secs: poll_every_secs?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::from_yaml;

    fn load(block: &str) -> Result<Vec<crate::policy::QueueDepthSource>, Vec<String>> {
        let yaml = format!(
            "targets:\n  w:\n    rules: [g]\n    max: 9\n    backend: {{sim: {{initial: 1}}}}\n    queue_depth: {block}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {{condition: \"queue_depth > 10\", action: \"add 1 instance\"}}\n"
        );
        from_yaml(&yaml, "p.yaml")
            .map(|p| p.targets["w"].queue_depth.clone())
            .map_err(|e| e.problems().iter().map(ToString::to_string).collect())
    }

    /// (stream, consumer, server_url, poll_every_secs) of each source, or
    /// the start of each problem line.
    type Want =
        Result<Vec<(&'static str, &'static str, Option<&'static str>, u64)>, Vec<&'static str>>;

    #[test]
    fn blocks_load_or_name_every_problem() {
        let cases: &[(&str, Want)] = &[
            (
                "{stream: JOBS, consumer: workers}",
                Ok(vec![("JOBS", "workers", None, 10)]),
            ),
            (
                "[{stream: A, consumer: a, poll_every: 2s}, {stream: B, consumer: b, server_url: \"nats://u:p@q:4222\", poll_every: 30}]",
                Ok(vec![
                    ("A", "a", None, 2),
                    ("B", "b", Some("nats://u:p@q:4222"), 30),
                ]),
            ),
            (
                "{consumer: workers, poll_every: 0}",
                Err(vec![
                    "targets.w.queue_depth.stream: required: the JetStream stream to read, e.g. JOBS",
                    "targets.w.queue_depth.poll_every: expected at least 1 second",
                ]),
            ),
            (
                "{stream: \"a.b\", consumer: c, server_url: \"http://x\"}",
                Err(vec![
                    "targets.w.queue_depth.stream: \"a.b\" is not a JetStream stream name (no spaces, dots, *, > or slashes)",
                    "targets.w.queue_depth.server_url: \"http://x\" is not a NATS URL: expected nats://host:4222 (or tls://, ws://, wss://), several comma-separated",
                ]),
            ),
            (
                "{stream: A, consumer: a, credentials: /c.creds}",
                Err(vec!["targets.w.queue_depth.credentials: unknown field; "]),
            ),
            (
                "[{stream: A, consumer: a}, {stream: A, consumer: a}]",
                Err(vec![
                    "targets.w.queue_depth[1]: consumer A/a is listed twice",
                ]),
            ),
            (
                "{stream: A, consumer: a, every: 3}",
                Err(vec!["targets.w.queue_depth.every: unknown field; "]),
            ),
        ];
        for (block, want) in cases {
            let got = load(block);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    let got: Vec<_> = got
                        .iter()
                        .map(|s| {
                            (
                                s.stream.as_str(),
                                s.consumer.as_str(),
                                s.server_url.as_deref(),
                                s.poll_every_secs,
                            )
                        })
                        .collect();
                    assert_eq!(&got, want, "{block}");
                }
                (Err(got), Err(want)) => {
                    assert_eq!(got.len(), want.len(), "{block}: {got:?}");
                    for (g, w) in got.iter().zip(want) {
                        assert!(g.starts_with(w), "{block}: {g:?} should start with {w:?}");
                    }
                }
                (got, _) => panic!("{block}: unexpected {got:?}"),
            }
        }
    }
}
