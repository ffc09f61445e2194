//! The ECS backend: a service's desired count, through DescribeServices and
//! UpdateService.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use nova_shared::policy::EcsBackend;

use crate::backend::{Applied, BackendError, Observation};

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
    target: String,
    cluster: String,
    service: String,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// The credential providers of the SDK's default chain, in the order tried.
const CREDENTIAL_PROVIDERS: &str = "environment variables, shared config and credentials files \
     (AWS_PROFILE), web identity token, ECS container credentials, EC2 instance metadata";

/// One line for a failed SDK call: what went wrong, not the SDK's chain of
/// wrappers. Credentials get their own error, with what to set.
fn call_error<E>(
    target: &str,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(credentials) = current.downcast_ref::<CredentialsError>() {
            // The chain's own text repeats every provider on many lines;
            // the providers are named once, here, instead.
            let detail = match credentials {
                CredentialsError::CredentialsNotLoaded(_) => "none had any".to_string(),
                other => root_cause(other),
            };
            return BackendError::Credentials {
                target: target.to_string(),
                providers: CREDENTIAL_PROVIDERS,
                detail,
            };
        }
        cause = current.source();
    }
    let message = match &error {
        SdkError::ServiceError(service) => {
            let service = service.err();
            format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            format!("timed out: {}", root_cause(&error))
        }
        SdkError::DispatchFailure(_) => {
            format!("cannot reach the endpoint: {}", root_cause(&error))
        }
        _ => root_cause(&error),
    };
    BackendError::Ecs {
        target: target.to_string(),
        operation,
        message,
        retryable: !matches!(
            &error,
            SdkError::ServiceError(_) | SdkError::ConstructionFailure(_)
        ) || error
            .code()
            .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
    }
}

/// Service error codes worth another attempt: throttling and AWS-side faults.
const RETRYABLE_CODES: [&str; 6] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServerException",
    "ServiceUnavailableException",
];

/// The innermost error of a chain, on one line.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    innermost.to_string().replace('\n', " ")
}

impl EcsService {
    /// The service named in `spec`, for `target`.
    pub fn new(client: aws_sdk_ecs::Client, target: &str, spec: &EcsBackend) -> Self {
        EcsService {
            client,
            target: target.to_string(),
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
            .map_err(|e| call_error(&self.target, "DescribeServices", e))?;
        match out.services().first() {
            Some(service) => Ok(Observation {
                desired: count(service.desired_count()),
                running: Some(count(service.running_count())),
                tier: None,
            }),
            None => Err(BackendError::EcsMissing {
                target: self.target.clone(),
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

    /// UpdateService with the new desired count; reports what DescribeServices
    /// said before and what UpdateService's answer says after.
    pub async fn set_desired(&self, desired: u32) -> Result<Applied, BackendError> {
        let before = self.observe().await?;
        let out = self
            .client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(i32::try_from(desired).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| call_error(&self.target, "UpdateService", e))?;
        let after = match out.service() {
            Some(s) => Observation {
                desired: count(s.desired_count()),
                running: Some(count(s.running_count())),
                tier: None,
            },
            // Without the service in the answer, read it back: a result
            // states what the backend reports, never what was asked.
            None => self.observe().await?,
        };
        let response = format!(
            "UpdateService {}/{}: desiredCount {} -> {} (running {})",
            self.cluster,
            self.service,
            before.desired,
            after.desired,
            after.running.map_or("unknown".into(), |r| r.to_string()),
        );
        Ok(Applied {
            before: Some(before),
            after,
            response,
        })
    }
}
