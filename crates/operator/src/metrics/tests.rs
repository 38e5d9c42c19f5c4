use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::*;

/// The text exposition of metrics with one sample of each job metric.
fn exposition() -> String {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let pool = PoolLabels {
        namespace: "ci".into(),
        pool: "docker".into(),
    };
    let job = JobLabels {
        namespace: "ci".into(),
        pool: "docker".into(),
        repository: "acme/app".into(),
        label: "linux".into(),
    };
    let jobs = &metrics.jobs;
    jobs.wait.get_or_create(&job).observe(3.0);
    jobs.run.get_or_create(&job).observe(40.0);
    jobs.runner_start.get_or_create(&pool).observe(8.0);
    jobs.finished
        .get_or_create(&FinishedLabels::of(&job, "success"))
        .inc();
    jobs.oldest_wait.get_or_create(&pool).set(12.5);
    jobs.runners
        .get_or_create(&RunnerStateLabels {
            namespace: "ci".into(),
            pool: "docker".into(),
            state: "running",
        })
        .set(2);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap_or_default();
    text
}

#[test]
fn each_job_metric_has_its_name_type_help_and_labels() {
    let text = exposition();
    let job = r#"{namespace="ci",pool="docker",repository="acme/app",label="linux"}"#;
    let pool = r#"{namespace="ci",pool="docker"}"#;
    let expected = [
        "# HELP forgejo_runner_controller_job_wait_seconds Time a Forgejo job waited for a runner: from the first listing that showed it waiting to the first that showed a runner took it (each at most a poll late).",
        "# TYPE forgejo_runner_controller_job_wait_seconds histogram",
        &format!("forgejo_runner_controller_job_wait_seconds_count{job} 1"),
        "# HELP forgejo_runner_controller_runner_start_seconds Time from a runner Job's creation to its runner container running.",
        "# TYPE forgejo_runner_controller_runner_start_seconds histogram",
        &format!("forgejo_runner_controller_runner_start_seconds_count{pool} 1"),
        "# HELP forgejo_runner_controller_job_run_seconds Time a Forgejo job ran: its task's start to its last update, from Forgejo's task listing.",
        "# TYPE forgejo_runner_controller_job_run_seconds histogram",
        &format!("forgejo_runner_controller_job_run_seconds_sum{job} 40.0"),
        "# HELP forgejo_runner_controller_jobs_finished Forgejo jobs of the pool that finished, by result (success, failure, cancelled, skipped, unknown).",
        "# TYPE forgejo_runner_controller_jobs_finished counter",
        r#"forgejo_runner_controller_jobs_finished_total{namespace="ci",pool="docker",repository="acme/app",label="linux",result="success"} 1"#,
        "# HELP forgejo_runner_controller_oldest_waiting_job_seconds How long the pool's longest-waiting Forgejo job has waited (0 when none waits).",
        "# TYPE forgejo_runner_controller_oldest_waiting_job_seconds gauge",
        &format!("forgejo_runner_controller_oldest_waiting_job_seconds{pool} 12.5"),
        "# HELP forgejo_runner_controller_runners The pool's runner Jobs: starting (no runner container started yet) or running.",
        "# TYPE forgejo_runner_controller_runners gauge",
        r#"forgejo_runner_controller_runners{namespace="ci",pool="docker",state="running"} 2"#,
    ];
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
}

#[test]
fn job_metric_labels_parse_and_a_wrong_one_is_named() {
    let both: JobMetricLabels = "repository,label".parse().unwrap_or_default();
    assert_eq!(both, JobMetricLabels::default());
    let none: Result<JobMetricLabels, _> = "".parse();
    assert_eq!(
        none,
        Ok(JobMetricLabels {
            repository: false,
            label: false
        })
    );
    let error = "repository,branch".parse::<JobMetricLabels>().err();
    assert!(
        error.is_some_and(|e| e.contains("--job-metric-labels") && e.contains("branch")),
        "the flag and the wrong label are named"
    );
}
