//! Fault tier, apiserver faults: the apiserver killed and started again (by
//! `xtask cluster up`, which restarts what died and keeps etcd's data), and the apiserver
//! frozen (SIGSTOP) and thawed. Its own test binary, because every other test of the run
//! needs the apiserver: test binaries run one after another.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use forgejo_stand_in::StandInJob;
use support::{Operator, World, wait_until};

const LONG: Duration = Duration::from_secs(90);

/// The pid of the running kube-apiserver, from the cluster's state file.
fn apiserver_pid() -> u32 {
    let kubeconfig =
        PathBuf::from(std::env::var("FRC_TEST_KUBECONFIG").expect("FRC_TEST_KUBECONFIG"));
    let state = kubeconfig.with_file_name("state.json");
    let text = std::fs::read_to_string(&state)
        .unwrap_or_else(|e| panic!("reading {}: {e}", state.display()));
    let state: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
    state["processes"]
        .as_array()
        .and_then(|processes| processes.iter().find(|p| p["name"] == "kube-apiserver"))
        .and_then(|p| p["pid"].as_u64())
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("state.json names the kube-apiserver's pid")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

async fn add_jobs(world: &World, prefix: &str, n: usize) {
    for i in 0..n {
        world.forgejo.add_job(StandInJob::new(
            "faro/app",
            &format!("{prefix}-{i}"),
            &["docker"],
        ));
    }
}

async fn wait_for_jobs(world: &World, n: usize, what: &str) -> Duration {
    let started = Instant::now();
    wait_until(what, LONG, || async {
        // The apiserver may still refuse while it starts: that is not an answer yet.
        (world.runner_jobs_opt().await?.len() == n).then_some(())
    })
    .await;
    started.elapsed()
}

/// Starts whatever died again (`xtask cluster up`) when dropped, so that a failure here does
/// not leave the next test binaries without an apiserver.
struct RestartWhatDied;

impl Drop for RestartWhatDied {
    fn drop(&mut self) {
        if let Ok(xtask) = std::env::var("FRC_TEST_XTASK") {
            let _ = Command::new(xtask).args(["cluster", "up"]).status();
        }
    }
}

#[tokio::test]
#[ignore = "fault tier: run by cargo xtask test"]
async fn the_apiserver_killed_or_frozen_loses_and_duplicates_nothing() {
    let world = World::new("apiserver").await;
    world.create_pool("pool", "faro", "docker", 100).await;
    let operator = Operator::start(&world.ns);
    add_jobs(&world, "before", 2).await;
    wait_for_jobs(&world, 2, "2 runner Jobs").await;

    // Killed: jobs arrive while it is down; `xtask cluster up` starts it again on etcd's data.
    let _restart = RestartWhatDied;
    signal(apiserver_pid(), "KILL");
    add_jobs(&world, "while-down", 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let xtask = std::env::var("FRC_TEST_XTASK").expect("FRC_TEST_XTASK (run by cargo xtask test)");
    let up =
        tokio::task::spawn_blocking(move || Command::new(xtask).args(["cluster", "up"]).status())
            .await
            .expect("join")
            .expect("running xtask cluster up");
    assert!(
        up.success(),
        "xtask cluster up could not start the apiserver again"
    );
    let recovery = wait_for_jobs(&world, 4, "4 runner Jobs after the restart").await;
    println!(
        "apiserver killed for 5 s: the jobs that came meanwhile had Jobs {recovery:?} after it was back"
    );
    assert!(
        world.pools().get("pool").await.is_ok(),
        "the pool is gone: cluster up did not keep etcd's data"
    );
    assert!(
        operator.get("/healthz").is_some(),
        "the operator died with the apiserver"
    );

    // Frozen: the apiserver keeps its connections open but answers nothing for 15 s.
    let pid = apiserver_pid();
    signal(pid, "STOP");
    add_jobs(&world, "while-frozen", 2).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    signal(pid, "CONT");
    let recovery = wait_for_jobs(&world, 6, "6 runner Jobs after the thaw").await;
    println!(
        "apiserver frozen for 15 s: the jobs that came meanwhile had Jobs {recovery:?} after the thaw"
    );

    world.wait_for_polls(3).await;
    world.assert_one_job_each(6).await;
    assert!(
        !operator.logs().contains(&world.token),
        "the token is in the operator's log"
    );
}
