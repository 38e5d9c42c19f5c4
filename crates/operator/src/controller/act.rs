//! The apply and cleanup paths of a pool: observe, plan with `scheduler`, carry the plan out,
//! write the status, publish events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource as _, ResourceExt as _};
use tokio::sync::OnceCell;

use api::RunnerDeployment;
use scheduler::{
    JobCreation, Plan, PlanInput, Reason, RegistrationDeletion, RunnerCredentials, RunnerPath,
    SecretRequest,
};

use super::observe::{self, forgejo_scope, owned_jobs, pool_jobs, read_token};
use super::status::{
    record_credentials_failure, record_failure, record_job_create_failure, record_not_ready,
    record_success,
};
use super::{Context, FIELD_MANAGER, apply_status, reset_backoff};
use crate::error::{Error, Result};
use crate::metrics::ReconcileMetrics;
use crate::polls::PollRequest;

/// How long a deleted pool waits for Forgejo before it lets go of its registrations.
const CLEANUP_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// The apply path: observe, plan, act, write the status.
pub async fn apply(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let now = Time(Timestamp::now());
    let generation = rd.metadata.generation;
    let mut status = rd.status.clone().unwrap_or_default();
    if let Ok(scope) = rd.spec.scope() {
        status.scope = Some(scope.to_string());
    }
    let outcome = observe_and_act(&rd, &ctx, &mut status, &now).await;
    if !ctx.is_leader() {
        // Leadership was lost mid-way: write nothing more.
        return Ok(Action::await_change());
    }
    match outcome {
        Ok(action) => {
            apply_status(&ctx, &rd, &status).await?;
            reset_backoff(&ctx, &rd);
            Ok(action)
        }
        Err(error) => {
            record_failure(&mut status, &error, generation, &now);
            publish(
                &ctx,
                &rd,
                EventType::Warning,
                error.reason(),
                "Reconcile",
                &error.to_string(),
            )
            .await;
            if let Err(status_error) = apply_status(&ctx, &rd, &status).await {
                tracing::warn!(%status_error, "could not write the failure status");
            }
            Err(error)
        }
    }
}

async fn observe_and_act(
    rd: &RunnerDeployment,
    ctx: &Context,
    status: &mut api::RunnerDeploymentStatus,
    now: &Time,
) -> Result<Action> {
    rd.spec.validate()?;
    rd.spec
        .check_pod_privileges(if ctx.allow_privileged_runners {
            api::PodPrivileges::Privileged
        } else {
            api::PodPrivileges::Baseline
        })?;
    let scope = forgejo_scope(&rd.spec.scope()?);
    let interval = rd.spec.poll_interval()?;
    let label_names: Vec<String> = rd
        .spec
        .runner_labels()
        .map_err(api::SpecError::from)?
        .into_iter()
        .map(|label| label.name)
        .collect();

    let token = read_token(ctx, rd).await?;
    let client = ctx.polls.client(&rd.spec.forgejo_server, &token)?;
    let version = match ctx.polls.version(&client).await {
        Ok(version) => version,
        Err(error) => {
            ctx.polls.forget_version(client.server());
            return Err(error.into());
        }
    };
    if !version.supports_job_listing() {
        return Err(Error::ForgejoTooOld {
            version: version.raw.clone(),
        });
    }
    status.forgejo_version = Some(version.raw.clone());
    let runner_path = if version.supports_ephemeral_runners() {
        RunnerPath::Ephemeral
    } else {
        RunnerPath::Legacy
    };

    let poll_started = Instant::now();
    let polled = ctx
        .polls
        .poll(PollRequest {
            pool: &ObjectRef::from_obj(rd),
            client: &client,
            token: &token,
            version: &version,
            scope: &scope,
            label_names: &label_names,
            max_age: interval,
        })
        .await;
    let metrics = &ctx.metrics.reconcile;
    metrics
        .poll_duration
        .observe(poll_started.elapsed().as_secs_f64());
    let (jobs, registrations, poll_error) = match &polled {
        Ok(data) => {
            ReconcileMetrics::count(&metrics.polls, "Ok");
            // Registrations this replica deleted after the listing was made are gone already.
            let registrations: Vec<_> = data
                .runners
                .as_deref()
                .map(observe::registrations)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !ctx.deleted.deleted_after(client.server(), r.id, data.at))
                .collect();
            (
                Some(pool_jobs(&data.jobs, &label_names)),
                registrations,
                None,
            )
        }
        Err(error) => {
            ReconcileMetrics::count(&metrics.polls, crate::error::forgejo_reason(error));
            (None, Vec::new(), Some(error.clone()))
        }
    };

    let owned = owned_jobs(ctx, rd);
    let input = PlanInput {
        pool: rd,
        forgejo_jobs: jobs.as_deref(),
        owned_jobs: &owned,
        registrations: &registrations,
        runner_path,
        timeouts: ctx.timeouts,
    };
    let mut plan = scheduler::plan(&input, now.clone())?;
    let namespace = rd.namespace().unwrap_or_default();
    for deletion in plan
        .delete_jobs
        .iter_mut()
        .filter(|d| d.reason == Reason::PodNotCreated)
    {
        if let Some(why) = observe::failed_create_reason(ctx, &namespace, &deletion.name).await {
            deletion
                .message
                .push_str(&format!("; Kubernetes says: {why}"));
        }
    }
    let pool_uid = rd.uid().unwrap_or_default();
    let started_runner = ctx
        .start_backoff
        .paused_since(&pool_uid)
        .is_some_and(|since| {
            owned
                .iter()
                .any(|job| job.runner_started_at.as_ref().is_some_and(|t| t.0 > since))
        });
    let pause = ctx.start_backoff.observe(
        &rd.uid().unwrap_or_default(),
        rd.metadata.generation,
        &plan.delete_jobs,
        started_runner,
        ctx.timeouts.image_pull_deadline,
        Instant::now(),
    );
    if let Some(pause) = &pause {
        // Pods of this pool cannot start: no new Job (and registration) until the pause ends.
        tracing::info!(
            reason = pause.reason.as_str(),
            failures = pause.failures,
            "new runner Jobs paused"
        );
        plan.create_jobs.clear();
    }
    let pool_labels = crate::metrics::PoolLabels {
        namespace: rd.namespace().unwrap_or_default(),
        pool: rd.name_any(),
    };
    if jobs.is_some() {
        metrics
            .waiting_jobs
            .get_or_create(&pool_labels)
            .set(i64::try_from(plan.summary.waiting).unwrap_or(i64::MAX));
        note_first_seen(ctx, rd, jobs.as_deref().unwrap_or_default());
    }
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }

    let problems = carry_out(ctx, rd, &client, &scope, &plan).await;
    metrics
        .active_jobs
        .get_or_create(&pool_labels)
        .set(i64::try_from(plan.summary.active + plan.create_jobs.len()).unwrap_or(i64::MAX));

    *status = api::RunnerDeploymentStatus {
        scope: status.scope.take(),
        forgejo_version: status.forgejo_version.take(),
        ..plan.status.clone()
    };
    if let Some(error) = poll_error {
        return Err(Error::Forgejo(error));
    }
    let path = match runner_path {
        RunnerPath::Ephemeral => "ephemeral runners pinned to each job's handle",
        RunnerPath::Legacy => {
            "legacy path (Forgejo < 15): pods register with the registration token and take any matching job; their registrations stay behind as offline runners"
        }
    };
    record_success(
        status,
        &format!("Forgejo {} answered; {path}", version.raw),
        &format!(
            "{} waiting, {} active of maxRunners {}",
            plan.summary.waiting,
            plan.summary.active + plan.create_jobs.len(),
            plan.summary.max_runners
        ),
        rd.metadata.generation,
        now,
    );
    if let Some((count, first)) = &problems.without_credentials {
        let message = format!(
            "{count} runner pod(s) have no credentials and cannot take their job; the Job stays and credentials are retried next poll: {first}"
        );
        record_credentials_failure(status, &message, rd.metadata.generation, now);
    }
    if let Some(pause) = &pause {
        let left = pause
            .until
            .saturating_duration_since(Instant::now())
            .as_secs();
        let message = format!(
            "runner pods of this pool cannot start ({} in a row): {}; no new runner Job for {left}s (it doubles each time); fix spec.runnerImage, the label's image or the registry credentials: a spec change retries at once",
            pause.failures, pause.message
        );
        record_not_ready(
            status,
            pause.reason.as_str(),
            &message,
            rd.metadata.generation,
            now,
        );
    }
    if let Some(message) = problems.job_refused {
        record_job_create_failure(status, &message, rd.metadata.generation, now);
    }
    let next = plan
        .recheck_after
        .map_or(interval, |recheck| recheck.min(interval))
        .max(Duration::from_millis(200));
    Ok(Action::requeue(next))
}

/// What went wrong carrying out a plan, for the pool's conditions.
#[derive(Debug, Default)]
struct CarryOutProblems {
    /// The first Job creation the apiserver refused.
    job_refused: Option<String>,
    /// How many new runners got no credentials, and the first reason.
    without_credentials: Option<(usize, String)>,
}

/// Carries out a plan in the order that never strands a runner: registrations, Jobs and
/// Secrets go first, then Jobs are created, then their credentials.
async fn carry_out(
    ctx: &Context,
    rd: &RunnerDeployment,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
    plan: &Plan,
) -> CarryOutProblems {
    let namespace = rd.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let metrics = &ctx.metrics.reconcile;

    join_all(
        plan.delete_registrations
            .iter()
            .map(|deletion| delete_registration(ctx, rd, client, scope, deletion)),
    )
    .await;
    join_all(plan.delete_jobs.iter().map(|deletion| async {
        match jobs
            .delete(&deletion.name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(job = %deletion.name, reason = deletion.reason.as_str(), "runner Job deleted");
                ReconcileMetrics::count(&metrics.cleanups, deletion.reason.as_str());
                publish_reason(ctx, rd, deletion.reason, "DeleteJob", &deletion.message).await;
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                tracing::warn!(job = %deletion.name, %error, "deleting a runner Job failed");
            }
        }
    }))
    .await;
    join_all(plan.delete_secrets.iter().map(|deletion| async {
        match secrets
            .delete(&deletion.name, &DeleteParams::background())
            .await
        {
            Ok(_) => ReconcileMetrics::count(&metrics.cleanups, "SecretDeleted"),
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                tracing::warn!(secret = %deletion.name, %error, "deleting a runner Secret failed");
            }
        }
    }))
    .await;
    for finished in &plan.finished {
        publish_reason(ctx, rd, finished.reason, "JobFinished", &finished.message).await;
    }

    let created: Vec<(Option<Job>, Option<String>)> = join_all(
        plan.create_jobs
            .iter()
            .map(|creation| create_job(ctx, rd, &jobs, creation)),
    )
    .await;
    let refused = created.iter().find_map(|(_, refused)| refused.clone());
    let created_jobs: Vec<Job> = created.into_iter().filter_map(|(job, _)| job).collect();

    let registration_token = OnceCell::new();
    let failed: Vec<String> = join_all(plan.create_secrets.iter().map(|request| {
        give_credentials(
            ctx,
            rd,
            client,
            scope,
            &jobs,
            &secrets,
            &created_jobs,
            &registration_token,
            request,
        )
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    CarryOutProblems {
        job_refused: refused,
        without_credentials: failed.first().map(|first| (failed.len(), first.clone())),
    }
}

/// Creates one runner Job; an `AlreadyExists` means another reconcile (or replica) made it.
async fn create_job(
    ctx: &Context,
    rd: &RunnerDeployment,
    jobs: &Api<Job>,
    creation: &JobCreation,
) -> (Option<Job>, Option<String>) {
    let metrics = &ctx.metrics.reconcile;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match jobs.create(&params, &creation.job).await {
        Ok(job) => {
            metrics.jobs_created.inc();
            observe_latency(ctx, rd, creation.forgejo_job_id, creation.attempt);
            tracing::info!(job = %creation.name, forgejo_job_id = creation.forgejo_job_id, "runner Job created");
            publish(
                ctx,
                rd,
                EventType::Normal,
                "JobCreated",
                "CreateJob",
                &creation.message,
            )
            .await;
            (Some(job), None)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::debug!(job = %creation.name, "runner Job already exists");
            (None, None)
        }
        Err(error) => {
            let reason = match &error {
                kube::Error::Api(status) if status.code == 422 => "InvalidJob",
                kube::Error::Api(status) if status.code == 403 => "Forbidden",
                _ => "KubernetesApiError",
            };
            ReconcileMetrics::count(&metrics.create_failures, reason);
            let message = format!(
                "creating runner Job {} for Forgejo job {} failed (check spec.jobTemplate): {error}",
                creation.name, creation.forgejo_job_id
            );
            tracing::warn!(job = %creation.name, %error, "creating a runner Job failed");
            publish(
                ctx,
                rd,
                EventType::Warning,
                "JobCreateFailed",
                "CreateJob",
                &message,
            )
            .await;
            (None, Some(message))
        }
    }
}

/// Registers a runner (v15) or fetches the registration token (legacy) and creates the
/// runner Secret, owned by its Job. Returns why a runner was left without credentials.
#[allow(clippy::too_many_arguments)]
async fn give_credentials(
    ctx: &Context,
    rd: &RunnerDeployment,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
    jobs: &Api<Job>,
    secrets: &Api<Secret>,
    created: &[Job],
    registration_token: &OnceCell<Option<forgejo::Token>>,
    request: &SecretRequest,
) -> Option<String> {
    let metrics = &ctx.metrics.reconcile;
    // The cache may lag our own write: the apiserver has the last word.
    match secrets.get_opt(&request.job_name).await {
        Ok(Some(_)) => return None,
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(secret = %request.job_name, %error, "reading a runner Secret failed");
            return None;
        }
    }
    let job = match created
        .iter()
        .find(|job| job.metadata.name.as_deref() == Some(request.job_name.as_str()))
    {
        Some(job) => job.clone(),
        None => match jobs.get_opt(&request.job_name).await {
            Ok(Some(job)) => job,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(job = %request.job_name, %error, "reading a runner Job failed");
                return None;
            }
        },
    };
    for stale in &request.stale_registrations {
        delete_registration(ctx, rd, client, scope, stale).await;
    }
    let (credentials, registered_id) = match request.path {
        RunnerPath::Ephemeral => {
            let registration = forgejo::RegisterRunner {
                name: request.registration_name.clone(),
                description: request.registration_description.clone(),
                ephemeral: true,
            };
            match client.register_runner(scope, &registration).await {
                Ok(runner) => (
                    RunnerCredentials::Ephemeral {
                        uuid: runner.uuid.clone(),
                        token: runner.token.expose().to_owned(),
                    },
                    Some(runner.id),
                ),
                Err(error) => {
                    ReconcileMetrics::count(&metrics.create_failures, error.reason());
                    let message = format!(
                        "registering an ephemeral runner for Job {} failed: {error}",
                        request.job_name
                    );
                    publish(
                        ctx,
                        rd,
                        EventType::Warning,
                        "RunnerRegistrationFailed",
                        "RegisterRunner",
                        &message,
                    )
                    .await;
                    return Some(message);
                }
            }
        }
        RunnerPath::Legacy => {
            let token = registration_token
                .get_or_init(|| async {
                    match client.registration_token(scope).await {
                        Ok(token) => Some(token),
                        Err(error) => {
                            ReconcileMetrics::count(&metrics.create_failures, error.reason());
                            let message =
                                format!("fetching the runner registration token failed: {error}");
                            publish(
                                ctx,
                                rd,
                                EventType::Warning,
                                "RegistrationTokenFailed",
                                "RegisterRunner",
                                &message,
                            )
                            .await;
                            None
                        }
                    }
                })
                .await;
            let Some(token) = token else {
                return Some(
                    "fetching the runner registration token failed (see the RegistrationTokenFailed event)"
                        .to_owned(),
                );
            };
            (
                RunnerCredentials::Legacy {
                    registration_token: token.expose().to_owned(),
                },
                None,
            )
        }
    };
    let secret = match scheduler::runner_secret(&job, &credentials) {
        Ok(secret) => secret,
        Err(error) => {
            tracing::warn!(job = %request.job_name, %error, "building a runner Secret failed");
            return Some(format!(
                "building runner Secret {} failed: {error}",
                request.job_name
            ));
        }
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => {
            tracing::info!(job = %request.job_name, reason = request.reason.as_str(), "runner Secret created");
            None
        }
        Err(error) => {
            let lost = matches!(&error, kube::Error::Api(status) if status.code == 409);
            if !lost {
                ReconcileMetrics::count(&metrics.create_failures, "SecretCreateFailed");
                tracing::warn!(job = %request.job_name, %error, "creating a runner Secret failed");
            }
            // Nobody will ever use the runner just registered: remove it now.
            if let Some(id) = registered_id
                && let Err(error) = client.delete_runner(scope, id).await
            {
                tracing::warn!(job = %request.job_name, %error, "removing an unused runner registration failed");
            }
            (!lost).then(|| {
                format!(
                    "creating runner Secret {} failed: {error}",
                    request.job_name
                )
            })
        }
    }
}

async fn delete_registration(
    ctx: &Context,
    rd: &RunnerDeployment,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
    deletion: &RegistrationDeletion,
) {
    match client.delete_runner(scope, deletion.id).await {
        Ok(()) => {
            ctx.deleted.remember(client.server(), deletion.id);
            tracing::info!(runner = %deletion.name, id = deletion.id, reason = deletion.reason.as_str(), "runner registration deleted");
            ReconcileMetrics::count(&ctx.metrics.reconcile.cleanups, deletion.reason.as_str());
            publish_reason(
                ctx,
                rd,
                deletion.reason,
                "DeleteRunnerRegistration",
                &deletion.message,
            )
            .await;
        }
        Err(error) => {
            tracing::warn!(runner = %deletion.name, %error, "deleting a runner registration failed");
        }
    }
}

/// The cleanup path of a deleted pool: remove its runner registrations from Forgejo (15+).
/// Its Jobs and their Secrets go by owner references.
pub async fn cleanup(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    ctx.start_backoff.forget(&rd.uid().unwrap_or_default());
    let deleting_for = rd
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| Timestamp::now().duration_since(t.0).try_into().ok())
        .unwrap_or(Duration::ZERO);
    match remove_registrations(&rd, &ctx).await {
        Ok(removed) => {
            if removed > 0 {
                let note =
                    format!("removed {removed} runner registrations of this pool from Forgejo");
                publish(
                    &ctx,
                    &rd,
                    EventType::Normal,
                    "RegistrationsRemoved",
                    "Cleanup",
                    &note,
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(error) if error.needs_a_person() || deleting_for > CLEANUP_GIVE_UP_AFTER => {
            let note = format!(
                "could not remove this pool's runner registrations from Forgejo, letting the pool go; remove runners named forgejo-job-* by hand if any remain: {error}"
            );
            publish(
                &ctx,
                &rd,
                EventType::Warning,
                "CleanupIncomplete",
                "Cleanup",
                &note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => Err(error),
    }
}

async fn remove_registrations(rd: &RunnerDeployment, ctx: &Context) -> Result<usize> {
    let Some(uid) = rd.uid() else { return Ok(0) };
    let scope = forgejo_scope(&rd.spec.scope()?);
    let token = read_token(ctx, rd).await?;
    let client = ctx.polls.client(&rd.spec.forgejo_server, &token)?;
    let version = ctx.polls.version(&client).await?;
    if !version.supports_ephemeral_runners() {
        return Ok(0);
    }
    let runners = client.list_runners(&scope).await?;
    let mut removed = 0;
    for runner in runners
        .iter()
        .filter(|runner| scheduler::naming::is_pool_job_name(&runner.name, &uid))
    {
        client.delete_runner(&scope, runner.id).await?;
        removed += 1;
    }
    Ok(removed)
}

fn note_first_seen(ctx: &Context, rd: &RunnerDeployment, jobs: &[scheduler::ForgejoJob]) {
    let uid = rd.uid().unwrap_or_default();
    let now = Instant::now();
    let mut seen = ctx.first_seen.lock().unwrap_or_else(|p| p.into_inner());
    let waiting: Vec<(i64, i64)> = jobs
        .iter()
        .filter(|job| job.is_waiting())
        .map(|job| (job.id, job.attempt_number()))
        .collect();
    // Forget jobs of this pool that stopped waiting without a Job of ours.
    seen.retain(|(pool, id, attempt), _| pool != &uid || waiting.contains(&(*id, *attempt)));
    for (id, attempt) in waiting {
        seen.entry((uid.clone(), id, attempt)).or_insert(now);
    }
}

fn observe_latency(ctx: &Context, rd: &RunnerDeployment, id: i64, attempt: i64) {
    let key = (rd.uid().unwrap_or_default(), id, attempt);
    let first = ctx
        .first_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if let Some(first) = first {
        ctx.metrics
            .reconcile
            .job_scheduling_latency
            .observe(first.elapsed().as_secs_f64());
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

async fn publish_reason(
    ctx: &Context,
    rd: &RunnerDeployment,
    reason: Reason,
    action: &str,
    note: &str,
) {
    let type_ = if reason.is_failure() {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(ctx, rd, type_, reason.as_str(), action, note).await;
}

/// Publishes an event on the pool; events are best effort and never fail a reconcile.
async fn publish(
    ctx: &Context,
    rd: &RunnerDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let note: String = note.chars().take(1000).collect();
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &rd.object_ref(&())).await {
        tracing::debug!(%error, "publishing an event failed");
    }
}
