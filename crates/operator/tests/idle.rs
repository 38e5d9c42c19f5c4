//! Cluster tier: what an idle pool costs Forgejo. The operator binary, holding only its
//! generated RBAC, against the real control plane and the Forgejo stand-in, whose request
//! log tells each listing apart. Run by `cargo xtask test`.

mod support;

use std::time::{Duration, Instant};

use forgejo::Scope;
use forgejo_stand_in::RecordedRequest;
use kube::ResourceExt as _;
use scheduler::REGISTRATION_SWEEP_POLLS;
use scheduler::naming::RunnerJobName;
use serde_json::json;
use support::{Operator, World, wait_until};

/// The pool's `pollInterval`.
const INTERVAL: Duration = Duration::from_secs(1);

/// Long enough for one sweep period (the polls without a listing, the sweep's own poll) and
/// for a reconcile's own time on each poll of it.
fn sweep_period_bound() -> Duration {
    INTERVAL * (REGISTRATION_SWEEP_POLLS + 1) * 2 + Duration::from_secs(10)
}

fn is_jobs_listing(request: &RecordedRequest) -> bool {
    request.method == "GET" && request.path.ends_with("/actions/runners/jobs")
}

fn is_registrations_listing(request: &RecordedRequest) -> bool {
    request.method == "GET" && request.path.ends_with("/actions/runners")
}

/// The positions of the registration listings in the stand-in's log.
fn registration_listings(world: &World) -> Vec<usize> {
    world
        .forgejo
        .requests()
        .iter()
        .enumerate()
        .filter(|(_, request)| is_registrations_listing(request))
        .map(|(at, _)| at)
        .collect()
}

/// Waits until the stand-in's log holds more than `seen` registration listings.
async fn wait_for_registration_listing(world: &World, seen: usize, what: &str) -> Vec<usize> {
    wait_until(what, sweep_period_bound(), || async {
        let listings = registration_listings(world);
        (listings.len() > seen).then_some(listings)
    })
    .await
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn an_idle_pool_lists_only_jobs_between_sweeps_and_its_sweep_deletes_an_orphan() {
    let world = World::new("idle").await;
    let rd = world
        .create_pool_from(json!({
            "metadata": {"name": "idle"},
            "spec": {
                "forgejoServer": world.forgejo.url(),
                "organization": "faro",
                "labels": "docker",
                "tokenSecretRef": {"name": "forgejo-token", "key": "token"},
                "pollInterval": "1s",
                "maxRunners": 4,
                "cache": {"mode": "Disabled"},
            }
        }))
        .await;
    let _operator = Operator::start(&world.ns);

    // A replica lists a pool's registrations on its first poll (it never saw them), then
    // only at the sweep: between the two, each poll is one request, the jobs listing.
    let first = wait_for_registration_listing(&world, 0, "the first poll's listing").await;
    let first_seen = Instant::now();
    let sweep = wait_for_registration_listing(&world, first.len(), "the sweep's listing").await;
    let sweep_seen = Instant::now();
    let log = world.forgejo.requests();
    let between = &log[first[first.len() - 1] + 1..sweep[first.len()]];
    let jobs_listings = between.iter().filter(|r| is_jobs_listing(r)).count();
    let others: Vec<&RecordedRequest> = between.iter().filter(|r| !is_jobs_listing(r)).collect();
    assert!(
        others.is_empty(),
        "other requests between sweeps: {others:?}"
    );
    let polls = usize::try_from(REGISTRATION_SWEEP_POLLS).expect("a small number");
    assert_eq!(
        jobs_listings,
        polls + 1,
        "{polls} polls of one jobs listing each, then the sweep's poll lists jobs and registrations"
    );
    // Listings are at least an interval apart, so these took over 10 intervals.
    let took = sweep_seen - first_seen;
    assert!(
        took >= INTERVAL * REGISTRATION_SWEEP_POLLS,
        "{} jobs listings in {took:?}: more than one per interval",
        polls + 1
    );

    // An orphan: a registration named as the operator names this pool's, without a Job (as
    // a crash between registering and making the Job's Secret would leave it, the Job
    // deleted since). The pool has no Job and no Secret, so only a sweep lists it.
    let uid = rd.uid().expect("the pool has a uid");
    let name = RunnerJobName::new(&uid, 999_999, Some(1)).expect("a name");
    let orphan = world
        .forgejo
        .add_runner(&Scope::Organization("faro".into()), name.as_str(), true);
    let added = Instant::now();
    wait_until(
        "the sweep to delete the orphan registration",
        sweep_period_bound(),
        || async { world.forgejo.runners().is_empty().then_some(()) },
    )
    .await;
    let removed_after = added.elapsed();
    assert!(
        removed_after <= INTERVAL * (REGISTRATION_SWEEP_POLLS + 2) + Duration::from_secs(5),
        "the orphan went after {removed_after:?}, later than one sweep period"
    );
    let deletes = world.forgejo.count_requests(|r| {
        r.method == "DELETE" && r.path.ends_with(&format!("/actions/runners/{}", orphan.id))
    });
    assert_eq!(deletes, 1, "deleted once");
    assert!(
        world.runner_jobs().await.is_empty(),
        "no runner Job was made"
    );
    let event = world.wait_for_event("idle", "RegistrationOrphaned").await;
    let note = event.note.unwrap_or_default();
    assert!(note.contains(name.as_str()), "the event names it: {note}");
    println!(
        "idle pool: {jobs_listings} jobs listings and no other request in {took:?} between two registration listings; the orphan deleted {removed_after:?} after it was added"
    );
}
