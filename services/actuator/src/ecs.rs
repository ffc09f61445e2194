//! The ECS backend: a service's desired count, through DescribeServices and
//! UpdateService.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use nova_runtime::error::find_in_chain;
use nova_shared::policy::EcsBackend;

use crate::backend::{Applied, BackendError, BackendErrorKind, Observation};

/// An AWS ECS client for a region, optionally at another endpoint (moto, a
/// VPC endpoint). Credentials come from the standard AWS chain unless given.
pub async fn client(
    region: &str,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&sdk_config(region, endpoint_url, call_timeout, credentials).await)
}

/// The SDK settings every AWS backend's client is built from: the region,
/// an endpoint override, the call timeout, the TLS stack and credentials.
pub(crate) async fn sdk_config(
    region: &str,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> aws_config::SdkConfig {
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
    loader.load().await
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
/// wrappers, with its kind from the error's metadata ([`classify`]).
/// Credentials get their own error, with what to set.
fn call_error<E>(
    target: &str,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&error);
    sdk_call_error("ECS", kind, target, operation, error)
}

/// [`call_error`] for any AWS service (`ECS`, `RDS`), with the kind its
/// caller classified.
pub(crate) fn sdk_call_error<E>(
    service_name: &str,
    kind: BackendErrorKind,
    target: &str,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(credentials) = find_in_chain::<CredentialsError>(&error) {
        // The chain's own text repeats every provider on many lines;
        // the providers are named once, here, instead.
        let detail = match credentials {
            CredentialsError::CredentialsNotLoaded(_) => "none had any".to_string(),
            other => root_cause(other),
        };
        let message = format!(
            "target {target}: no AWS credentials (tried {CREDENTIAL_PROVIDERS}: {detail}); set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
        );
        return BackendError::with_source(BackendErrorKind::Credentials, message, error);
    }
    let what = match &error {
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
    BackendError::with_source(
        kind,
        format!("target {target}: {service_name} {operation} failed: {what}"),
        error,
    )
}

/// The kind of a failed SDK call: the service's error code when it is one
/// of [`CODES`], else its HTTP status; for a call that got no answer, how
/// it failed (a timeout, a connection that could not be made, a request
/// that could not be built).
pub(crate) fn classify<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> BackendErrorKind {
    match error {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => error
            .code()
            .and_then(|code| {
                CODES
                    .iter()
                    .find(|(known, _)| *known == code)
                    .map(|(_, kind)| *kind)
            })
            .or_else(|| {
                error
                    .raw_response()
                    .and_then(|raw| status_kind(raw.status().as_u16()))
            })
            .unwrap_or(BackendErrorKind::Other),
        SdkError::TimeoutError(_) => BackendErrorKind::TimedOut,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => BackendErrorKind::TimedOut,
        // The request itself is wrong for the connector (an endpoint URL it
        // cannot use): the same request fails the same way.
        SdkError::DispatchFailure(failure) if failure.is_user() => BackendErrorKind::Invalid,
        SdkError::DispatchFailure(_) => BackendErrorKind::Unreachable,
        SdkError::ConstructionFailure(_) => BackendErrorKind::Invalid,
        _ => BackendErrorKind::Other,
    }
}

/// The kind an HTTP status says, for error codes not in [`CODES`].
fn status_kind(status: u16) -> Option<BackendErrorKind> {
    Some(match status {
        429 => BackendErrorKind::Throttled,
        401 | 403 => BackendErrorKind::AccessDenied,
        404 => BackendErrorKind::NotFound,
        408 => BackendErrorKind::TimedOut,
        409 => BackendErrorKind::Conflict,
        400..=499 => BackendErrorKind::Invalid,
        500..=599 => BackendErrorKind::Unavailable,
        _ => return None,
    })
}

/// Error codes of ECS and of every AWS JSON API, and what they mean here.
/// The code decides before the status: AWS sends throttling and most
/// refusals as HTTP 400.
const CODES: &[(&str, BackendErrorKind)] = &[
    // Throttling (the codes the SDK's own retry classifier counts as such).
    ("ThrottlingException", BackendErrorKind::Throttled),
    ("Throttling", BackendErrorKind::Throttled),
    ("ThrottledException", BackendErrorKind::Throttled),
    ("RequestThrottledException", BackendErrorKind::Throttled),
    ("RequestThrottled", BackendErrorKind::Throttled),
    ("TooManyRequestsException", BackendErrorKind::Throttled),
    ("RequestLimitExceeded", BackendErrorKind::Throttled),
    ("BandwidthLimitExceeded", BackendErrorKind::Throttled),
    ("SlowDown", BackendErrorKind::Throttled),
    ("PriorRequestNotComplete", BackendErrorKind::Throttled),
    // Faults on AWS's side.
    ("ServerException", BackendErrorKind::Unavailable),
    ("ServiceUnavailableException", BackendErrorKind::Unavailable),
    ("ServiceUnavailable", BackendErrorKind::Unavailable),
    ("InternalFailure", BackendErrorKind::Unavailable),
    ("InternalServerError", BackendErrorKind::Unavailable),
    ("InternalError", BackendErrorKind::Unavailable),
    ("RequestTimeout", BackendErrorKind::TimedOut),
    ("RequestTimeoutException", BackendErrorKind::TimedOut),
    // Refused: the credentials exist but may not do this, or are not valid.
    ("AccessDeniedException", BackendErrorKind::AccessDenied),
    ("AccessDenied", BackendErrorKind::AccessDenied),
    ("UnauthorizedOperation", BackendErrorKind::AccessDenied),
    ("NotAuthorized", BackendErrorKind::AccessDenied),
    (
        "UnrecognizedClientException",
        BackendErrorKind::AccessDenied,
    ),
    ("InvalidClientTokenId", BackendErrorKind::AccessDenied),
    ("InvalidSignatureException", BackendErrorKind::AccessDenied),
    ("SignatureDoesNotMatch", BackendErrorKind::AccessDenied),
    ("IncompleteSignature", BackendErrorKind::AccessDenied),
    ("MissingAuthenticationToken", BackendErrorKind::AccessDenied),
    ("ExpiredTokenException", BackendErrorKind::AccessDenied),
    ("ExpiredToken", BackendErrorKind::AccessDenied),
    ("OptInRequired", BackendErrorKind::AccessDenied),
    // Invalid requests.
    ("ClientException", BackendErrorKind::Invalid),
    ("InvalidParameterException", BackendErrorKind::Invalid),
    ("ValidationException", BackendErrorKind::Invalid),
    ("ValidationError", BackendErrorKind::Invalid),
    ("SerializationException", BackendErrorKind::Invalid),
    ("UnsupportedFeatureException", BackendErrorKind::Invalid),
    ("PlatformUnknownException", BackendErrorKind::Invalid),
    (
        "PlatformTaskDefinitionIncompatibilityException",
        BackendErrorKind::Invalid,
    ),
    ("LimitExceededException", BackendErrorKind::Invalid),
    // Missing resources.
    ("ServiceNotFoundException", BackendErrorKind::NotFound),
    ("ServiceNotActiveException", BackendErrorKind::NotFound),
    ("ClusterNotFoundException", BackendErrorKind::NotFound),
    ("NamespaceNotFoundException", BackendErrorKind::NotFound),
    ("ResourceNotFoundException", BackendErrorKind::NotFound),
    // Someone else is changing the resource.
    ("UpdateInProgressException", BackendErrorKind::Conflict),
    ("ConflictException", BackendErrorKind::Conflict),
    ("ResourceInUseException", BackendErrorKind::Conflict),
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
            None => {
                let reason = out
                    .failures()
                    .first()
                    .and_then(|f| f.reason())
                    .unwrap_or("no such service");
                Err(BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "target {}: ECS service {} not found in cluster {}: {reason}",
                        self.target, self.service, self.cluster
                    ),
                ))
            }
        }
    }

    /// UpdateService with the new desired count; reports what DescribeServices
    /// said before and what UpdateService's answer says after.
    pub async fn set_desired(&self, desired: u32) -> Result<Applied, BackendError> {
        let before = self.observe().await?;
        if before.desired == desired {
            // A redelivered command (its actuator died after the call and
            // before the ack) finds its change made: the call is absolute,
            // so the service has what it asks, and sending it again would be
            // a second change at the backend for one decision.
            let response = format!(
                "UpdateService {}/{} not sent: desiredCount already {} -> {} (running {})",
                self.cluster,
                self.service,
                before.desired,
                desired,
                before.running.map_or("unknown".into(), |r| r.to_string()),
            );
            return Ok(Applied {
                before: Some(before.clone()),
                after: before,
                response,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_ecs::operation::update_service::UpdateServiceError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use nova_runtime::error::ErrorKind;

    type CallError = SdkError<UpdateServiceError, HttpResponse>;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(
            StatusCode::try_from(status).expect("a status"),
            SdkBody::empty(),
        )
    }

    /// A service error as the SDK parses one: the code and message from
    /// the body, with the HTTP response.
    fn service(code: &str, status: u16) -> CallError {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message(format!("what {code} says"))
            .build();
        SdkError::service_error(UpdateServiceError::generic(meta), response(status))
    }

    #[test]
    fn sdk_errors_are_classified_from_their_metadata() {
        use BackendErrorKind::*;
        let cases: Vec<(CallError, BackendErrorKind)> = vec![
            // The code decides, whatever the status (AWS sends most as 400).
            (service("ThrottlingException", 400), Throttled),
            (service("TooManyRequestsException", 429), Throttled),
            (service("RequestLimitExceeded", 400), Throttled),
            (service("ServerException", 500), Unavailable),
            (service("ServiceUnavailableException", 503), Unavailable),
            (service("InternalFailure", 500), Unavailable),
            (service("RequestTimeoutException", 408), TimedOut),
            (service("AccessDeniedException", 400), AccessDenied),
            (service("UnrecognizedClientException", 400), AccessDenied),
            (service("ExpiredTokenException", 400), AccessDenied),
            (service("ClientException", 400), Invalid),
            (service("InvalidParameterException", 400), Invalid),
            (service("ValidationException", 400), Invalid),
            (service("ServiceNotFoundException", 400), NotFound),
            (service("ClusterNotFoundException", 400), NotFound),
            (service("ServiceNotActiveException", 400), NotFound),
            (service("UpdateInProgressException", 400), Conflict),
            // An unknown code: its HTTP status.
            (service("SomethingNew", 429), Throttled),
            (service("SomethingNew", 403), AccessDenied),
            (service("SomethingNew", 401), AccessDenied),
            (service("SomethingNew", 404), NotFound),
            (service("SomethingNew", 409), Conflict),
            (service("SomethingNew", 400), Invalid),
            (service("SomethingNew", 502), Unavailable),
            (service("SomethingNew", 503), Unavailable),
            // No answer, or none that could be read.
            (SdkError::timeout_error("operation timeout"), TimedOut),
            (
                SdkError::dispatch_failure(ConnectorError::timeout("connect timeout".into())),
                TimedOut,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::io("connection refused".into())),
                Unreachable,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::other("dns".into(), None)),
                Unreachable,
            ),
            (
                SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into())),
                Invalid,
            ),
            (SdkError::construction_failure("missing field"), Invalid),
            (
                SdkError::response_error("bad body", response(502)),
                Unavailable,
            ),
            (SdkError::response_error("bad body", response(200)), Other),
        ];
        for (error, expected) in cases {
            let what = format!("{error:?}");
            assert_eq!(classify(&error), expected, "{what}");
        }
    }

    #[test]
    fn retryable_kinds_are_the_transient_ones() {
        use BackendErrorKind::*;
        let cases = [
            (Throttled, true),
            (Unavailable, true),
            (TimedOut, true),
            (Unreachable, true),
            (Conflict, true),
            (Other, true),
            (Store(nova_runtime::kv::KvErrorKind::Conflict), true),
            (Credentials, false),
            (AccessDenied, false),
            (Invalid, false),
            (NotFound, false),
            (Unsupported, false),
            (Store(nova_runtime::kv::KvErrorKind::Encode), false),
        ];
        for (kind, retryable) in cases {
            assert_eq!(kind.is_retryable(), retryable, "{kind}");
        }
    }

    #[test]
    fn a_failed_call_is_one_line_naming_the_target_with_its_kind() {
        let cases: Vec<(CallError, BackendErrorKind, &str)> = vec![
            (
                service("AccessDeniedException", 400),
                BackendErrorKind::AccessDenied,
                "target t0: ECS UpdateService failed: AccessDeniedException: what \
                 AccessDeniedException says",
            ),
            (
                service("ThrottlingException", 400),
                BackendErrorKind::Throttled,
                "target t0: ECS UpdateService failed: ThrottlingException: what \
                 ThrottlingException says",
            ),
            (
                SdkError::timeout_error("operation timeout"),
                BackendErrorKind::TimedOut,
                "target t0: ECS UpdateService failed: timed out",
            ),
            (
                SdkError::dispatch_failure(ConnectorError::io(
                    std::io::Error::other("connection refused\n(os error 111)").into(),
                )),
                BackendErrorKind::Unreachable,
                "target t0: ECS UpdateService failed: cannot reach the endpoint: connection \
                 refused (os error 111)",
            ),
        ];
        for (error, kind, line) in cases {
            let error = call_error("t0", "UpdateService", error);
            assert_eq!(error.kind(), kind);
            assert_eq!(error.to_string(), line);
        }
    }

    #[test]
    fn missing_credentials_are_their_own_kind_whatever_wraps_them() {
        let missing = CredentialsError::not_loaded("no providers in chain provided credentials");
        let error: CallError =
            SdkError::dispatch_failure(ConnectorError::other(missing.into(), None));
        let error = call_error("t0", "DescribeServices", error);
        assert_eq!(error.kind(), BackendErrorKind::Credentials);
        assert!(!error.is_retryable());
        let line = error.to_string();
        assert!(
            line.starts_with("target t0: no AWS credentials (tried environment variables")
                && line.contains("none had any")
                && line.ends_with("or run with an IAM role"),
            "{line}"
        );
    }
}
