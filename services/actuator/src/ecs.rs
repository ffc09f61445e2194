//! The ECS backend: a service's desired count, through DescribeServices and
//! UpdateService.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecs::error::DisplayErrorContext;
use aws_smithy_http_client::tls;
use nova_shared::policy::EcsBackend;

use crate::backend::{BackendError, Observation};

/// An AWS ECS client for a region, optionally at another endpoint (moto, a
/// VPC endpoint). Credentials come from the standard AWS chain unless given.
pub async fn client(
    region: &str,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> aws_sdk_ecs::Client {
    // ring-based rustls, the same crypto async-nats uses: one TLS stack to build.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(call_timeout)
                .build(),
        );
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    aws_sdk_ecs::Client::new(&loader.load().await)
}

/// One ECS service.
pub struct EcsService {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl EcsService {
    /// The service named in `spec`.
    pub fn new(client: aws_sdk_ecs::Client, spec: &EcsBackend) -> Self {
        EcsService {
            client,
            cluster: spec.cluster.clone(),
            service: spec.service.clone(),
        }
    }

    /// DescribeServices: desired and running count.
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .map_err(|e| BackendError::Ecs {
                operation: "DescribeServices",
                message: DisplayErrorContext(&e).to_string(),
            })?;
        match out.services().first() {
            Some(service) => Ok(Observation {
                desired: count(service.desired_count()),
                running: Some(count(service.running_count())),
                tier: None,
            }),
            None => Err(BackendError::EcsMissing {
                cluster: self.cluster.clone(),
                service: self.service.clone(),
                reason: out
                    .failures()
                    .first()
                    .and_then(|f| f.reason())
                    .unwrap_or("no such service")
                    .to_string(),
            }),
        }
    }

    /// UpdateService with the new desired count.
    pub async fn set_desired(&self, desired: u32) -> Result<(Observation, String), BackendError> {
        let before = self.observe().await?;
        let out = self
            .client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(i32::try_from(desired).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| BackendError::Ecs {
                operation: "UpdateService",
                message: DisplayErrorContext(&e).to_string(),
            })?;
        let after = out.service().map_or(
            Observation {
                desired,
                running: before.running,
                tier: None,
            },
            |s| Observation {
                desired: count(s.desired_count()),
                running: Some(count(s.running_count())),
                tier: None,
            },
        );
        let summary = format!(
            "UpdateService {}/{}: desiredCount {} -> {} (running {})",
            self.cluster,
            self.service,
            before.desired,
            after.desired,
            after.running.map_or("unknown".into(), |r| r.to_string()),
        );
        Ok((after, summary))
    }
}
