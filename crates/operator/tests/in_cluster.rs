//! In-cluster tier: the operator as a user installs it — its image (`cargo xtask image`)
//! applied with `kubectl apply --server-side -k` of the test overlay of `deploy/` — on the
//! real node: two replicas, in-cluster config, its ServiceAccount, probes on the admin server.
//! Run by `cargo xtask test`, which writes the overlay (`target/cluster/overlay`) and installs
//! it before the tests start.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use forgejo_stand_in::StandInJob;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::{World, wait_until};

const OPERATOR_NAMESPACE: &str = "forgejo-runner-system";
const OPERATOR_NAME: &str = "forgejo-runner-controller";
/// The namespace the overlay's operator serves (`--namespace`).
const SERVED_NAMESPACE: &str = "frc-in-cluster";
/// The Deployment's lease duration (the operator's default).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long past the duration a standby waits before it takes an unrenewed Lease (a third
/// of the duration, `leader.rs`).
const RENEW_GRACE: Duration = Duration::from_secs(5);
const ADMIN_PORT: u16 = 8080;
const LONG: Duration = Duration::from_secs(120);

/// The operator's pods that are Running and not being deleted.
/// The last lines each operator pod logged, for a failure message.
fn operator_logs() -> String {
    let selector = format!("app.kubernetes.io/name={OPERATOR_NAME}");
    let names = support::kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "get",
        "pods",
        "-l",
        &selector,
        "-o",
        "name",
    ]);
    names
        .lines()
        .map(|pod| {
            let logs = support::kubectl(&["-n", OPERATOR_NAMESPACE, "logs", pod, "--tail=60"]);
            format!("--- {pod}\n{logs}")
        })
        .collect()
}

async fn operator_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/name={OPERATOR_NAME}")))
        .await
        .expect("listing operator pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn admin_addr(pod: &Pod) -> Option<SocketAddr> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(ip, ADMIN_PORT))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(OPERATOR_NAME)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn in_cluster_replicas_elect_one_leader_schedule_hand_over_and_are_both_ready_after_every_restart()
 {
    let world = World::in_namespace(SERVED_NAMESPACE, |config| forgejo_stand_in::StandInConfig {
        bind: SocketAddr::new(support::node_ip(), 0),
        ..config
    })
    .await;
    let client = world.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);

    // Both replicas Ready: in-cluster config, ServiceAccount token and /readyz all work.
    wait_until("2 Ready operator replicas", LONG, || async {
        let deployment = deployments.get_opt(OPERATOR_NAME).await.ok()??;
        let status = deployment.status?;
        (status.ready_replicas == Some(2) && status.updated_replicas == Some(2)).then_some(())
    })
    .await;
    let running = operator_pods(&pods).await;
    assert_eq!(running.len(), 2, "operator pods: {}", running.len());
    for pod in &running {
        let image = pod
            .spec
            .as_ref()
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            image.starts_with("localhost/forgejo-runner-controller"),
            "the overlay did not set the local image: {image}"
        );
        let addr = admin_addr(pod).expect("pod IP");
        assert_eq!(
            support::http_get(addr, "/readyz").map(|(status, _)| status),
            Some(200)
        );
    }

    // One leader: the Lease names one pod, and only that pod's gauge says so.
    let holder = wait_until("a Lease holder", LONG, || lease_holder(&leases)).await;
    let leaders: Vec<String> = running
        .iter()
        .filter(|pod| {
            admin_addr(pod)
                .and_then(|addr| support::metric(addr, "forgejo_runner_controller_lease_is_leader"))
                .is_some_and(|v| v == 1.0)
        })
        .map(|pod| pod.name_any())
        .collect();
    assert_eq!(leaders, vec![holder.clone()], "leaders by metric");

    // The leader schedules.
    for name in ["build", "test"] {
        world
            .forgejo
            .add_job(StandInJob::new("faro/app", name, &["docker"]));
    }
    world
        .create_pool_from(json!({
            "metadata": {"name": "pool"},
            "spec": {
                "forgejoServer": world.forgejo.url(),
                "organization": "faro",
                "labels": "docker",
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": "1s",
                "maxRunners": 10,
            }
        }))
        .await;
    let scheduled = tokio::time::timeout(LONG, async {
        while world.runner_jobs().await.len() != 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        scheduled.is_ok(),
        "timed out after {LONG:?} waiting for 2 runner Jobs; the operator's pods logged:\n{}",
        operator_logs()
    );

    // Kill the leader's pod outright: another replica takes the Lease once it runs out.
    // That may be the standby or the pod the Deployment starts in the killed one's place.
    let killed = Instant::now();
    Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .delete(&holder, &DeleteParams::default().grace_period(0))
        .await
        .expect("deleting the leader pod");
    let new_holder = wait_until("another replica to hold the Lease", LONG, || async {
        lease_holder(&leases).await.filter(|h| h != &holder)
    })
    .await;
    let handover = killed.elapsed();
    eprintln!(
        "leader handover from {holder} to {new_holder} took {:.1}s (lease duration {}s)",
        handover.as_secs_f64(),
        LEASE_DURATION.as_secs()
    );
    assert!(
        handover <= LEASE_DURATION + RENEW_GRACE + Duration::from_secs(2),
        "handover took {handover:?}, lease duration {LEASE_DURATION:?}"
    );
    let live: Vec<String> = operator_pods(&pods)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        live.contains(&new_holder),
        "the new holder {new_holder} is not a live pod: {live:?}"
    );

    // The new leader schedules a new job, and nothing is duplicated.
    world
        .forgejo
        .add_job(StandInJob::new("faro/app", "lint", &["docker"]));
    wait_until("3 runner Jobs", LONG, || async {
        (world.runner_jobs().await.len() == 3).then_some(())
    })
    .await;
    world.wait_for_polls(3).await;
    assert_eq!(
        world.runner_jobs().await.len(),
        3,
        "duplicates after handover"
    );

    // The Deployment replaces the killed pod; leave the install as it was for other tests.
    wait_until("2 Ready operator replicas again", LONG, || async {
        let pods = operator_pods(&pods).await;
        (pods.len() == 2 && pods.iter().all(is_ready)).then_some(())
    })
    .await;

    // Both replicas become Ready after every start (a standby once never did: 3 of 6).
    let rounds = if std::env::var("FRC_CHAOS").as_deref() == Ok("full") {
        20
    } else {
        3
    };
    for round in 1..=rounds {
        let before: Vec<String> = operator_pods(&pods)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        for name in &before {
            let _ = pods
                .delete(name, &DeleteParams::default().grace_period(0))
                .await;
        }
        let started = Instant::now();
        wait_until(
            &format!("start {round}: 2 new Ready replicas"),
            LONG,
            || async {
                let now = operator_pods(&pods).await;
                let fresh = now
                    .iter()
                    .filter(|p| !before.contains(&p.name_any()))
                    .count();
                (now.len() == 2 && fresh == 2 && now.iter().all(is_ready)).then_some(())
            },
        )
        .await;
        eprintln!(
            "start {round} of {rounds}: both replicas Ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}
