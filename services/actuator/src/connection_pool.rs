//! The connection pool of an RDS replica set's primary: one parameter of
//! its DB parameter group (the runbook's `max_connections` of
//! `novacron-params`), read with DescribeDBParameters and raised with
//! ModifyDBParameterGroup along the bound vertical rules' ladder. The
//! replica set reports the value as its tier.
//!
//! A command is absolute: a value already set is not sent again, so a
//! redelivered command makes no second modification. A parameter with no
//! value of its own (the engine's default formula) reads as `default`,
//! which no ladder names: the arbiter then says the target is on no step,
//! until an operator gives the group a value to start from.

use aws_sdk_rds::types::{ApplyMethod, Parameter};
use nova_shared::policy::ConnectionPool;

use crate::backend::{BackendError, BackendErrorKind};
use crate::rds::call_error;

/// What the value reads when the group gives the parameter none.
const NO_VALUE: &str = "default";

/// One parameter of one DB parameter group.
pub struct PoolParameter {
    client: aws_sdk_rds::Client,
    target: String,
    region: String,
    spec: ConnectionPool,
}

/// What a change did: the value before and after, and one line.
pub struct Raised {
    /// The value before the call.
    pub before: String,
    /// The value DescribeDBParameters gives after it.
    pub after: String,
    /// One line: what was sent, or why nothing was.
    pub response: String,
}

impl PoolParameter {
    /// The pool of `spec`, for `target` in `region`.
    pub fn new(
        client: aws_sdk_rds::Client,
        target: &str,
        region: &str,
        spec: &ConnectionPool,
    ) -> Self {
        PoolParameter {
            client,
            target: target.to_string(),
            region: region.to_string(),
            spec: spec.clone(),
        }
    }

    /// DescribeDBParameters over every page: the parameter's value.
    pub async fn value(&self) -> Result<String, BackendError> {
        let parameters: Vec<Parameter> = self
            .client
            .describe_db_parameters()
            .db_parameter_group_name(&self.spec.parameter_group)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| {
                let error = call_error(&self.target, "DescribeDBParameters", e);
                if error.kind() != BackendErrorKind::NotFound {
                    return error;
                }
                BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "target {}: RDS DB parameter group {} not found in {}; create it, or name the primary's group as the connection_pool's parameter_group",
                        self.target, self.spec.parameter_group, self.region
                    ),
                )
            })?;
        Ok(parameters
            .iter()
            .find(|p| p.parameter_name() == Some(self.spec.parameter.as_str()))
            .and_then(Parameter::parameter_value)
            .unwrap_or(NO_VALUE)
            .to_string())
    }

    /// Sets the parameter to `value` (ModifyDBParameterGroup with the
    /// pool's ApplyMethod), unless it already is.
    pub async fn set(&self, value: &str) -> Result<Raised, BackendError> {
        let group = &self.spec.parameter_group;
        let name = &self.spec.parameter;
        let before = self.value().await?;
        if before == value {
            return Ok(Raised {
                response: format!(
                    "ModifyDBParameterGroup {group} not sent: {name} is already {value}"
                ),
                after: before.clone(),
                before,
            });
        }
        let parameter = Parameter::builder()
            .parameter_name(name)
            .parameter_value(value)
            .apply_method(ApplyMethod::from(self.spec.apply_method.as_str()))
            .build();
        self.client
            .modify_db_parameter_group()
            .db_parameter_group_name(group)
            .parameters(parameter)
            .send()
            .await
            .map_err(|e| call_error(&self.target, "ModifyDBParameterGroup", e))?;
        let after = self.value().await?;
        Ok(Raised {
            response: format!(
                "ModifyDBParameterGroup {group}: {name} {before} -> {after} ({})",
                self.spec.apply_method
            ),
            before,
            after,
        })
    }
}
