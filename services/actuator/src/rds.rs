//! The RDS read-replica backend: a target's capacity is the number of read
//! replicas of one primary DB instance, through DescribeDBInstances,
//! CreateDBInstanceReadReplica and DeleteDBInstance; an operator's
//! `promote` is PromoteReadReplica.
//!
//! Replicas it creates are named `<primary>-replica-<n>`, taking the lowest
//! numbers no instance holds. A command is absolute, so every call starts
//! from what DescribeDBInstances reports and creates or deletes only the
//! difference; and a name is the same on every attempt, so a create that
//! reached RDS before its attempt failed (a timeout, a redelivery) answers
//! `DBInstanceAlreadyExists` on the next, which counts as done, instead of a
//! second replica.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::DbInstance;
use nova_shared::policy::RdsReplicasBackend;

use crate::backend::{Applied, BackendError, BackendErrorKind, Observation, unsupported};
use crate::connection_pool::PoolParameter;
use crate::ecs::{classify as classify_aws, sdk_call_error, sdk_config};

/// An RDS client for a region, optionally at another endpoint (moto, a VPC
/// endpoint), built like the ECS one.
pub async fn client(
    region: &str,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(&sdk_config(region, endpoint_url, call_timeout, credentials).await)
}

/// The read replicas of one primary.
pub struct RdsReplicaSet {
    client: aws_sdk_rds::Client,
    target: String,
    spec: RdsReplicasBackend,
    /// The primary's connection pool, whose value is the set's tier
    /// (boxed: most sets have none).
    pool: Option<Box<PoolParameter>>,
}

/// One replica of the primary, as DescribeDBInstances lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replica {
    id: String,
    /// `n` of `<primary>-replica-<n>`; none for a replica made elsewhere.
    number: Option<u32>,
    status: String,
}

/// What one DescribeDBInstances pass found.
#[derive(Debug, Clone, Default)]
struct Listing {
    /// Replicas of the primary, not being deleted.
    replicas: Vec<Replica>,
    /// Every instance identifier in the region, replicas being deleted
    /// included: a new replica may take none of them.
    taken: BTreeSet<String>,
}

impl Listing {
    fn observation(&self) -> Observation {
        Observation {
            desired: count(self.replicas.len()),
            running: Some(count(
                self.replicas
                    .iter()
                    .filter(|r| r.status == "available")
                    .count(),
            )),
            tier: None,
            fence: None,
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Days of automated backups a promoted replica keeps (the runbook's
/// `promote-read-replica --backup-retention-period 7`).
const PROMOTED_BACKUP_DAYS: i32 = 7;

/// Statuses of an instance on its way out: no longer capacity.
const GOING: &[&str] = &["deleting", "deleted"];

/// Error codes of the RDS API (its Query protocol) and what they mean here;
/// the codes every AWS API shares are [`classify_aws`]'s.
const CODES: &[(&str, BackendErrorKind)] = &[
    ("DBInstanceNotFound", BackendErrorKind::NotFound),
    ("DBInstanceNotFoundFault", BackendErrorKind::NotFound),
    ("DBParameterGroupNotFound", BackendErrorKind::NotFound),
    ("DBParameterGroupNotFoundFault", BackendErrorKind::NotFound),
    // Another change of the instance is under way (a modification, a
    // backup, a replica still being created): it may end.
    ("InvalidDBInstanceState", BackendErrorKind::Conflict),
    ("InvalidDBInstanceStateFault", BackendErrorKind::Conflict),
    ("DBInstanceAlreadyExists", BackendErrorKind::Conflict),
    // RDS has no room in the zone for the class now.
    (
        "InsufficientDBInstanceCapacity",
        BackendErrorKind::Unavailable,
    ),
    // Quotas and settings that only an operator changes.
    ("InstanceQuotaExceeded", BackendErrorKind::Invalid),
    ("StorageQuotaExceeded", BackendErrorKind::Invalid),
    ("InvalidParameterValue", BackendErrorKind::Invalid),
    ("InvalidParameterCombination", BackendErrorKind::Invalid),
    ("InvalidSubnet", BackendErrorKind::Invalid),
    ("DBSubnetGroupNotAllowedFault", BackendErrorKind::Invalid),
    ("KMSKeyNotAccessibleFault", BackendErrorKind::AccessDenied),
];

/// The kind of a failed RDS call: its RDS error code, else what any AWS
/// call's code, status or failure says.
fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> BackendErrorKind {
    error
        .code()
        .and_then(|code| CODES.iter().find(|(known, _)| *known == code))
        .map_or_else(|| classify_aws(error), |(_, kind)| *kind)
}

pub(crate) fn call_error<E>(
    target: &str,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&error);
    sdk_call_error("RDS", kind, target, operation, error)
}

/// Whether a failed call answered with `code`.
fn answered<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>, code: &str) -> bool {
    matches!(error, SdkError::ServiceError(_)) && error.code() == Some(code)
}

impl RdsReplicaSet {
    /// The replica set named in `spec`, for `target`.
    pub fn new(client: aws_sdk_rds::Client, target: &str, spec: &RdsReplicasBackend) -> Self {
        let pool = spec.connection_pool.as_ref().map(|pool| {
            Box::new(PoolParameter::new(
                client.clone(),
                target,
                &spec.region,
                pool,
            ))
        });
        RdsReplicaSet {
            client,
            target: target.to_string(),
            spec: spec.clone(),
            pool,
        }
    }

    /// How long a scale-down waits before it deletes.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.spec.drain_secs)
    }

    /// DescribeDBInstances over every page: the primary's replicas.
    async fn list(&self) -> Result<Listing, BackendError> {
        let instances: Vec<DbInstance> = self
            .client
            .describe_db_instances()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| call_error(&self.target, "DescribeDBInstances", e))?;
        let primary = &self.spec.primary;
        let Some(primary_arn) = instances
            .iter()
            .find(|i| i.db_instance_identifier() == Some(primary.as_str()))
            .map(|i| i.db_instance_arn().unwrap_or_default().to_string())
        else {
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "target {}: RDS DB instance {primary} not found in {}; create it, or name \
                     an existing instance as the backend's primary",
                    self.target, self.spec.region
                ),
            ));
        };
        let mut listing = Listing::default();
        for instance in &instances {
            let Some(id) = instance.db_instance_identifier() else {
                continue;
            };
            listing.taken.insert(id.to_string());
            // A replica in another region names its source by ARN.
            let source = instance.read_replica_source_db_instance_identifier();
            let of_primary = source
                .is_some_and(|s| s == primary || (!primary_arn.is_empty() && s == primary_arn));
            let status = instance.db_instance_status().unwrap_or("unknown");
            if of_primary && !GOING.contains(&status) {
                listing.replicas.push(Replica {
                    id: id.to_string(),
                    number: replica_number(primary, id),
                    status: status.to_string(),
                });
            }
        }
        Ok(listing)
    }

    /// What `listing` says, with the connection pool's value as the tier
    /// (DescribeDBParameters) when the set has a pool.
    async fn observed(&self, listing: &Listing) -> Result<Observation, BackendError> {
        let mut observation = listing.observation();
        if let Some(pool) = &self.pool {
            observation.tier = Some(pool.value().await?);
        }
        Ok(observation)
    }

    /// DescribeDBInstances: the number of replicas, and how many are
    /// available; DescribeDBParameters: the connection pool's value.
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        self.observed(&self.list().await?).await
    }

    /// Sets the connection pool's parameter to `value`, the tier a vertical
    /// rule moved the set to; the replicas are left as they are.
    pub async fn set_pool(&self, value: &str) -> Result<Applied, BackendError> {
        let Some(pool) = &self.pool else {
            return Err(unsupported(
                "rds_replicas",
                &format!(
                    "change a tier without a connection_pool (asked for {value}); give the backend one to raise max_connections"
                ),
            ));
        };
        let listing = self.list().await?;
        let raised = pool.set(value).await?;
        let tiered = |tier: String| Observation {
            tier: Some(tier),
            ..listing.observation()
        };
        Ok(Applied {
            before: Some(tiered(raised.before)),
            after: tiered(raised.after),
            response: raised.response,
        })
    }

    /// Creates or deletes replicas until there are `desired`; reports what
    /// DescribeDBInstances said before and after.
    pub async fn set_desired(&self, desired: u32) -> Result<Applied, BackendError> {
        let before = self.list().await?;
        let have = before.observation().desired;
        let primary = &self.spec.primary;
        let done = if desired > have {
            self.grow(&before, desired - have).await?
        } else if desired < have {
            self.shrink(&before, have - desired).await?
        } else {
            "nothing to change".to_string()
        };
        let after = self.observed(&self.list().await?).await?;
        let response = format!(
            "RDS {primary} read replicas {have} -> {} (available {}): {done}",
            after.desired,
            after.running.unwrap_or(0),
        );
        Ok(Applied {
            before: Some(self.observed(&before).await?),
            after,
            response,
        })
    }

    /// PromoteReadReplica of `replica`, with the runbook's 7 days of
    /// automated backups (a standalone instance needs its own): the set
    /// has one replica fewer once RDS has promoted it. An instance named
    /// `<primary>-replica-<n>` that is no longer the primary's replica was
    /// promoted by an earlier attempt (its call reached RDS, its answer was
    /// lost): done, not a second call. Any other name is not found, not
    /// retried. RDS takes minutes to promote; the answer reports the status
    /// DescribeDBInstances shows right after the call.
    pub async fn promote(&self, replica: &str) -> Result<Applied, BackendError> {
        let before = self.list().await?;
        let primary = &self.spec.primary;
        let listed = before.replicas.iter().any(|r| r.id == replica);
        let done = if listed {
            self.client
                .promote_read_replica()
                .db_instance_identifier(replica)
                .backup_retention_period(PROMOTED_BACKUP_DAYS)
                .send()
                .await
                .map_err(|e| call_error(&self.target, "PromoteReadReplica", e))?;
            format!("promoted {replica} to a standalone instance")
        } else if before.taken.contains(replica) && replica_number(primary, replica).is_some() {
            format!("{replica} is no longer a replica of {primary}: promoted already")
        } else {
            let replicas: Vec<&str> = before.replicas.iter().map(|r| r.id.as_str()).collect();
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "target {}: {replica} is not a read replica of {primary} (its replicas: {}); \
                     name one of them",
                    self.target,
                    list_or_none(&replicas)
                ),
            ));
        };
        let after = self.list().await?;
        let status = after
            .replicas
            .iter()
            .find(|r| r.id == replica)
            .map(|r| format!("; RDS still lists it as a replica, {}", r.status))
            .unwrap_or_default();
        let observation = self.observed(&after).await?;
        let response = format!(
            "RDS {primary} read replicas {} -> {} (available {}): {done}{status}",
            before.observation().desired,
            observation.desired,
            observation.running.unwrap_or(0),
        );
        Ok(Applied {
            before: Some(self.observed(&before).await?),
            after: observation,
            response,
        })
    }

    /// CreateDBInstanceReadReplica for `more` replicas, at the lowest
    /// numbers no instance holds.
    async fn grow(&self, listing: &Listing, more: u32) -> Result<String, BackendError> {
        let names: Vec<String> = (1..)
            .map(|n| self.spec.replica_id(n))
            .filter(|id| !listing.taken.contains(id))
            .take(more as usize)
            .collect();
        let mut created = Vec::new();
        let mut existed = Vec::new();
        for id in names {
            let sent = self
                .client
                .create_db_instance_read_replica()
                .db_instance_identifier(&id)
                .source_db_instance_identifier(&self.spec.primary)
                .set_db_instance_class(self.spec.instance_class.clone())
                .send()
                .await;
            match sent {
                Ok(_) => created.push(id),
                // An earlier attempt made it after this one listed: the
                // same name, so the same replica.
                Err(e) if answered(&e, "DBInstanceAlreadyExists") => existed.push(id),
                Err(e) => {
                    return Err(call_error(&self.target, "CreateDBInstanceReadReplica", e));
                }
            }
        }
        let mut done = format!("created {}", list_or_none(&created));
        if !existed.is_empty() {
            done.push_str(&format!("; already there: {}", existed.join(", ")));
        }
        Ok(done)
    }

    /// DeleteDBInstance (no final snapshot: a replica's data is the
    /// primary's) for `fewer` replicas, highest number first, after the
    /// drain delay. Replicas not named by this backend are not removed.
    async fn shrink(&self, listing: &Listing, fewer: u32) -> Result<String, BackendError> {
        let mut ours: Vec<(u32, &str)> = listing
            .replicas
            .iter()
            .filter_map(|r| r.number.map(|n| (n, r.id.as_str())))
            .collect();
        ours.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
        let victims: Vec<&str> = ours
            .into_iter()
            .take(fewer as usize)
            .map(|(_, id)| id)
            .collect();
        if !victims.is_empty() && self.spec.drain_secs > 0 {
            // Readers need time to move off a replica before it goes; the
            // lease and the message are held that long (backend::drain).
            tracing::info!(
                target = self.target,
                replicas = victims.join(", "),
                drain_secs = self.spec.drain_secs,
                "draining read replicas before deleting them"
            );
            tokio::time::sleep(self.drain()).await;
        }
        let mut deleted = Vec::new();
        for id in &victims {
            let sent = self
                .client
                .delete_db_instance()
                .db_instance_identifier(*id)
                .skip_final_snapshot(true)
                .send()
                .await;
            match sent {
                Ok(_) => deleted.push(*id),
                // Gone already (an earlier attempt deleted it): done.
                Err(e) if answered(&e, "DBInstanceNotFound") => deleted.push(*id),
                Err(e) => return Err(call_error(&self.target, "DeleteDBInstance", e)),
            }
        }
        let mut done = format!(
            "deleted {} after a {} s drain",
            list_or_none(&deleted),
            if deleted.is_empty() {
                0
            } else {
                self.spec.drain_secs
            }
        );
        let kept = fewer as usize - victims.len();
        if kept > 0 {
            done.push_str(&format!(
                "; {kept} replica(s) not named {}-replica-<n> were kept: NovaCron removes only replicas it names",
                self.spec.primary
            ));
        }
        Ok(done)
    }
}

/// `n` when `id` is `<primary>-replica-<n>`, a name this backend makes.
fn replica_number(primary: &str, id: &str) -> Option<u32> {
    let n = id.strip_prefix(primary)?.strip_prefix("-replica-")?;
    // "01" is not replica 1, and "+1" parses: neither is a name made here.
    if !n.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return None;
    }
    n.parse().ok()
}

fn list_or_none(ids: &[impl AsRef<str>]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_rds::error::ErrorMetadata;
    use aws_sdk_rds::operation::create_db_instance_read_replica::CreateDBInstanceReadReplicaError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    type CallError = SdkError<CreateDBInstanceReadReplicaError, HttpResponse>;

    fn service(code: &str, status: u16) -> CallError {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message(format!("what {code} says"))
            .build();
        SdkError::service_error(
            CreateDBInstanceReadReplicaError::generic(meta),
            HttpResponse::new(
                StatusCode::try_from(status).expect("a status"),
                SdkBody::empty(),
            ),
        )
    }

    #[test]
    fn rds_codes_are_classified_before_the_shared_ones() {
        use BackendErrorKind::*;
        let cases = [
            ("DBInstanceNotFound", 404, NotFound),
            ("DBParameterGroupNotFound", 404, NotFound),
            ("InvalidDBInstanceState", 400, Conflict),
            ("DBInstanceAlreadyExists", 400, Conflict),
            ("InsufficientDBInstanceCapacity", 400, Unavailable),
            ("InstanceQuotaExceeded", 400, Invalid),
            ("InvalidParameterCombination", 400, Invalid),
            ("KMSKeyNotAccessibleFault", 400, AccessDenied),
            // What every AWS API says, as for ECS.
            ("Throttling", 400, Throttled),
            ("InternalFailure", 500, Unavailable),
            ("AccessDenied", 403, AccessDenied),
            ("InvalidClientTokenId", 403, AccessDenied),
            ("SomethingNew", 503, Unavailable),
            ("SomethingNew", 400, Invalid),
        ];
        for (code, status, kind) in cases {
            assert_eq!(classify(&service(code, status)), kind, "{code} {status}");
        }
        assert_eq!(
            classify(&CallError::timeout_error("operation timeout")),
            TimedOut
        );
    }

    #[test]
    fn a_failed_call_is_one_line_naming_the_target_and_the_operation() {
        let error = call_error(
            "db",
            "CreateDBInstanceReadReplica",
            service("InstanceQuotaExceeded", 400),
        );
        assert_eq!(error.kind(), BackendErrorKind::Invalid);
        assert_eq!(
            error.to_string(),
            "target db: RDS CreateDBInstanceReadReplica failed: InstanceQuotaExceeded: what \
             InstanceQuotaExceeded says"
        );
    }

    #[test]
    fn only_names_made_here_have_numbers() {
        let cases = [
            ("db-replica-1", Some(1)),
            ("db-replica-12", Some(12)),
            ("db-replica-01", None),
            ("db-replica-+1", None),
            ("db-replica-", None),
            ("db-replica-1a", None),
            ("db-reader", None),
            ("dbx-replica-1", None),
            ("other-db-replica-1", None),
        ];
        for (id, want) in cases {
            assert_eq!(replica_number("db", id), want, "{id}");
        }
    }

    #[test]
    fn already_exists_is_recognised_only_as_an_answer() {
        assert!(answered(
            &service("DBInstanceAlreadyExists", 400),
            "DBInstanceAlreadyExists"
        ));
        assert!(!answered(
            &service("InvalidDBInstanceState", 400),
            "DBInstanceAlreadyExists"
        ));
        assert!(!answered(
            &CallError::timeout_error("operation timeout"),
            "DBInstanceAlreadyExists"
        ));
    }
}
