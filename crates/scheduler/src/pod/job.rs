//! The runner Job around the pod: for one Forgejo job attempt, or for a warm runner that
//! takes the next job of its label.

use super::*;

/// The complete runner Job for `job` in `pool` (its Secret is made later, by name).
pub fn runner_job(pool: &Pool, job: &ForgejoJob, path: RunnerPath) -> Result<Job, PodError> {
    let name = RunnerJobName::new(&pool.uid, job.id, job.attempt)?;
    let label =
        pick_label(&pool.labels, &job.runs_on).ok_or_else(|| PodError::NoMatchingLabel {
            id: job.id,
            runs_on: job.runs_on.join(","),
        })?;
    let mode = PodMode::for_label(label);
    let declared = declared_labels(&pool.labels, &job.runs_on, &mode);
    let mut annotations = BTreeMap::from([
        (labels::FORGEJO_JOB_NAME.to_owned(), job.name.clone()),
        (labels::FORGEJO_RUNS_ON.to_owned(), job.runs_on.join(",")),
        (labels::RUNNER_LABELS.to_owned(), declared.join(",")),
    ]);
    if let Some(handle) = job.handle() {
        annotations.insert(labels::FORGEJO_HANDLE.to_owned(), handle.to_owned());
    }
    let mut job_labels = pool_labels(pool);
    job_labels.extend([
        (labels::FORGEJO_JOB_ID.to_owned(), job.id.to_string()),
        (
            labels::FORGEJO_JOB_ATTEMPT.to_owned(),
            job.attempt_number().to_string(),
        ),
        (labels::FORGEJO_REPO_ID.to_owned(), job.repo_id.to_string()),
        (
            labels::FORGEJO_OWNER_ID.to_owned(),
            job.owner_id.to_string(),
        ),
    ]);
    let runner = Runner {
        name: name.into_string(),
        mode,
        declared,
        handle: job.handle(),
        fetch_interval: None,
    };
    Ok(build_job(pool, runner, job_labels, annotations, path))
}

/// The Job of warm runner `name` of `pool`, for jobs on `label`: a runner registered with
/// that label alone, fetching any job of it every `fetch_interval` (no handle).
pub fn warm_runner_job(
    pool: &Pool,
    name: &WarmRunnerName,
    label: &RunnerLabel,
    fetch_interval: Duration,
    path: RunnerPath,
) -> Job {
    let mode = PodMode::for_label(label);
    let declared = declared_labels(
        std::slice::from_ref(label),
        std::slice::from_ref(&label.name),
        &mode,
    );
    let annotations = BTreeMap::from([
        (labels::WARM_LABEL.to_owned(), label.name.clone()),
        (labels::RUNNER_LABELS.to_owned(), declared.join(",")),
    ]);
    let mut job_labels = pool_labels(pool);
    job_labels.insert(labels::WARM.to_owned(), "true".to_owned());
    let runner = Runner {
        name: name.as_str().to_owned(),
        mode,
        declared,
        handle: None,
        fetch_interval: Some(fetch_interval),
    };
    build_job(pool, runner, job_labels, annotations, path)
}

/// What one runner pod runs: its name, mode, declared labels and what it fetches.
struct Runner<'a> {
    name: String,
    mode: PodMode,
    declared: Vec<String>,
    handle: Option<&'a str>,
    fetch_interval: Option<Duration>,
}

/// The Job of `runner`, with `job_labels` and `annotations` on the Job and its pod.
fn build_job(
    pool: &Pool,
    runner: Runner<'_>,
    job_labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    path: RunnerPath,
) -> Job {
    let mut pod_annotations = annotations.clone();
    pod_annotations.insert(
        labels::DEFAULT_CONTAINER.to_owned(),
        RUNNER_CONTAINER.to_owned(),
    );
    let fetch = Fetch {
        handle: runner.handle,
        interval: runner.fetch_interval,
    };
    let ours = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(job_labels.clone()),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(
            pool,
            &runner.mode,
            &runner.name,
            &runner.declared,
            fetch,
            path,
        )),
    };
    let template = merge_user_template(ours, pool.template.as_ref());
    Job {
        metadata: ObjectMeta {
            name: Some(runner.name),
            namespace: Some(pool.namespace.clone()),
            labels: Some(job_labels),
            annotations: Some(annotations),
            owner_references: Some(vec![pool.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(pool.ttl_seconds_after_finished),
            active_deadline_seconds: Some(pool.active_deadline_seconds),
            template,
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The labels of every runner Job of the pool and its pod.
fn pool_labels(pool: &Pool) -> BTreeMap<String, String> {
    labels::pool_object_labels(&pool.uid, &pool.name, labels::COMPONENT_RUNNER)
}
