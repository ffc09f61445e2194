//! The ECS backend: a service's desired count, through DescribeServices and
//! UpdateService, and its task size along the policy's tiers, through
//! DescribeTaskDefinition and RegisterTaskDefinition. After a change it
//! waits for the service to be steady (DescribeServices until all desired
//! tasks run in one deployment).
//!
//! On moto, desired tasks run as soon as UpdateService answers and the
//! deployments list keeps the first deployment as PRIMARY, so a change is
//! steady at the first read; the code is written for AWS's rolling
//! deployments, where the old deployment stays ACTIVE until its tasks stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{DeploymentRolloutState, TaskDefinition};
use aws_smithy_http_client::tls;
use nova_runtime::error::find_in_chain;
use nova_shared::policy::{EcsBackend, TaskSize};

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
    tiers: BTreeMap<String, TaskSize>,
    steady_timeout: Duration,
}

/// What DescribeServices says of the service: the counts, its task
/// definition and its deployments.
#[derive(Debug, Clone)]
struct ServiceState {
    desired: u32,
    running: u32,
    task_definition: Option<String>,
    deployments: Vec<DeploymentState>,
}

#[derive(Debug, Clone)]
struct DeploymentState {
    status: String,
    task_definition: String,
    running: u32,
    desired: u32,
    failed_reason: Option<String>,
}

impl ServiceState {
    /// Steady as ECS means it: all desired tasks running, and one
    /// deployment left (a rolling deployment has the new PRIMARY and the
    /// old ACTIVE ones until the old tasks are gone).
    fn is_steady(&self) -> bool {
        self.running == self.desired
            && self.deployments.len() == 1
            && self.deployments[0].status == "PRIMARY"
    }

    /// The reason of a deployment ECS rolled back or gave up on.
    fn failed_deployment(&self) -> Option<&str> {
        self.deployments
            .iter()
            .find_map(|d| d.failed_reason.as_deref())
    }

    /// "running 3 of 5, 2 deployments (PRIMARY web:3 running 1 of 5, ACTIVE
    /// web:2 running 2 of 2)".
    fn summary(&self) -> String {
        let deployments: Vec<String> = self
            .deployments
            .iter()
            .map(|d| {
                format!(
                    "{} {} running {} of {}",
                    d.status,
                    short_task_definition(&d.task_definition),
                    d.running,
                    d.desired
                )
            })
            .collect();
        format!(
            "running {} of {}, {} deployment{} ({})",
            self.running,
            self.desired,
            self.deployments.len(),
            if self.deployments.len() == 1 { "" } else { "s" },
            deployments.join(", ")
        )
    }
}

/// `family:revision` of a task definition ARN.
fn short_task_definition(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
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
            tiers: spec.tiers.clone(),
            steady_timeout: Duration::from_secs(spec.steady_timeout_secs),
        }
    }

    /// How long a change may wait for the service to be steady.
    pub fn steady_timeout(&self) -> Duration {
        self.steady_timeout
    }

    /// DescribeServices.
    async fn describe(&self) -> Result<ServiceState, BackendError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .map_err(|e| call_error(&self.target, "DescribeServices", e))?;
        let Some(service) = out.services().first() else {
            let reason = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("no such service");
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "target {}: ECS service {} not found in cluster {}: {reason}",
                    self.target, self.service, self.cluster
                ),
            ));
        };
        Ok(service_state(service))
    }

    /// What the service runs: its counts, and its tier when the policy
    /// gives tiers (the task definition's sizes, looked up in them).
    async fn observation(&self, state: &ServiceState) -> Result<Observation, BackendError> {
        let tier = match (&state.task_definition, self.tiers.is_empty()) {
            (Some(arn), false) => {
                let definition = self.task_definition(arn).await?;
                self.tier_of(&definition)
            }
            _ => None,
        };
        Ok(Observation {
            desired: state.desired,
            running: Some(state.running),
            tier,
            fence: None,
        })
    }

    /// DescribeServices (and DescribeTaskDefinition, with tiers).
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        let state = self.describe().await?;
        self.observation(&state).await
    }

    async fn task_definition(&self, name: &str) -> Result<TaskDefinition, BackendError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(name)
            .send()
            .await
            .map_err(|e| call_error(&self.target, "DescribeTaskDefinition", e))?;
        out.task_definition.ok_or_else(|| {
            BackendError::new(
                BackendErrorKind::NotFound,
                format!(
                    "target {}: ECS task definition {name} not found",
                    self.target
                ),
            )
        })
    }

    /// The policy's tier whose sizes a task definition has.
    fn tier_of(&self, definition: &TaskDefinition) -> Option<String> {
        let size = task_size(definition)?;
        self.tiers
            .iter()
            .find(|(_, tier)| **tier == size)
            .map(|(name, _)| name.clone())
    }

    /// The task definition to run for `tier`: the family's latest revision
    /// when it is the current one with the tier's sizes (registered by an
    /// earlier attempt at this command, which died before UpdateService),
    /// else a new revision of the current one with those sizes, everything
    /// else copied. Tags are not copied: DescribeTaskDefinition returns
    /// them only when asked, and they do not change what runs.
    async fn revision_for(
        &self,
        current_arn: &str,
        tier: &str,
        size: TaskSize,
    ) -> Result<String, BackendError> {
        let current = self.task_definition(current_arn).await?;
        let family = current.family().unwrap_or_default().to_string();
        let latest = self.task_definition(&family).await?;
        if task_size(&latest) == Some(size)
            && same_except_size(&latest, &current)
            && let Some(arn) = latest.task_definition_arn()
        {
            return Ok(arn.to_string());
        }
        let out = self
            .client
            .register_task_definition()
            .family(family)
            .set_task_role_arn(current.task_role_arn().map(str::to_string))
            .set_execution_role_arn(current.execution_role_arn().map(str::to_string))
            .set_network_mode(current.network_mode().cloned())
            .set_container_definitions(Some(current.container_definitions().to_vec()))
            .set_volumes(Some(current.volumes().to_vec()))
            .set_placement_constraints(Some(current.placement_constraints().to_vec()))
            .set_requires_compatibilities(Some(current.requires_compatibilities().to_vec()))
            .set_pid_mode(current.pid_mode().cloned())
            .set_ipc_mode(current.ipc_mode().cloned())
            .set_proxy_configuration(current.proxy_configuration().cloned())
            .set_ephemeral_storage(current.ephemeral_storage().cloned())
            .set_runtime_platform(current.runtime_platform().cloned())
            .cpu(size.cpu.to_string())
            .memory(size.memory_mib.to_string())
            .send()
            .await
            .map_err(|e| call_error(&self.target, "RegisterTaskDefinition", e))?;
        out.task_definition()
            .and_then(|d| d.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Other,
                    format!(
                        "target {}: ECS RegisterTaskDefinition for tier {tier} returned no ARN",
                        self.target
                    ),
                )
            })
    }

    /// Sets the desired count, and the tier when `tier` is given (a new
    /// task definition revision, see [`revision_for`](Self::revision_for));
    /// reports what DescribeServices said before and what UpdateService's
    /// answer says after. A change already in effect is not sent again.
    pub async fn apply(&self, desired: u32, tier: Option<&str>) -> Result<Applied, BackendError> {
        let state = self.describe().await?;
        let before = self.observation(&state).await?;
        let mut new_definition = None;
        if let Some(tier) = tier.filter(|t| before.tier.as_deref() != Some(*t)) {
            let Some(size) = self.tiers.get(tier).copied() else {
                return Err(BackendError::new(
                    BackendErrorKind::Invalid,
                    format!(
                        "target {}: tier {tier} has no task size in the policy's ecs.tiers",
                        self.target
                    ),
                ));
            };
            let current = state.task_definition.as_deref().ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Invalid,
                    format!(
                        "target {}: ECS service {} has no task definition to resize",
                        self.target, self.service
                    ),
                )
            })?;
            new_definition = Some(self.revision_for(current, tier, size).await?);
        }
        if new_definition.is_none() && before.desired == desired {
            // A redelivered command (its actuator died after the call and
            // before the ack) finds its change made: the call is absolute,
            // so the service has what it asks, and sending it again would be
            // a second change at the backend for one decision.
            let response = format!(
                "UpdateService {}/{} not sent: desiredCount already {} -> {} (running {}){}",
                self.cluster,
                self.service,
                before.desired,
                desired,
                state.running,
                tier.map_or(String::new(), |t| format!(", tier already {t}")),
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
            .set_task_definition(new_definition.clone())
            .send()
            .await
            .map_err(|e| call_error(&self.target, "UpdateService", e))?;
        let after = match out.service() {
            Some(s) => Observation {
                desired: count(s.desired_count()),
                running: Some(count(s.running_count())),
                tier: match &new_definition {
                    Some(_) => tier.map(str::to_string),
                    None => before.tier.clone(),
                },
                fence: None,
            },
            // Without the service in the answer, read it back: a result
            // states what the backend reports, never what was asked.
            None => self.observe().await?,
        };
        let mut response = format!(
            "UpdateService {}/{}: desiredCount {} -> {} (running {})",
            self.cluster,
            self.service,
            before.desired,
            after.desired,
            after.running.map_or("unknown".into(), |r| r.to_string()),
        );
        if let (Some(arn), Some(tier)) = (&new_definition, tier) {
            let size = self.tiers[tier];
            response.push_str(&format!(
                ", task definition {} -> {} (tier {} -> {tier}: cpu {}, memory {} MiB)",
                state
                    .task_definition
                    .as_deref()
                    .map_or("none", short_task_definition),
                short_task_definition(arn),
                before.tier.as_deref().unwrap_or("unknown"),
                size.cpu,
                size.memory_mib,
            ));
        }
        Ok(Applied {
            before: Some(before),
            after,
            response,
        })
    }

    /// Waits, within the steady timeout, for DescribeServices to report
    /// the service steady at what `applied` asked; reports what it saw. A
    /// deployment ECS reports failed, or a service not steady in time, is
    /// a [`NotSteady`](BackendErrorKind::NotSteady) error naming what was
    /// seen: the change was sent, so it is not retried.
    pub async fn wait_steady(&self, applied: Applied) -> Result<Applied, BackendError> {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.describe().await {
                Ok(state) => match steady_verdict(&state, started.elapsed(), self.steady_timeout) {
                    Verdict::Steady => {
                        let mut applied = applied;
                        applied.after.desired = state.desired;
                        applied.after.running = Some(state.running);
                        applied.response.push_str(&format!(
                            "; steady after {:.1} s: {}",
                            started.elapsed().as_secs_f64(),
                            state.summary()
                        ));
                        return Ok(applied);
                    }
                    Verdict::Wait => {}
                    Verdict::Failed(why) => {
                        return Err(BackendError::new(
                            BackendErrorKind::NotSteady,
                            format!(
                                "target {}: {}, but {why}: {}",
                                self.target,
                                applied.response,
                                state.summary()
                            ),
                        ));
                    }
                },
                // A read that fails for now is read again; one that cannot
                // succeed ends the wait.
                Err(error) if error.is_retryable() => {
                    if started.elapsed() >= self.steady_timeout {
                        return Err(BackendError::new(
                            BackendErrorKind::NotSteady,
                            format!(
                                "target {}: {}, but its state could not be read within {} s: {error}",
                                self.target,
                                applied.response,
                                self.steady_timeout.as_secs()
                            ),
                        ));
                    }
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
            tracing::debug!(
                target = self.target,
                ?last_error,
                "waiting for the service to be steady"
            );
            tokio::time::sleep(
                STEADY_POLL.min(
                    self.steady_timeout
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(100)),
                ),
            )
            .await;
        }
    }
}

/// What one read of the service says about a change being waited for.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// All desired tasks run in one deployment.
    Steady,
    /// Not yet, and there is time left.
    Wait,
    /// ECS gave up on the deployment, or the time is up: why.
    Failed(String),
}

fn steady_verdict(state: &ServiceState, waited: Duration, timeout: Duration) -> Verdict {
    if state.is_steady() {
        Verdict::Steady
    } else if let Some(reason) = state.failed_deployment() {
        Verdict::Failed(format!("its deployment failed: {reason}"))
    } else if waited >= timeout {
        Verdict::Failed(format!("not steady within {} s", timeout.as_secs()))
    } else {
        Verdict::Wait
    }
}

/// How often a change's steady wait reads the service again.
const STEADY_POLL: Duration = Duration::from_secs(2);

/// A task definition's task-level cpu and memory, when both are numbers.
fn task_size(definition: &TaskDefinition) -> Option<TaskSize> {
    Some(TaskSize {
        cpu: definition.cpu()?.trim().parse().ok()?,
        memory_mib: definition.memory()?.trim().parse().ok()?,
    })
}

/// Whether two revisions run the same thing but for their task sizes.
fn same_except_size(a: &TaskDefinition, b: &TaskDefinition) -> bool {
    a.family() == b.family()
        && a.container_definitions() == b.container_definitions()
        && a.task_role_arn() == b.task_role_arn()
        && a.execution_role_arn() == b.execution_role_arn()
        && a.network_mode() == b.network_mode()
        && a.volumes() == b.volumes()
        && a.placement_constraints() == b.placement_constraints()
        && a.requires_compatibilities() == b.requires_compatibilities()
        && a.runtime_platform() == b.runtime_platform()
}

fn service_state(service: &aws_sdk_ecs::types::Service) -> ServiceState {
    ServiceState {
        desired: count(service.desired_count()),
        running: count(service.running_count()),
        task_definition: service.task_definition().map(str::to_string),
        deployments: service
            .deployments()
            .iter()
            .map(|d| DeploymentState {
                status: d.status().unwrap_or("UNKNOWN").to_string(),
                task_definition: d.task_definition().unwrap_or("unknown").to_string(),
                running: count(d.running_count()),
                desired: count(d.desired_count()),
                failed_reason: d
                    .rollout_state()
                    .filter(|s| **s == DeploymentRolloutState::Failed)
                    .map(|_| {
                        d.rollout_state_reason()
                            .unwrap_or("no reason given")
                            .to_string()
                    }),
            })
            .collect(),
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

    fn deployment(status: &str, revision: u32, running: u32, desired: u32) -> DeploymentState {
        DeploymentState {
            status: status.into(),
            task_definition: format!("arn:aws:ecs:r:1:task-definition/web:{revision}"),
            running,
            desired,
            failed_reason: None,
        }
    }

    #[test]
    fn a_change_is_steady_when_all_desired_tasks_run_in_one_deployment() {
        let secs = Duration::from_secs;
        let state = |running: u32, deployments: Vec<DeploymentState>| ServiceState {
            desired: 5,
            running,
            task_definition: Some("arn:aws:ecs:r:1:task-definition/web:3".into()),
            deployments,
        };
        let mut failed = deployment("PRIMARY", 3, 1, 5);
        failed.failed_reason = Some("tasks failed to start".into());
        let cases = [
            (
                state(5, vec![deployment("PRIMARY", 3, 5, 5)]),
                secs(1),
                Verdict::Steady,
            ),
            // All running, but the old deployment's tasks are still there.
            (
                state(
                    5,
                    vec![
                        deployment("PRIMARY", 3, 3, 5),
                        deployment("ACTIVE", 2, 2, 2),
                    ],
                ),
                secs(1),
                Verdict::Wait,
            ),
            (
                state(3, vec![deployment("PRIMARY", 3, 3, 5)]),
                secs(1),
                Verdict::Wait,
            ),
            (
                state(3, vec![deployment("PRIMARY", 3, 3, 5)]),
                secs(30),
                Verdict::Failed("not steady within 30 s".into()),
            ),
            (
                state(1, vec![failed, deployment("ACTIVE", 2, 0, 0)]),
                secs(1),
                Verdict::Failed("its deployment failed: tasks failed to start".into()),
            ),
            // A lone deployment that is not PRIMARY is not one ECS finished.
            (
                state(5, vec![deployment("ACTIVE", 3, 5, 5)]),
                secs(1),
                Verdict::Wait,
            ),
            (state(5, vec![]), secs(1), Verdict::Wait),
        ];
        for (state, waited, verdict) in cases {
            assert_eq!(
                steady_verdict(&state, waited, secs(30)),
                verdict,
                "{}",
                state.summary()
            );
        }
        assert_eq!(
            state(
                3,
                vec![
                    deployment("PRIMARY", 3, 1, 5),
                    deployment("ACTIVE", 2, 2, 2)
                ]
            )
            .summary(),
            "running 3 of 5, 2 deployments (PRIMARY web:3 running 1 of 5, ACTIVE web:2 running 2 of 2)"
        );
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
            (NotSteady, false),
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
