//! Decision order at the backend, whatever the number of actuators.
//!
//! Actuator replicas share one durable consumer, so two of them can hold
//! commands for the same target at once (seq 3 here, seq 4 there), and a
//! redelivery can hand out a command again while its first delivery is still
//! at work. Each command is absolute, so applying them in decision order is
//! always right and applying an older one after a newer one is always wrong.
//!
//! The mechanism is a per-target lease in the target's [`CapacityRecord`]
//! (KV `nova_capacity`), taken and released by compare-and-set on the
//! record's revision and held across the backend call:
//!
//! | the record says                                        | claim for command `seq`     |
//! |--------------------------------------------------------|-----------------------------|
//! | `applied_seq` or `claimed_seq` is newer than `seq`     | [`Claim::Superseded`]       |
//! | `applied_seq == seq` (the command was applied)          | [`Claim::AlreadyApplied`]   |
//! | a live lease (on `seq` itself, or on an older command)  | [`Claim::Wait`] until it ends |
//! | otherwise (no lease, or an expired one)                | [`Claim::Take`]             |
//!
//! `claimed_seq` is a high-water mark that never goes down, even when a
//! call fails or its lease expires: a call that timed out may still have
//! reached the backend, so an older command must never follow it. The
//! holder of a newer command that dies is replaced by the redelivery of that
//! same command once its lease expires, never by an older one.
//!
//! A command that must wait behind an older command's live lease raises the
//! record's `wanted_seq` (a high-water mark) before it waits: a holder that
//! walks a gradual plan (`crate::gradual`) checks it between steps and stops
//! at the step it reached, so the newer decision does not wait out the
//! whole walk. `wanted_seq` changes no row of the table above.
//!
//! Why a lease and not routing each target to one replica (partitions, or
//! JetStream's pinned-client groups): routing needs a membership protocol
//! and still hands a target over while the old owner may be mid-call, which
//! is the moment that matters; the lease covers that moment directly, works
//! with any number of replicas and no configuration, and lets replicas
//! share the load target by target. Its limit: a holder paused for longer
//! than its lease (the call has a deadline inside it) could act late; the
//! lease is sized at the call's deadline plus [`LEASE_MARGIN_MS`] and
//! replicas' clocks must agree within that margin.

use crate::wire::{CapacityRecord, Lease};

/// Added to the actuator's call deadline to size a lease: covers the KV
/// round trips around the call and clock differences between replicas.
pub const LEASE_MARGIN_MS: i64 = 2_000;

/// What an actuator may do with a command, given the target's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Take the lease and call the backend; `attempt` counts backend
    /// attempts for this command, this one included.
    Take {
        /// This attempt's number, from 1.
        attempt: u32,
    },
    /// The command was applied already (a redelivery).
    AlreadyApplied,
    /// A newer command was applied, or is being or was being applied.
    Superseded {
        /// The newer command's sequence.
        by: u64,
    },
    /// Another delivery holds the lease (an older command, or this one
    /// delivered twice); try again after `until_ms` at the latest.
    Wait {
        /// The command being applied.
        holder: u64,
        /// When its lease ends, unix ms.
        until_ms: i64,
    },
}

/// Decides the claim of command `seq` on `record` at wall-clock `now_ms`.
pub fn claim(record: Option<&CapacityRecord>, seq: u64, now_ms: i64) -> Claim {
    let Some(record) = record else {
        return Claim::Take { attempt: 1 };
    };
    let newest = record.applied_seq.max(record.claimed_seq);
    if newest > seq {
        return Claim::Superseded { by: newest };
    }
    if record.applied_seq == seq && seq > 0 {
        return Claim::AlreadyApplied;
    }
    if let Some(lease) = record.lease.as_ref().filter(|l| l.expires_ms > now_ms) {
        return Claim::Wait {
            holder: record.claimed_seq,
            until_ms: lease.expires_ms,
        };
    }
    let attempt = if record.claimed_seq == seq {
        record.attempts.saturating_add(1)
    } else {
        1
    };
    Claim::Take { attempt }
}

/// `record` with the lease on command `seq` taken by `owner` until `expires_ms`.
pub fn take(
    record: &CapacityRecord,
    seq: u64,
    decision_id: &str,
    owner: &str,
    expires_ms: i64,
    attempt: u32,
) -> CapacityRecord {
    CapacityRecord {
        claimed_seq: seq,
        attempts: attempt,
        lease: Some(Lease {
            decision_id: decision_id.to_string(),
            owner: owner.to_string(),
            expires_ms,
            extra: Default::default(),
        }),
        ..record.clone()
    }
}

/// Whether `record` still carries `owner`'s lease on command `seq`: the
/// holder checks it before writing the outcome, so an actuator that lost
/// its lease (it expired and another took the command over) leaves the
/// record to the new holder.
pub fn holds(record: &CapacityRecord, seq: u64, owner: &str) -> bool {
    record.claimed_seq == seq && record.lease.as_ref().is_some_and(|l| l.owner == owner)
}

/// `record` with its holder's lease lengthened to `expires_ms` (never
/// shortened): the holder renews while it waits on a backend that takes
/// long to settle, so the lease stays short for a holder that dies.
pub fn extend(record: &CapacityRecord, expires_ms: i64) -> CapacityRecord {
    let mut extended = record.clone();
    if let Some(lease) = &mut extended.lease {
        lease.expires_ms = lease.expires_ms.max(expires_ms);
    }
    extended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        applied: u64,
        claimed: u64,
        lease_until: Option<i64>,
        attempts: u32,
    ) -> CapacityRecord {
        CapacityRecord {
            target: "w".into(),
            desired: 5,
            applied_seq: applied,
            claimed_seq: claimed,
            attempts,
            lease: lease_until.map(|expires_ms| Lease {
                decision_id: "d".into(),
                owner: "a".into(),
                expires_ms,
                extra: Default::default(),
            }),
            backend: "sim".into(),
            ..Default::default()
        }
    }

    #[test]
    fn claims() {
        let now = 10_000;
        let cases: [(&str, Option<CapacityRecord>, u64, Claim); 11] = [
            ("no record yet", None, 1, Claim::Take { attempt: 1 }),
            (
                "next after applied",
                Some(record(3, 3, None, 1)),
                4,
                Claim::Take { attempt: 1 },
            ),
            (
                "applied is newer",
                Some(record(5, 5, None, 1)),
                4,
                Claim::Superseded { by: 5 },
            ),
            (
                "newer in flight",
                Some(record(3, 5, Some(now + 1), 1)),
                4,
                Claim::Superseded { by: 5 },
            ),
            (
                "newer claimed, its lease expired: still newer",
                Some(record(3, 5, Some(now - 1), 1)),
                4,
                Claim::Superseded { by: 5 },
            ),
            (
                "newer claimed and failed (lease released): still newer",
                Some(record(3, 5, None, 1)),
                4,
                Claim::Superseded { by: 5 },
            ),
            (
                "this one applied",
                Some(record(4, 4, None, 1)),
                4,
                Claim::AlreadyApplied,
            ),
            (
                "older in flight: wait for it",
                Some(record(2, 3, Some(now + 500), 1)),
                4,
                Claim::Wait {
                    holder: 3,
                    until_ms: now + 500,
                },
            ),
            (
                "this one in flight elsewhere: wait",
                Some(record(3, 4, Some(now + 500), 1)),
                4,
                Claim::Wait {
                    holder: 4,
                    until_ms: now + 500,
                },
            ),
            (
                "older holder died, lease expired: take over",
                Some(record(2, 3, Some(now), 1)),
                4,
                Claim::Take { attempt: 1 },
            ),
            (
                "retry of this one after a failure counts the attempt",
                Some(record(3, 4, None, 2)),
                4,
                Claim::Take { attempt: 3 },
            ),
        ];
        for (name, record, seq, want) in cases {
            assert_eq!(claim(record.as_ref(), seq, now), want, "{name}");
        }
    }

    #[test]
    fn take_then_hold() {
        let before = record(3, 3, None, 1);
        let taken = take(&before, 4, "d4", "me", 99, 1);
        assert_eq!(taken.claimed_seq, 4);
        assert!(holds(&taken, 4, "me"));
        assert!(!holds(&taken, 4, "other"));
        assert!(!holds(&taken, 3, "me"));
        assert_eq!(taken.applied_seq, 3, "taking changes nothing applied");
        assert_eq!(claim(Some(&taken), 3, 0), Claim::Superseded { by: 4 });
    }

    #[test]
    fn extending_keeps_the_holder_and_never_shortens() {
        let taken = take(&record(3, 3, None, 1), 4, "d4", "me", 100, 1);
        let cases = [(150, 150), (100, 100), (50, 100)];
        for (asked, expires) in cases {
            let extended = extend(&taken, asked);
            assert!(holds(&extended, 4, "me"), "asked {asked}");
            assert_eq!(extended.lease.as_ref().map(|l| l.expires_ms), Some(expires));
            assert_eq!(
                claim(Some(&extended), 5, expires - 1),
                Claim::Wait {
                    holder: 4,
                    until_ms: expires
                }
            );
        }
        let free = record(3, 3, None, 1);
        assert_eq!(extend(&free, 500), free, "no lease, nothing to extend");
    }
}
