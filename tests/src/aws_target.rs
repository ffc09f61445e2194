//! The one AWS target of the fault and crash tests: an ECS service or an
//! RDS primary on moto, with the policy that grows it by one per trigger.

use crate::MotoServer;

/// The ECS cluster of [`AwsTarget::Ecs`].
pub const CLUSTER: &str = "nova";
/// The ECS service of [`AwsTarget::Ecs`], 2 tasks to begin with.
pub const SERVICE: &str = "svc";
/// The RDS primary of [`AwsTarget::Rds`], without replicas to begin with.
pub const PRIMARY: &str = "orders-db";

/// The backend of a test's one target.
#[derive(Debug, Clone, Copy)]
pub enum AwsTarget {
    /// ECS service [`SERVICE`] in [`CLUSTER`], as target `api` (max 10).
    Ecs,
    /// RDS primary [`PRIMARY`], as target `db` (max 5).
    Rds,
}

impl AwsTarget {
    /// The target's name in the policy.
    pub fn target(self) -> &'static str {
        match self {
            AwsTarget::Ecs => "api",
            AwsTarget::Rds => "db",
        }
    }

    /// Creates the service or the primary on `moto`.
    pub async fn create(self, moto: &MotoServer) {
        match self {
            AwsTarget::Ecs => {
                moto.ecs_service(CLUSTER, SERVICE, 2).await;
            }
            AwsTarget::Rds => crate::rds_primary(&moto.rds(), PRIMARY).await,
        }
    }

    /// A policy with the target on `endpoint` (moto, or a proxy in front
    /// of it) and rule `grow`: one more per trigger, no cooldown.
    pub fn policy_yaml(self, endpoint: &str) -> String {
        match self {
            AwsTarget::Ecs => format!(
                "targets:\n  api:\n    rules: [grow]\n    max: 10\n    backend:\n      ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: {SERVICE}, endpoint_url: \"{endpoint}\" }}\nhorizontal_scaling_rules:\n  grow:\n    scale_up: {{ condition: \"queue_depth > 10\", action: \"add 1 instance\", cooldown: 0 }}\n"
            ),
            AwsTarget::Rds => format!(
                "targets:\n  db:\n    rules: [grow]\n    max: 5\n    backend:\n      rds_replicas: {{ region: us-east-1, primary: {PRIMARY}, endpoint_url: \"{endpoint}\", drain_secs: 0 }}\nhorizontal_scaling_rules:\n  grow:\n    scale_up: {{ condition: \"read_queue > 100\", action: \"add 1 replica\", cooldown: 0 }}\n"
            ),
        }
    }
}
