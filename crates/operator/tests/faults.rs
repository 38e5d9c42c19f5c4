//! Fault tier: the operator binary against the real control plane and the Forgejo stand-in,
//! under faults of Forgejo, of the apiserver and of itself. Every scenario ends by checking
//! one Job per waiting job, no job lost, no runner registration left behind, the token in no
//! log, event or status, and how long recovery took. `cargo xtask test` runs these;
//! `cargo xtask chaos` runs them with longer outages and more rounds (`FRC_CHAOS=full`).

mod support;

use std::time::{Duration, Instant};

use support::partition::Partition;
use support::{Operator, World, wait_until};

const LONG: Duration = Duration::from_secs(60);
const LEADER_METRIC: &str = "forgejo_runner_controller_lease_is_leader";

fn election_args(world: &World, identity: &str, duration_secs: u64) -> Vec<String> {
    let mut args = vec![
        "--leader-election=true".to_owned(),
        "--lease-namespace=forgejo-runner-system".to_owned(),
        format!("--lease-duration-seconds={duration_secs}"),
        format!("--lease-name=faults-{}", world.ns),
        format!("--identity={identity}"),
    ];
    args.extend(support::FAST_TIMEOUTS.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn a_leader_cut_off_from_the_apiserver_stops_before_another_replica_takes_over() {
    const DURATION: u64 = 6;
    let world = World::new("partition").await;
    let partition = Partition::start(std::path::Path::new(&support::operator_kubeconfig())).await;
    let a_args = election_args(&world, "cut-off", DURATION);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let kubeconfig = partition.kubeconfig().to_string_lossy().into_owned();
    let mut a = Operator::start_with_kubeconfig(&kubeconfig, &world.ns, &a_refs);
    wait_until("the first replica to lead", LONG, || async {
        (a.metric(LEADER_METRIC)? == 1.0).then_some(())
    })
    .await;

    partition.cut();
    let cut_at = Instant::now();
    let b_args = election_args(&world, "connected", DURATION);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = Operator::start_with(&world.ns, &b_refs);

    let mut a_stopped = None;
    let mut b_started = None;
    while (a_stopped.is_none() || b_started.is_none()) && cut_at.elapsed() < LONG {
        if a_stopped.is_none() && a.metric(LEADER_METRIC) == Some(0.0) {
            a_stopped = Some(cut_at.elapsed());
        }
        if b_started.is_none() && b.metric(LEADER_METRIC) == Some(1.0) {
            b_started = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = a.logs();
    a.kill();
    b.kill();
    let a_stopped = a_stopped.unwrap_or_else(|| {
        panic!("the cut-off leader still says it leads after {LONG:?}; its log:\n{logs}")
    });
    let b_started = b_started.expect("the connected replica never took the Lease");
    println!("cut-off leader stopped after {a_stopped:?}; the other took over after {b_started:?}");
    assert!(
        a_stopped < b_started,
        "both led at once: the cut-off leader stopped at {a_stopped:?}, the other started at {b_started:?}"
    );
    assert!(
        a_stopped <= Duration::from_secs(DURATION),
        "the cut-off leader kept leading {a_stopped:?}, past its {DURATION} s Lease"
    );
}
