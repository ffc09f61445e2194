//! ECS vertical tiers on moto, through the whole pipeline: a vertical rule's
//! trigger moves service `web` one step up the policy's ladder. What is
//! asserted is what ECS reports afterwards (DescribeServices and
//! DescribeTaskDefinition), not what the actuator believes:
//! - the service runs a new revision of its task definition with the next
//!   tier's cpu and memory and everything else copied (containers, network
//!   mode, compatibilities), at the same desired count;
//! - the result names the revisions and tiers, and says the service was
//!   steady; the next observation reads the tier back from ECS;
//! - a second step goes to the top tier, and a third is refused by the
//!   arbiter (`at_top_tier`) with no call to ECS.
//!
//! Moto's quirk relied on: desired tasks are running as soon as
//! UpdateService answers, and its deployments list keeps one PRIMARY
//! deployment, so the steady wait ends at its first read (on AWS it lasts
//! as long as the rolling deployment).

use std::sync::Arc;

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode, PortMapping};
use nova_e2e::{AuditReader, MotoServer, NatsServer, Pipeline};
use nova_runtime::publish;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version,
};

const CLUSTER: &str = "tiers";

/// The policy's ladder: name, cpu units, memory MiB.
const TIERS: [(&str, u32, u32); 3] = [
    ("small", 256, 512),
    ("large", 1024, 2048),
    ("xlarge", 2048, 4096),
];

fn policy_yaml(endpoint: &str) -> String {
    let tiers: Vec<String> = TIERS
        .iter()
        .map(|(name, cpu, memory)| format!("{name}: {{cpu: {cpu}, memory_mib: {memory}}}"))
        .collect();
    format!(
        "targets:\n  web:\n    rules: [resize.cpu]\n    max: 10\n    backend:\n      ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: web, endpoint_url: \"{endpoint}\", steady_timeout_secs: 20, tiers: {{ {} }} }}\nvertical_scaling_rules:\n  resize:\n    cpu:\n      trigger: \"avg_cpu > 85% for 1 minute\"\n      action: \"upgrade to the next tier\"\n      cooldown: 0\n      options: [{{from: small, to: large}}, {{from: large, to: xlarge}}]\n",
        tiers.join(", ")
    )
}

/// The task definition a service runs, as DescribeServices and
/// DescribeTaskDefinition report it.
async fn running_definition(ecs: &aws_sdk_ecs::Client) -> aws_sdk_ecs::types::TaskDefinition {
    let services = ecs
        .describe_services()
        .cluster(CLUSTER)
        .services("web")
        .send()
        .await
        .expect("describe services");
    let arn = services.services()[0]
        .task_definition()
        .expect("a task definition")
        .to_string();
    ecs.describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .expect("describe task definition")
        .task_definition
        .expect("the task definition")
}

/// Service `web` with 3 tasks of the `small` tier, on Fargate with a port
/// mapping, so the copy of everything but the sizes can be checked.
async fn web_service(moto: &MotoServer) -> aws_sdk_ecs::Client {
    let ecs = moto.ecs_cluster(CLUSTER).await;
    let container = ContainerDefinition::builder()
        .name("app")
        .image("nginx:1.27")
        .essential(true)
        .port_mappings(PortMapping::builder().container_port(8080).build())
        .build();
    ecs.register_task_definition()
        .family("web")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(container)
        .send()
        .await
        .expect("register task definition");
    ecs.create_service()
        .cluster(CLUSTER)
        .service_name("web")
        .task_definition("web")
        .desired_count(3)
        .send()
        .await
        .expect("create service");
    ecs
}

/// Fires the vertical rule, as the evaluator would.
async fn fire(client: &async_nats::Client, n: u32) {
    let trigger = Trigger {
        v: Version::CURRENT,
        id: format!("resize-web-{n}"),
        ts: nova_runtime::now_ms(),
        target: "web".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "resize.cpu".into(),
            direction: Direction::Up,
            action: ScaleAction::NextTier,
            observed: Some(0.93),
            threshold: Some(0.85),
            condition: "avg_cpu > 85% for 1 minute".into(),
            held_secs: 60,
            reason: "avg_cpu 93% > 85% for 1 minute".into(),
        }],
        policy_revision: None,
        alert: None,
    };
    let js = async_nats::jetstream::new(client.clone());
    publish::publish_once(&js, subjects::triggers("web"), &trigger.id, &trigger)
        .await
        .expect("publish trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vertical_rule_moves_an_ecs_service_up_its_tiers() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let ecs = web_service(&moto).await;
    let policy = Arc::new(from_yaml(&policy_yaml(&moto.endpoint), "tiers.yaml").expect("policy"));
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let first = running_definition(&ecs).await;

    // One step at a time: small -> large, then large -> xlarge.
    for (step, (from, to)) in [("small", "large"), ("large", "xlarge")]
        .into_iter()
        .enumerate()
    {
        fire(&client, u32::try_from(step).expect("step")).await;
        let result = audit
            .wait_for("the result", |r| r.kind == AuditKind::Result)
            .await;
        assert_eq!(result.outcome, "succeeded", "{result:?}");
        let response = result.backend_response.clone().unwrap_or_default();
        let (revision, next) = (step + 1, step + 2);
        assert!(
            response.contains(&format!(
                "task definition web:{revision} -> web:{next} (tier {from} -> {to}"
            )) && response.contains("steady after"),
            "the result names the revisions, the tiers and the steady state: {response}"
        );

        let now = running_definition(&ecs).await;
        let (_, cpu, memory) = TIERS.iter().find(|(n, ..)| *n == to).expect("tier");
        assert_eq!(now.revision(), i32::try_from(next).expect("revision"));
        assert_eq!(now.cpu(), Some(cpu.to_string().as_str()), "{to}'s cpu");
        assert_eq!(
            now.memory(),
            Some(memory.to_string().as_str()),
            "{to}'s memory"
        );
        assert_eq!(
            now.container_definitions(),
            first.container_definitions(),
            "containers copied as they were"
        );
        assert_eq!(now.network_mode(), first.network_mode());
        assert_eq!(
            now.requires_compatibilities(),
            first.requires_compatibilities()
        );
        assert_eq!(
            nova_e2e::ecs_desired(&ecs, CLUSTER, "web").await,
            3,
            "a tier move keeps the count"
        );
    }

    // At the top of the ladder the arbiter decides no move: nothing for ECS.
    fire(&client, 2).await;
    let decision = audit
        .wait_for("the decision at the top tier", |r| {
            r.kind == AuditKind::Decision && r.outcome == "at_top_tier"
        })
        .await;
    assert!(
        decision.reason.contains("xlarge"),
        "the decision names the tier it is at: {}",
        decision.reason
    );
    assert_eq!(running_definition(&ecs).await.revision(), 3);
    pipeline.stop().await;
}
