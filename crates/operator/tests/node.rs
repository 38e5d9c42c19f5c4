//! Node tier: runner pods really run on the local node (containerd + runc + kubelet), from
//! the runner test image (`/bin/forgejo-runner` = the runner double, or the real runner given
//! in `FRC_E2E_RUNNER`), against the Forgejo stand-in's runner service. The operator binary
//! runs as its ServiceAccount on this machine. Run by `cargo xtask test`.

mod support;

use std::time::Duration;

use forgejo_stand_in::{StandInConfig, StandInJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use scheduler::labels::FORGEJO_JOB_ID;
use serde_json::json;
use support::{Operator, World, kubectl, kubelet, node_pool, wait_for_results, wait_until};

const LONG: Duration = Duration::from_secs(120);

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone().unwrap_or_default()))
}

/// The waiting reasons of a pod's containers and init containers.
fn waiting_reasons(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect()
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn missing_image_gets_a_real_image_pull_error_and_is_cleaned_up() {
    let world = World::on_node("pull").await;
    for name in ["build", "test"] {
        world
            .forgejo
            .add_job(StandInJob::new("faro/app", name, &["linux"]));
    }
    let mut pool = node_pool(&world, "pool", "linux:host", 1);
    pool["spec"]["runnerImage"] = "localhost/frc-does-not-exist:1".into();
    world.create_pool_from(pool).await;
    // Long enough to see the kubelet's own report before the operator acts on it.
    let operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            "--not-waiting-grace=2s",
            "--image-pull-deadline=8s",
            "--unschedulable-deadline=2s",
            "--retry-after=2s",
        ],
    );
    let stuck = wait_until("one runner Job", LONG, || async {
        world.runner_jobs().await.into_iter().next()
    })
    .await;

    // The kubelet itself reports the pull failure: no stand-in wrote this status.
    let reason = wait_until("ErrImagePull or ImagePullBackOff", LONG, || async {
        let pods = kubelet::pods_of_job(&world.client, &world.ns, &stuck.name_any())
            .await
            .ok()?;
        let pod = pods.first()?;
        // A pod is seen before the scheduler binds it; only a bound pod can be judged.
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())?;
        assert_eq!(node, "frc-node", "the pod is not on the real node");
        waiting_reasons(pod)
            .into_iter()
            .find(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    })
    .await;
    eprintln!("kubelet reported {reason}");

    let event = world.wait_for_event("pool", "ImagePullFailed").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("frc-does-not-exist"), "event note: {note}");
    // The pool says why, naming the image, and pauses: no Job (and registration) churn.
    world
        .wait_for_condition("pool", "Ready", "False", "ImagePullFailed")
        .await;
    let rd = world.pools().get("pool").await.expect("pool");
    let ready = rd
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert!(
        ready.message.contains("frc-does-not-exist"),
        "Ready: {}",
        ready.message
    );
    let stuck_uid = stuck.uid();
    let paused_at = std::time::Instant::now();
    while paused_at.elapsed() < Duration::from_secs(4) {
        let live = world.live_runner_jobs().await;
        assert!(
            live.iter().all(|job| job.uid() == stuck_uid),
            "a new runner Job was made at once for a pool whose image cannot be pulled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // After the pause, capacity is freed: with maxRunners 1, a new Job replaces the stuck one.
    wait_until("a new runner Job in the freed slot", LONG, || async {
        let live = world.live_runner_jobs().await;
        (live.len() == 1 && live[0].uid() != stuck_uid).then_some(())
    })
    .await;
    let cleaned = operator
        .metric("forgejo_runner_controller_cleanups_total{reason=\"ImagePullFailed\"}")
        .unwrap_or(0.0);
    assert!(cleaned >= 1.0, "cleanup not counted");
    // The stuck Job's registration went with it.
    let name = stuck.name_any();
    wait_until("the stuck Job's registration to go", LONG, || async {
        (!world.forgejo.runners().iter().any(|r| r.name == name)).then_some(())
    })
    .await;
}

/// The runner Job of Forgejo job `id`.
fn job_for(jobs: &[Job], id: i64) -> Option<&Job> {
    jobs.iter()
        .find(|job| job.labels().get(FORGEJO_JOB_ID) == Some(&id.to_string()))
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn waiting_jobs_run_on_the_node_each_in_its_own_pod_with_its_own_result() {
    let world = World::on_node("e2e").await;
    let token_file = scheduler::TOKEN_FILE;
    let build = world.forgejo.add_job(
        StandInJob::new("faro/app", "build", &["linux"])
            .with_steps(&["echo build-output-$((6*7))"]),
    );
    // The pod's identity: uid 1000, the token file 0440 of group 1000, the uuid in the env.
    let ident =
        world.forgejo.add_job(
            StandInJob::new("faro/app", "ident", &["linux"]).with_steps(&[
                "echo uid=$(id -u)",
                &format!("echo token-mode=$(stat -L -c '%a:%g' {token_file})"),
                "test -n \"$FORGEJO_RUNNER_UUID\" && echo uuid-from-env",
            ]),
        );
    let failing = world.forgejo.add_job(
        StandInJob::new("faro/app", "fails", &["linux"])
            .with_steps(&["echo about-to-fail", "exit 3"]),
    );
    // Kubernetes mode: the step runs in the label image, which alone has this file.
    let kube = world.forgejo.add_job(
        StandInJob::new("faro/app", "in-label-image", &["k8s"])
            .with_steps(&["cat /etc/frc-label-image"]),
    );
    let labels = format!("linux:host,k8s:kubernetes://{}", support::label_image());
    world
        .create_pool_from(node_pool(&world, "pool", &labels, 10))
        .await;
    let operator = Operator::start(&world.ns);

    let ids = [build.id, ident.id, failing.id, kube.id];
    let results = wait_for_results(&world, &ids).await;
    assert_eq!(results[&build.id], "success");
    assert_eq!(results[&ident.id], "success");
    assert_eq!(results[&failing.id], "failure");
    assert_eq!(results[&kube.id], "success");

    // Each pod ran exactly its own job: each handle fetched once, by the runner registered
    // for that job's Kubernetes Job.
    let jobs = world.runner_jobs().await;
    assert_eq!(jobs.len(), 4, "one runner Job per waiting job");
    let fetches = world.forgejo.fetches();
    for forgejo_job in [&build, &ident, &failing, &kube] {
        let handle = forgejo_job.handle.clone().expect("v15 handle");
        let job = job_for(&jobs, forgejo_job.id).expect("a runner Job");
        let of_handle: Vec<_> = fetches
            .iter()
            .filter(|f| f.handle.as_deref() == Some(handle.as_str()) && f.task_id.is_some())
            .collect();
        assert_eq!(
            of_handle.len(),
            1,
            "handle of job {} fetched: {fetches:?}",
            forgejo_job.id
        );
        assert_eq!(
            of_handle[0].runner_name,
            job.name_any(),
            "fetched by another runner"
        );
    }

    // The step output reached Forgejo's log rows, and only them: the pod's log holds the
    // runner's own lines (what the real forgejo-runner prints), not what the steps printed.
    let expect = [
        (build.id, "build-output-42"),
        (ident.id, "uid=1000"),
        (ident.id, "token-mode=440:1000"),
        (ident.id, "uuid-from-env"),
        (failing.id, "about-to-fail"),
        (kube.id, "frc-label-image"),
    ];
    for (id, line) in expect {
        let rows = world.forgejo.log_lines(id);
        assert!(
            rows.iter().any(|row| row.contains(line)),
            "job {id}: {line:?} not in the stand-in's log rows {rows:?}"
        );
    }
    // Outputs that only running the step makes (the scripts hold the other words).
    let step_only = [
        (build.id, "build-output-42"),
        (ident.id, "uid=1000"),
        (ident.id, "token-mode=440:1000"),
    ];
    for id in ids {
        let job = job_for(&jobs, id).expect("a runner Job");
        let logs = kubectl(&["logs", "-n", &world.ns, &format!("job/{}", job.name_any())]);
        assert!(
            logs.contains("single task poller successfully fetched one task"),
            "job {id}: the runner's fetch line is not in kubectl logs:\n{logs}"
        );
        for (_, line) in step_only.iter().filter(|(of, _)| *of == id) {
            assert!(
                !logs.contains(line),
                "job {id}: step output {line:?} in kubectl logs:\n{logs}"
            );
        }
    }

    // Every Job Complete (a failed workflow is still a runner that did its work), and no
    // runner registration left: Forgejo deleted each ephemeral runner after its task.
    wait_until("4 Jobs Complete", LONG, || async {
        let jobs = world.runner_jobs().await;
        (jobs.len() == 4 && jobs.iter().all(|j| condition(j, "Complete").is_some())).then_some(())
    })
    .await;
    wait_until("no runner registration left", LONG, || async {
        world.forgejo.runners().is_empty().then_some(())
    })
    .await;

    // The job metrics: each job once in the finished counter with its result (from the
    // repository's task listing), and its wait, runner start and run time counted.
    let finished = "forgejo_runner_controller_jobs_finished_total";
    let of_app = r#"repository="faro/app""#;
    wait_until("the 4 jobs counted by result", LONG, || async {
        let success = operator.metric_sum(finished, &[of_app, r#"result="success""#]);
        let failure = operator.metric_sum(finished, &[of_app, r#"result="failure""#]);
        (success == 3.0 && failure == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        operator.metric_sum(finished, &[]),
        4.0,
        "each job counted once"
    );
    let linux = [of_app, r#"label="linux""#];
    assert_eq!(
        operator.metric_sum(finished, &[of_app, r#"label="k8s""#]),
        1.0,
        "labelled by runs-on"
    );
    for histogram in ["job_wait_seconds", "job_run_seconds"] {
        let name = format!("forgejo_runner_controller_{histogram}_count");
        assert_eq!(operator.metric_sum(&name, &linux), 3.0, "{histogram}");
    }
    assert_eq!(
        operator.metric_sum("forgejo_runner_controller_runner_start_seconds_count", &[]),
        4.0,
        "each runner Job's start"
    );
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn job_cancelled_before_its_pod_fetched_it_ends_the_pod_and_is_cleaned_up() {
    let world = World::on_node("cancel").await;
    let job = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]));
    let handle = job.handle.clone().expect("v15 handle");
    // The pod starts, but an init container holds the runner back until the test has
    // cancelled the job: the order is decided here, not by timing.
    let mut pool = node_pool(&world, "pool", "linux:host", 10);
    pool["spec"]["jobTemplate"]["spec"]["initContainers"] = json!([{
        "name": "gate",
        "image": support::label_image(),
        "command": ["sh", "-c", "until [ -e /gate/open ]; do sleep 0.2; done"],
        "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
    }]);
    pool["spec"]["jobTemplate"]["spec"]["volumes"] = json!([{"name": "gate", "emptyDir": {}}]);
    world.create_pool_from(pool).await;
    let _operator = Operator::start(&world.ns);
    let runner_job = wait_until("a runner Job", LONG, || async {
        world.runner_jobs().await.into_iter().next()
    })
    .await;
    let name = runner_job.name_any();
    let pod = wait_until("its pod on the node, held at the gate", LONG, || async {
        let pods = kubelet::pods_of_job(&world.client, &world.ns, &name)
            .await
            .ok()?;
        let pod = pods.into_iter().next()?;
        let running_gate = pod
            .status
            .as_ref()?
            .init_container_statuses
            .as_ref()?
            .iter()
            .any(|c| c.name == "gate" && c.state.as_ref().is_some_and(|s| s.running.is_some()));
        running_gate.then_some(pod)
    })
    .await;

    assert!(world.forgejo.cancel_job(job.id), "cancelling the job");
    // Open the gate: the runner starts and asks for a job that is no longer there.
    kubectl(&[
        "exec",
        "-n",
        &world.ns,
        &pod.name_any(),
        "-c",
        "gate",
        "--",
        "touch",
        "/gate/open",
    ]);
    wait_until(
        "the Job, pod, Secret and registration to go",
        LONG,
        || async {
            let job_gone = world
                .runner_jobs()
                .await
                .iter()
                .all(|j| j.name_any() != name || j.metadata.deletion_timestamp.is_some());
            let pods_gone = kubelet::pods_of_job(&world.client, &world.ns, &name)
                .await
                .ok()?
                .is_empty();
            let secret_gone = world
                .secret(&name)
                .await
                .is_none_or(|s| s.metadata.deletion_timestamp.is_some());
            let registration_gone = !world.forgejo.runners().iter().any(|r| r.name == name);
            (job_gone && pods_gone && secret_gone && registration_gone).then_some(())
        },
    )
    .await;
    assert!(
        !world
            .forgejo
            .fetches()
            .iter()
            .any(|f| f.handle.as_deref() == Some(handle.as_str()) && f.task_id.is_some()),
        "a cancelled job was handed to a runner"
    );
    world.wait_for_event("pool", "ForgejoJobNotWaiting").await;
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn pod_past_active_deadline_is_failed_by_kubernetes_and_its_slot_freed() {
    let world = World::on_node("deadline").await;
    let long = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "endless", &["linux"]).with_steps(&["sleep 600"]));
    let mut pool = node_pool(&world, "pool", "linux:host", 1);
    // The smallest deadline the CRD allows.
    pool["spec"]["activeDeadlineSeconds"] = 60.into();
    world.create_pool_from(pool).await;
    let _operator = Operator::start(&world.ns);
    let stuck = wait_until("the endless job's runner Job", LONG, || async {
        job_for(&world.runner_jobs().await, long.id).cloned()
    })
    .await;
    // A second job waits for the only slot.
    let next = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "next", &["linux"]));
    let (_, reason) = wait_until(
        "Kubernetes to fail the Job",
        Duration::from_secs(150),
        || async {
            let job = world
                .runner_jobs()
                .await
                .into_iter()
                .find(|j| j.uid() == stuck.uid())?;
            condition(&job, "Failed")
        },
    )
    .await;
    assert_eq!(reason, "DeadlineExceeded");
    // The slot is free: the next job gets its runner and runs.
    let results = wait_for_results(&world, &[next.id]).await;
    assert_eq!(results[&next.id], "success");
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn forgejo_14_registration_token_path_runs_a_job() {
    let world = World::on_node_with("legacy", |config| StandInConfig {
        version: "14.0.2+gitea-1.22.0".into(),
        ..config
    })
    .await;
    let job = world.forgejo.add_job(
        StandInJob::new("faro/app", "build", &["linux"]).with_steps(&["echo legacy-path-ran"]),
    );
    world
        .create_pool_from(node_pool(&world, "pool", "linux:host", 10))
        .await;
    let _operator = Operator::start(&world.ns);
    let results = wait_for_results(&world, &[job.id]).await;
    assert_eq!(results[&job.id], "success");
    let rows = world.forgejo.log_lines(job.id);
    assert!(
        rows.iter().any(|r| r.contains("legacy-path-ran")),
        "log rows: {rows:?}"
    );
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn under_restricted_pod_security_host_mode_runs_and_a_refused_mode_is_reported_and_freed() {
    let world = World::on_node("restricted").await;
    kubectl(&[
        "label",
        "namespace",
        &world.ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let host = world.forgejo.add_job(
        StandInJob::new("faro/app", "host", &["linux"]).with_steps(&["echo restricted-ok"]),
    );
    let kube = world.forgejo.add_job(
        StandInJob::new("faro/app", "in-label-image", &["k8s"])
            .with_steps(&["cat /etc/frc-label-image"]),
    );
    let labels = format!("linux:host,k8s:kubernetes://{}", support::label_image());
    world
        .create_pool_from(node_pool(&world, "pool", &labels, 10))
        .await;
    let operator = Operator::start_with(
        &world.ns,
        &[
            "--leader-election=false",
            "--pod-create-deadline=5s",
            "--image-pull-deadline=60s",
        ],
    );

    // Host mode's pod is restricted-compatible: it runs its job.
    let results = wait_for_results(&world, &[host.id]).await;
    assert_eq!(results[&host.id], "success");

    // Kubernetes mode's is refused by admission: the pool says so, with Kubernetes' words,
    // and the Job goes, freeing its slot, instead of holding it until activeDeadlineSeconds.
    let event = world.wait_for_event("pool", "PodNotCreated").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("PodSecurity"),
        "the event lacks the admission reason: {note}"
    );
    world
        .wait_for_condition("pool", "Ready", "False", "PodNotCreated")
        .await;
    wait_until("the refused Job to go", LONG, || async {
        let jobs = world.live_runner_jobs().await;
        job_for(&jobs, kube.id).is_none().then_some(())
    })
    .await;
    let freed = operator
        .metric("forgejo_runner_controller_cleanups_total{reason=\"PodNotCreated\"}")
        .unwrap_or(0.0);
    assert!(freed >= 1.0, "the cleanup was not counted");
}

/// A step that looks an entry up in the shared cache through the runner's cache proxy, as
/// `actions/cache` does (`$ACTIONS_CACHE_URL`), and prints the status line it got.
const CACHE_LOOKUP_STEP: &str = "wget -S -O /dev/null \"${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node&version=1\" 2>&1 | grep 'HTTP/'";

/// A step that saves an entry in the shared cache through the runner's proxy, as
/// `actions/cache` does: reserve, upload, commit (busybox `nc`: `wget` has no PATCH).
const CACHE_SAVE_STEP: &str = r#"set -eu
u=${ACTIONS_CACHE_URL#http://}; hp=${u%%/*}; base=/${u#*/}; host=${hp%:*}; port=${hp##*:}
# nc half-closes at the end of its input, which a Go server takes for a cancelled request:
# keep the input open until the answer is in.
ask() { { printf "$@"; sleep 1; } | nc "$host" "$port"; }
body='{"key":"frc-node-entry","version":"v1","cacheSize":15}'
reserved=$(ask 'POST %s_apis/artifactcache/caches HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$base" "$hp" "${#body}" "$body")
id=$(echo "$reserved" | sed -n 's/.*"cacheId": *\([0-9]*\).*/\1/p')
ask 'PATCH %s_apis/artifactcache/caches/%s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-14/*\r\nContent-Length: 15\r\n\r\nfrc-cached-data' "$base" "$id" "$hp" | head -1
ask 'POST %s_apis/artifactcache/caches/%s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n\r\n' "$base" "$id" "$hp" | head -1
echo "saved cache entry $id""#;

/// A step that restores that entry: a lookup (a hit names the archive) and its download.
const CACHE_RESTORE_STEP: &str = r#"set -eu
hit=$(wget -q -O- "${ACTIONS_CACHE_URL}_apis/artifactcache/cache?keys=frc-node-entry&version=v1")
archive=$(echo "$hit" | sed -n 's/.*"archiveLocation": *"\([^"]*\)".*/\1/p')
echo "restored: $(wget -q -O- "$archive")""#;

/// The first log line of job `job_id` that starts with `text` (the step's header row holds
/// its script, so a match anywhere would find the script itself).
async fn log_line_with(world: &World, job_id: i64, text: &str) -> String {
    wait_until(
        &format!("job {job_id}'s log line with {text:?}"),
        LONG,
        || async {
            world
                .forgejo
                .log_lines(job_id)
                .into_iter()
                .find(|line| line.trim_start().starts_with(text))
        },
    )
    .await
}

/// The status line job `job_id`'s cache lookup step printed.
async fn cache_status(world: &World, job_id: i64) -> String {
    wait_until(&format!("job {job_id}'s cache lookup"), LONG, || async {
        world
            .forgejo
            .log_lines(job_id)
            .into_iter()
            .find(|line| line.trim_start().starts_with("HTTP/1.1 "))
    })
    .await
}

#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn runner_pods_share_the_pools_cache_server_and_a_wrong_secret_is_refused() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};

    let world = World::on_node("cache").await;
    // The volume as an admin prepares it: writable by the server's uid and gid, 1000.
    let (class, dir) = cache_volume(&world, 1000).await;
    let mut pool = node_pool(&world, "pool", "linux:host", 2);
    pool["spec"]["cache"] =
        json!({"mode": "Managed", "storage": {"storageClassName": class, "size": "1Gi"}});
    world.create_pool_from(pool).await;
    let _operator = Operator::start(&world.ns);
    world
        .wait_for_condition("pool", "CacheReady", "True", "ServerAvailable")
        .await;

    // The runner's proxy reaches the server through the Service (a miss: 204), signed with
    // the pool's secret.
    let first = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]).with_steps(&[CACHE_LOOKUP_STEP]));
    let status = cache_status(&world, first.id).await;
    assert!(status.contains("HTTP/1.1 204"), "{status}");

    // One pod saves an entry; a later pod restores it: the cache outlives the pods.
    let save = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "save", &["linux"]).with_steps(&[CACHE_SAVE_STEP]));
    log_line_with(&world, save.id, "saved cache entry").await;
    let restore = world.forgejo.add_job(
        StandInJob::new("faro/app", "restore", &["linux"]).with_steps(&[CACHE_RESTORE_STEP]),
    );
    let restored = log_line_with(&world, restore.id, "restored:").await;
    assert_eq!(
        restored.trim(),
        "restored: frc-cached-data",
        "{:?}",
        world.forgejo.log_lines(restore.id)
    );
    // The server keeps its entries on the volume, under `cache/` (the real server's too).
    assert!(
        dir.join("cache").is_dir(),
        "nothing under {}",
        dir.display()
    );

    // A runner with another secret than the server's is refused.
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns);
    let patch = json!({"stringData": {"secret": "not-the-servers-secret"}});
    secrets
        .patch("pool-cache", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("changing the runners' secret");
    let second = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "test", &["linux"]).with_steps(&[CACHE_LOOKUP_STEP]));
    let status = cache_status(&world, second.id).await;
    assert!(status.contains("HTTP/1.1 403"), "{status}");
    let results = wait_for_results(&world, &[first.id, save.id, restore.id, second.id]).await;
    assert_eq!(results[&first.id], "success");
    assert_eq!(results[&save.id], "success");
    assert_eq!(results[&restore.id], "success");
    assert_eq!(
        results[&second.id], "success",
        "a refused cache fails no job, as with actions/cache"
    );
    remove_cache_volume(&world, &class, &dir).await;
}

/// A hostPath PersistentVolume on a directory of this machine (the node), made as an admin
/// makes it: owned by `owner` (uid and gid), mode 0755. The node has no provisioner, so the
/// test plays the admin; `fsGroup` does not apply to hostPath, so the owner is what the
/// server gets. Returns its storage class (also its name) and the directory.
async fn cache_volume(world: &World, owner: u32) -> (String, std::path::PathBuf) {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::api::{Api, PostParams};
    use std::os::unix::fs::PermissionsExt as _;

    let class = format!("frc-cache-{}", world.ns);
    let dir = std::path::PathBuf::from(format!("/tmp/{class}"));
    std::fs::create_dir_all(&dir).expect("the volume's directory");
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).expect("chown of the volume");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod of the volume");
    let volumes: Api<PersistentVolume> = Api::all(world.client.clone());
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": class},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "hostPath": {"path": dir, "type": "Directory"},
        }
    }))
    .expect("volume");
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .expect("creating the volume");
    (class, dir)
}

/// Deletes what [`cache_volume`] made.
async fn remove_cache_volume(world: &World, class: &str, dir: &std::path::Path) {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::api::Api;

    let volumes: Api<PersistentVolume> = Api::all(world.client.clone());
    let _ = volumes.delete(class, &Default::default()).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A cache volume the server cannot write (root's, mode 0755, as a hostPath or some NFS
/// volumes come, whatever `fsGroup` says) ends `forgejo-runner cache-server` at once with
/// "mkdir …/cache: permission denied": `CacheReady` is False (ServerFailing) and quotes
/// that error, not the crash loop's back-off, and so does the event. Jobs still run.
#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_cache_volume_the_server_cannot_write_is_reported_with_the_servers_error() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;

    let world = World::on_node("cache-denied").await;
    let (class, dir) = cache_volume(&world, 0).await;
    let mut pool = node_pool(&world, "pool", "linux:host", 2);
    pool["spec"]["cache"] =
        json!({"mode": "Managed", "storage": {"storageClassName": class, "size": "1Gi"}});
    world.create_pool_from(pool).await;
    let _operator = Operator::start(&world.ns);

    let denied = format!(
        "mkdir {}/cache: permission denied",
        scheduler::CACHE_DATA_DIR
    );
    let message = wait_until("CacheReady quoting the server's error", LONG, || async {
        let rd = world.pools().get("pool").await.ok()?;
        let condition = rd
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "CacheReady")?;
        (condition.status == "False"
            && condition.reason == "ServerFailing"
            && condition.message.contains(&denied))
        .then_some(condition.message)
    })
    .await;
    assert!(message.contains("pool-cache"), "{message}");
    let note = wait_until(
        "a CacheServerFailing event with the error",
        LONG,
        || async {
            world
                .events_of("pool")
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("CacheServerFailing"))
                .filter_map(|e| e.note)
                .find(|note| note.contains(&denied))
        },
    )
    .await;
    assert!(!dir.join("cache").exists(), "the server wrote the volume");

    // The quote holds the server's words only, never the pool's secret.
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), &world.ns);
    let hmac = secrets
        .get("pool-cache")
        .await
        .expect("the cache Secret")
        .data
        .and_then(|d| {
            d.get("secret")
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
        .expect("the HMAC secret");
    assert!(!message.contains(&hmac) && !note.contains(&hmac));

    // The cache never holds a job back.
    let job = world
        .forgejo
        .add_job(StandInJob::new("faro/app", "build", &["linux"]).with_steps(&["echo built"]));
    let results = wait_for_results(&world, &[job.id]).await;
    assert_eq!(results[&job.id], "success");
    remove_cache_volume(&world, &class, &dir).await;
}

/// A pod reaches a Deployment's pod through its Service's ClusterIP (kube-proxy on the node,
/// nftables mode), as a runner pod reaches a cache server. The label image's busybox serves
/// (`httpd`) and asks over plain TCP (`nc`: Debian's static busybox `wget` segfaults); the
/// page names the serving pod, so the answer proves the connection went through the
/// ClusterIP to that pod.
#[tokio::test]
#[ignore = "cluster tier: run by cargo xtask test"]
async fn a_pod_reaches_a_deployment_through_its_service_cluster_ip() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, PostParams};

    let world = World::on_node("svc").await;
    let ns = world.ns.as_str();
    let small = json!({
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"cpu": "200m", "memory": "64Mi"},
    });
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "cache"}},
            "template": {
                "metadata": {"labels": {"app": "cache"}},
                "spec": {"containers": [{
                    "name": "httpd",
                    "image": support::label_image(),
                    "command": ["sh", "-c", "mkdir -p /tmp/www \
                        && echo served-by-$(hostname) > /tmp/www/index.html \
                        && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    "resources": small,
                }]},
            },
        },
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(world.client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating the Deployment");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {
            "selector": {"app": "cache"},
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }))
    .expect("service");
    let service = Api::<Service>::namespaced(world.client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("creating the Service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the Service has a ClusterIP");

    let pods: Api<Pod> = Api::namespaced(world.client.clone(), ns);
    let server = wait_until("the Deployment's pod Ready", LONG, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|pod| {
            pod.labels().get("app").map(String::as_str) == Some("cache")
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await;
    let server_ip = server
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    assert_ne!(server_ip, cluster_ip, "the ClusterIP is not a pod IP");

    // kube-proxy syncs the new endpoint within about a second: a few tries.
    let ask = format!(
        "i=0; while [ $i -lt 20 ]; do \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {cluster_ip} 80 > /tmp/answer \
         && grep -q served-by- /tmp/answer && exec cat /tmp/answer; \
         i=$((i+1)); sleep 0.5; done; exit 1"
    );
    let client: Pod = serde_json::from_value(json!({
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "nc",
                "image": support::label_image(),
                "command": ["sh", "-c", ask],
                "resources": small,
            }],
        },
    }))
    .expect("client pod");
    pods.create(&PostParams::default(), &client)
        .await
        .expect("creating the client pod");
    let phase = wait_until("the client pod to finish", LONG, || async {
        let phase = pods.get("client").await.ok()?.status?.phase?;
        ["Succeeded", "Failed"]
            .contains(&phase.as_str())
            .then_some(phase)
    })
    .await;
    let logs = kubectl(&["logs", "-n", ns, "client"]);
    assert_eq!(
        phase, "Succeeded",
        "the client got no page from {cluster_ip}:80; its log:\n{logs}"
    );
    let body = logs.lines().map(str::trim).rfind(|l| !l.is_empty());
    assert_eq!(
        body,
        Some(format!("served-by-{}", server.name_any()).as_str()),
        "the answer through {cluster_ip} is not the Deployment's pod's:\n{logs}"
    );
    eprintln!("through ClusterIP {cluster_ip} (pod {server_ip}):\n{logs}");
}
