//! Upgrade tier: the previous release of the operator (its image and its `deploy/`, built by
//! `cargo xtask test` from git history) installed in-cluster schedules jobs, some running on
//! the node and some waiting for a free slot; then this release is applied over it with
//! `kubectl apply --server-side -k` while new jobs arrive. Checked as the fault tier checks:
//! no Forgejo job gets two runner Jobs or two runners, none is lost, no registration or
//! runner Job is left, and the token is in no log, event or status.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgejo_stand_in::{StandInConfig, StandInJob};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use scheduler::labels::FORGEJO_JOB_ID;
use support::{World, kubectl, wait_until};

const OPERATOR_NAMESPACE: &str = "forgejo-runner-system";
const OPERATOR_NAME: &str = "forgejo-runner-controller";
/// The namespace both overlays of the upgrade serve (`xtask/src/previous_release.rs`).
const SERVED_NAMESPACE: &str = "frc-upgrade";
const LONG: Duration = Duration::from_secs(180);
/// Runner slots of the pool: the long jobs fill them, so later jobs wait.
const SLOTS: usize = 3;

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: the upgrade tier needs the overlays `cargo xtask test` writes")
    })
}

/// `kubectl apply --server-side -k` of an overlay, as a user upgrades.
fn apply(overlay: &str) {
    kubectl(&["apply", "--server-side", "--force-conflicts", "-k", overlay]);
}

/// Waits until the operator's Deployment runs 2 Ready replicas, all of `image_tag`, and no
/// pod of another image is left; returns their pod names.
async fn rolled_out(client: &kube::Client, image_tag: &str) -> Vec<String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let selector = format!("app.kubernetes.io/name={OPERATOR_NAME}");
    wait_until(
        &format!("the operator rolled out to {image_tag}"),
        LONG,
        || async {
            let status = deployments.get_opt(OPERATOR_NAME).await.ok()??.status?;
            let ready = status.ready_replicas == Some(2)
                && status.updated_replicas == Some(2)
                && status.replicas == Some(2);
            let pods = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items;
            let all_new = pods.iter().all(|pod| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.containers[0].image.as_deref())
                    .is_some_and(|image| image.ends_with(&format!(":{image_tag}")))
            });
            (ready && all_new && pods.len() == 2)
                .then(|| pods.iter().map(|p| p.name_any()).collect())
        },
    )
    .await
}

/// The image tag of an overlay's operator image (`images:` → `newTag`).
fn overlay_tag(overlay: &str) -> String {
    let text = std::fs::read_to_string(format!("{overlay}/kustomization.yaml"))
        .unwrap_or_else(|e| panic!("reading {overlay}/kustomization.yaml: {e}"));
    text.lines()
        .find_map(|line| line.trim().strip_prefix("newTag:"))
        .map(|tag| tag.trim().trim_matches('\'').trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{overlay} sets no image tag"))
}

fn operator_logs(pods: &[String]) -> String {
    pods.iter()
        .map(|pod| {
            let logs = kubectl(&["-n", OPERATOR_NAMESPACE, "logs", pod, "--tail=-1"]);
            format!("--- {pod}\n{logs}")
        })
        .collect()
}

/// Every runner Job ever seen in the namespace, by Forgejo job id: listed every 250 ms, so
/// a Job made and deleted between two looks would still have to live under 250 ms.
fn record_runner_jobs(world: &World) -> Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> {
    let seen = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
    let jobs: Api<Job> = Api::namespaced(world.client.clone(), &world.ns);
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let params = ListParams::default().labels(&scheduler::labels::owned_jobs_selector());
        loop {
            if let Ok(list) = jobs.list(&params).await {
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                for job in list.items {
                    let id = job
                        .labels()
                        .get(FORGEJO_JOB_ID)
                        .cloned()
                        .unwrap_or_default();
                    seen.entry(id)
                        .or_default()
                        .insert(job.uid().unwrap_or_default());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    seen
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn an_upgrade_while_jobs_run_and_wait_duplicates_loses_and_leaves_nothing() {
    let (previous, current, tier) = (
        env("FRC_TEST_PREVIOUS_OVERLAY"),
        env("FRC_TEST_UPGRADE_OVERLAY"),
        support::overlay(),
    );
    let world = World::in_namespace(SERVED_NAMESPACE, |config| StandInConfig {
        bind: SocketAddr::new(support::node_ip(), 0),
        ..config
    })
    .await;
    let seen = record_runner_jobs(&world);

    // The previous release, installed as a user installed it.
    apply(&previous);
    let old_pods = rolled_out(&world.client, &overlay_tag(&previous)).await;

    // Long jobs fill every slot and run across the upgrade; two more wait for a slot.
    let mut jobs = Vec::new();
    for n in 0..SLOTS {
        let step = format!("sleep 20; echo long-{n}-done");
        jobs.push(world.forgejo.add_job(
            StandInJob::new("faro/app", &format!("long-{n}"), &["linux"]).with_steps(&[&step]),
        ));
    }
    for n in 0..2 {
        let step = format!("echo waited-{n}");
        jobs.push(world.forgejo.add_job(
            StandInJob::new("faro/app", &format!("waits-{n}"), &["linux"]).with_steps(&[&step]),
        ));
    }
    world
        .create_pool_from(support::node_pool(
            &world,
            "pool",
            "linux:host",
            i32::try_from(SLOTS).expect("a few slots"),
        ))
        .await;
    wait_until(
        "the long jobs running under the previous release",
        LONG,
        || async {
            let running = world
                .forgejo
                .jobs()
                .iter()
                .filter(|job| job.name.starts_with("long-") && job.status == "running")
                .count();
            (running == SLOTS).then_some(())
        },
    )
    .await;
    let waiting = world
        .forgejo
        .jobs()
        .iter()
        .filter(|job| job.status == "waiting")
        .count();
    assert_eq!(waiting, 2, "2 jobs wait for a slot at the upgrade");
    let old_logs = operator_logs(&old_pods);

    // The upgrade, while new jobs arrive.
    apply(&current);
    for n in 0..2 {
        let step = format!("echo arrived-{n}");
        jobs.push(world.forgejo.add_job(
            StandInJob::new("faro/app", &format!("arrives-{n}"), &["linux"]).with_steps(&[&step]),
        ));
    }
    let new_pods = rolled_out(&world.client, &overlay_tag(&current)).await;

    // Nothing lost: every job ran to its result.
    let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
    wait_until(&format!("results of jobs {ids:?}"), LONG, || async {
        let done = world
            .forgejo
            .jobs()
            .into_iter()
            .filter(|job| ids.contains(&job.id) && job.status == "success")
            .count();
        (done == ids.len()).then_some(())
    })
    .await;

    // No duplicate: one runner Job and one task per job attempt, across both releases.
    let fetches = world.forgejo.fetches();
    for job in &jobs {
        let handle = job.handle.clone().expect("a Forgejo 15 handle");
        let tasks = fetches
            .iter()
            .filter(|f| f.handle.as_deref() == Some(handle.as_str()) && f.task_id.is_some())
            .count();
        assert_eq!(
            tasks, 1,
            "job {} ({}) was handed out {tasks} times",
            job.id, job.name
        );
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for job in &jobs {
        let uids = seen.get(&job.id.to_string()).map_or(0, BTreeSet::len);
        assert_eq!(
            uids, 1,
            "job {} ({}) had {uids} runner Jobs: {seen:?}",
            job.id, job.name
        );
    }
    assert_eq!(
        seen.len(),
        jobs.len(),
        "runner Jobs of unknown jobs: {seen:?}"
    );

    // Nothing left: registrations, live runner Jobs, the pool's record of them, Secrets.
    wait_until("no runner registration left", LONG, || async {
        world.forgejo.runners().is_empty().then_some(())
    })
    .await;
    wait_until(
        "no live runner Job and none in the status",
        LONG,
        || async {
            let live = world.live_runner_jobs().await;
            let status = world.pools().get("pool").await.ok()?.status?;
            (live.is_empty() && status.scheduled_jobs.is_empty()).then_some(())
        },
    )
    .await;
    wait_until("no runner Secret without its Job", LONG, || async {
        let jobs: BTreeSet<String> = world
            .runner_jobs()
            .await
            .iter()
            .map(|j| j.name_any())
            .collect();
        let secrets = kubectl(&[
            "-n",
            &world.ns,
            "get",
            "secrets",
            "-l",
            &scheduler::labels::runner_secrets_selector(),
            "-o",
            "jsonpath={range .items[*]}{.metadata.ownerReferences[0].name}{\"\\n\"}{end}",
        ]);
        secrets
            .lines()
            .all(|owner| jobs.contains(owner))
            .then_some(())
    })
    .await;

    // The token in no log of either release, no event, no status.
    let logs = format!("{old_logs}{}", operator_logs(&new_pods));
    assert!(
        !logs.contains(&world.token),
        "the API token is in an operator log"
    );
    for event in world.events_of("pool").await {
        let note = event.note.unwrap_or_default();
        assert!(
            !note.contains(&world.token),
            "the API token is in an event: {note}"
        );
    }
    let status = serde_json::to_string(&world.pools().get("pool").await.expect("pool").status)
        .expect("status JSON");
    assert!(
        !status.contains(&world.token),
        "the API token is in the status"
    );

    // Leave the install as the tier made it (serving its own namespace) for other tests.
    apply(&tier);
    rolled_out(&world.client, &overlay_tag(&tier)).await;
}
