//! The RDS instance-class backend: one DB instance whose class moves along
//! the bound vertical rules' ladder, through DescribeDBInstances and
//! ModifyDBInstance with `ApplyImmediately` (the runbook's db.r5.large ->
//! db.r5.xlarge -> db.r5.2xlarge). Its capacity is the one instance.
//!
//! A command is absolute: a class already set, or already pending on the
//! instance (a modification RDS has accepted and not finished), is not
//! asked for again, so a redelivered command makes no second modification.
//!
//! On AWS the instance is `modifying` for minutes after the call and its
//! class changes at the end; moto applies the class at once. The result
//! reports the class DescribeDBInstances gives after the call and, when it
//! is still pending, says so.

use nova_shared::policy::RdsInstanceBackend;

use crate::backend::{Applied, BackendError, BackendErrorKind, Observation};
use crate::rds::call_error;

/// One DB instance.
pub struct RdsInstance {
    client: aws_sdk_rds::Client,
    target: String,
    instance: String,
}

/// What DescribeDBInstances says of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceState {
    class: String,
    status: String,
    /// A class asked for and not yet applied.
    pending_class: Option<String>,
}

impl InstanceState {
    fn observation(&self) -> Observation {
        Observation {
            desired: 1,
            running: Some(u32::from(self.status == "available")),
            tier: Some(self.class.clone()),
            fence: None,
        }
    }
}

impl RdsInstance {
    /// The instance named in `spec`, for `target`.
    pub fn new(client: aws_sdk_rds::Client, target: &str, spec: &RdsInstanceBackend) -> Self {
        RdsInstance {
            client,
            target: target.to_string(),
            instance: spec.instance.clone(),
        }
    }

    async fn describe(&self) -> Result<InstanceState, BackendError> {
        let out = self
            .client
            .describe_db_instances()
            .db_instance_identifier(&self.instance)
            .send()
            .await
            .map_err(|e| call_error(&self.target, "DescribeDBInstances", e))?;
        let Some(db) = out.db_instances().first() else {
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "target {}: RDS DB instance {} not found",
                    self.target, self.instance
                ),
            ));
        };
        Ok(InstanceState {
            class: db.db_instance_class().unwrap_or("unknown").to_string(),
            status: db.db_instance_status().unwrap_or("unknown").to_string(),
            pending_class: db
                .pending_modified_values()
                .and_then(|p| p.db_instance_class())
                .map(str::to_string),
        })
    }

    /// DescribeDBInstances: the instance's class, and whether it is
    /// available.
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        Ok(self.describe().await?.observation())
    }

    /// Moves the instance to `class` (ModifyDBInstance, ApplyImmediately).
    /// `desired` must be 1: the target is one instance.
    pub async fn apply(&self, desired: u32, class: Option<&str>) -> Result<Applied, BackendError> {
        if desired != 1 {
            return Err(BackendError::new(
                BackendErrorKind::Unsupported,
                format!(
                    "target {}: an rds_instance target is the one DB instance {}; it cannot run {desired} (scale its read replicas with an rds_replicas target)",
                    self.target, self.instance
                ),
            ));
        }
        let before = self.describe().await?;
        let Some(class) = class else {
            return Ok(Applied {
                before: Some(before.observation()),
                after: before.observation(),
                response: format!(
                    "nothing to change: {} is one instance of {}",
                    self.instance, before.class
                ),
            });
        };
        if before.class == class || before.pending_class.as_deref() == Some(class) {
            let state = if before.class == class {
                "already"
            } else {
                "already pending as"
            };
            return Ok(Applied {
                before: Some(before.observation()),
                after: before.observation(),
                response: format!(
                    "ModifyDBInstance {} not sent: class {state} {class} (status {})",
                    self.instance, before.status
                ),
            });
        }
        self.client
            .modify_db_instance()
            .db_instance_identifier(&self.instance)
            .db_instance_class(class)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| call_error(&self.target, "ModifyDBInstance", e))?;
        let after = self.describe().await?;
        let pending = match &after.pending_class {
            Some(pending) if after.class != class => format!(", {pending} pending"),
            _ => String::new(),
        };
        Ok(Applied {
            response: format!(
                "ModifyDBInstance {}: class {} -> {} (ApplyImmediately; status {}{pending})",
                self.instance, before.class, after.class, after.status
            ),
            before: Some(before.observation()),
            after: after.observation(),
        })
    }
}
