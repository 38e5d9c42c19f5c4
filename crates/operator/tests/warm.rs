//! Node tier: warm runners on the real node. Two idle warm runners take two jobs without a
//! new Job, a third job gets its own (cold) Job, and when the window closes the idle ones
//! are retired (registration, then Job) while a busy one runs its job to the end. Run by
//! `cargo xtask test`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use forgejo_stand_in::StandInJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use scheduler::labels::FORGEJO_JOB_ID;
use serde_json::{Value, json};
use support::{Operator, World, node_pool, wait_for_results, wait_until};

const LONG: Duration = Duration::from_secs(180);
const WARM_PREFIX: &str = "forgejo-warm-";

/// A pool on `linux:host` keeping 2 warm runners while a schedule open all week lasts.
/// `maxRunners` 3: two busy warm runners and one cold Job fill it, so no new warm runner
/// can take the third job before its own Job does.
fn warm_pool(world: &World) -> Value {
    let mut pool = node_pool(world, "warm", "linux:host", 3);
    pool["spec"]["warmRunners"] = json!({
        "runners": [{"label": "linux", "count": 2}],
        "fetchInterval": "1s",
        "activityWindow": "10m",
        "schedules": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "start": "00:00", "end": "24:00", "timeZone": "Europe/Berlin"}],
    });
    pool
}

/// The names of the warm runners Forgejo lists as `idle` (registered, polling, no task).
fn idle_warm_runners(world: &World) -> BTreeSet<String> {
    world
        .forgejo
        .runners()
        .into_iter()
        .filter(|r| r.name.starts_with(WARM_PREFIX) && r.status == "idle")
        .map(|r| r.name)
        .collect()
}

/// The pool's `status.warmRunners` (idle, busy, kept).
async fn warm_status(world: &World) -> Option<(i32, i32, bool)> {
    let rd = world.pools().get("warm").await.ok()?;
    let warm = rd.status?.warm_runners?;
    Some((warm.idle, warm.busy, warm.kept))
}

/// Waits until Forgejo lists two idle warm runners and the pool's status agrees.
async fn two_idle_warm_runners(world: &World) -> BTreeSet<String> {
    let idle = wait_until("two idle warm runners polling Forgejo", LONG, || async {
        let idle = idle_warm_runners(world);
        (idle.len() == 2).then_some(idle)
    })
    .await;
    wait_until("status.warmRunners: 2 idle, kept", LONG, || async {
        matches!(warm_status(world).await, Some((2, _, true))).then_some(())
    })
    .await;
    // Registered and declared is not yet fetching: wait until each has asked for a task.
    wait_until("both warm runners fetching", LONG, || async {
        let fetched: BTreeSet<String> = world
            .forgejo
            .fetches()
            .into_iter()
            .map(|f| f.runner_name)
            .filter(|name| idle.contains(name))
            .collect();
        (fetched.len() == idle.len()).then_some(())
    })
    .await;
    eprintln!(
        "two idle warm runners: {idle:?}; Forgejo lists {:?}",
        runners(world)
    );
    idle
}

/// Every registration as (name, status), for the test's log.
fn runners(world: &World) -> Vec<(String, String)> {
    world
        .forgejo
        .runners()
        .into_iter()
        .map(|r| (r.name, r.status))
        .collect()
}

/// The results of `ids` (as `wait_for_results`); if they do not come, the runner pods'
/// logs are shown first: what a runner did is the first question.
async fn results_or_show_pods(world: &World, ids: &[i64]) -> BTreeMap<i64, String> {
    let wait = wait_for_results(world, ids);
    match tokio::time::timeout(LONG - Duration::from_secs(5), wait).await {
        Ok(results) => results,
        Err(_) => {
            eprintln!("{}", world.pod_logs().await);
            panic!("no result for jobs {ids:?}; the runner pods' logs are above");
        }
    }
}

fn job_of(jobs: &[Job], id: i64) -> Option<&Job> {
    jobs.iter()
        .find(|job| job.labels().get(FORGEJO_JOB_ID) == Some(&id.to_string()))
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn warm_runners_take_jobs_at_once_and_retire_only_when_idle() {
    let world = World::on_node("warm").await;
    world.create_pool_from(warm_pool(&world)).await;
    // The cleanup tests' 2 s pod-start deadline would replace a warm runner whose pod starts
    // slowly on a loaded node, and the test follows the first two runners it sees.
    let _operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            "--not-waiting-grace=2s",
            "--image-pull-deadline=60s",
            "--unschedulable-deadline=60s",
            "--retry-after=2s",
        ],
    );
    let first_warm = two_idle_warm_runners(&world).await;
    world.wait_for_event("warm", "WarmWindowOpened").await;

    // Three jobs: the two warm runners take the first two (one stays busy past the
    // window's end below), the third gets its own Job.
    let added_at = std::time::Instant::now();
    let held = world.forgejo.add_job(
        StandInJob::new("faro/app", "held", &["linux"]).with_steps(&["sleep 45", "echo held"]),
    );
    let quick = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "quick", &["linux"]).with_steps(&["echo quick"]));
    let third = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "third", &["linux"]).with_steps(&["echo third"]));
    let results = results_or_show_pods(&world, &[quick.id, third.id]).await;
    assert_eq!(results[&quick.id], "success");
    assert_eq!(results[&third.id], "success");

    // No job got two runners; the first two went to the warm runners without a Job of
    // their own, the third to the cold Job made for it.
    let fetches = world.forgejo.fetches();
    let handed: Vec<(&str, Option<i64>)> = fetches
        .iter()
        .filter(|f| f.task_id.is_some())
        .map(|f| (f.runner_name.as_str(), f.job_id))
        .collect();
    eprintln!(
        "jobs held {}, quick {}, third {}: handed out {handed:?}",
        held.id, quick.id, third.id
    );
    let runner_of = |id: i64| {
        let taken: Vec<&str> = fetches
            .iter()
            .filter(|f| f.job_id == Some(id) && f.task_id.is_some())
            .map(|f| f.runner_name.as_str())
            .collect();
        assert_eq!(taken.len(), 1, "job {id} handed out {} times", taken.len());
        taken[0].to_owned()
    };
    let jobs = world.runner_jobs().await;
    let warm_took_both = [&held, &quick].iter().all(|job| {
        fetches
            .iter()
            .any(|f| f.job_id == Some(job.id) && first_warm.contains(&f.runner_name))
    });
    if !warm_took_both {
        eprintln!(
            "a warm runner did not take its job; fetches per runner (ms after the jobs were added):"
        );
        for name in &first_warm {
            let times: Vec<u128> = fetches
                .iter()
                .filter(|f| &f.runner_name == name)
                .map(|f| f.at.saturating_duration_since(added_at).as_millis())
                .collect();
            eprintln!("  {name}: {times:?}");
        }
        eprintln!("{}", world.pod_logs().await);
    }
    for warm_taken in [&held, &quick] {
        let runner = runner_of(warm_taken.id);
        assert!(
            first_warm.contains(&runner),
            "job {} ran on {runner}, not on a warm runner ({first_warm:?})",
            warm_taken.id
        );
        assert!(
            job_of(&jobs, warm_taken.id).is_none(),
            "a Job was made for job {}, which a warm runner took",
            warm_taken.id
        );
    }
    let cold = job_of(&jobs, third.id).expect("the third job got its own Job");
    assert_eq!(runner_of(third.id), cold.name_any());
    let held_runner = runner_of(held.id);

    // The pool refills: two idle warm runners again, the held one still busy.
    let second_warm = two_idle_warm_runners(&world).await;
    assert!(
        second_warm.is_disjoint(&first_warm),
        "new runners, new names"
    );
    assert_eq!(world.forgejo.job(held.id).expect("held").status, "running");

    // The window closes (no schedule, no job waiting within 1s): the idle ones retire, the
    // busy one is left to finish its job.
    let patch = json!({"spec": {"warmRunners": {"schedules": null, "activityWindow": "1s"}}});
    world
        .pools()
        .patch("warm", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the pool");
    world.wait_for_event("warm", "WarmWindowClosed").await;
    wait_until(
        "the idle warm runners' Jobs and registrations gone",
        LONG,
        || async {
            let live: BTreeSet<String> = world
                .live_runner_jobs()
                .await
                .iter()
                .map(|job| job.name_any())
                .collect();
            let registered: BTreeSet<String> = world
                .forgejo
                .runners()
                .into_iter()
                .map(|r| r.name)
                .collect();
            (live.is_disjoint(&second_warm) && registered.is_disjoint(&second_warm)).then_some(())
        },
    )
    .await;
    assert_eq!(
        world.forgejo.job(held.id).expect("held").status,
        "running",
        "the busy warm runner was not touched"
    );
    let results = results_or_show_pods(&world, &[held.id]).await;
    assert_eq!(results[&held.id], "success");

    // Then nothing is left: no live runner Job, no registration; the held runner's Job
    // ended by itself (Complete), it was never deleted.
    wait_until("no live runner Job and no registration", LONG, || async {
        let live: Vec<String> = world
            .live_runner_jobs()
            .await
            .iter()
            .map(|job| job.name_any())
            .collect();
        let left = runners(&world);
        eprintln!("live runner Jobs {live:?}, registrations {left:?}");
        (live.is_empty() && left.is_empty()).then_some(())
    })
    .await;
    wait_until("no runner pod running or pending", LONG, || async {
        let pods: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns);
        let pods = pods.list(&ListParams::default()).await.ok()?;
        let up: Vec<String> = pods
            .items
            .iter()
            .filter(|pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                matches!(phase, Some("Running" | "Pending"))
            })
            .map(|pod| pod.name_any())
            .collect();
        up.is_empty().then_some(())
    })
    .await;
    let held_job = world
        .runner_jobs()
        .await
        .into_iter()
        .find(|job| job.name_any() == held_runner)
        .expect("the held runner's Job is kept until its TTL");
    assert!(support::is_finished(&held_job), "it finished by itself");
    assert!(held_job.metadata.deletion_timestamp.is_none());
    assert_eq!(
        warm_status(&world)
            .await
            .map(|(idle, _, kept)| (idle, kept)),
        Some((0, false))
    );
}
