//! Carrying out a plan for one pool: its runner Jobs, Secrets and registrations, each write
//! through the gated writer ([`super::writer::Writer`]). `credentials` gives each new Job
//! its runner registration and Secret.

mod credentials;

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::EventType;
use tokio::sync::OnceCell;

use api::RunnerDeployment;
use scheduler::{Deletion, JobCreation, Plan, RegistrationDeletion, WarmRetirement};

use super::events::{publish, record_item};
use super::{Context, FIELD_MANAGER};
use crate::metrics::ReconcileMetrics;

/// What went wrong carrying out a plan, for the pool's conditions.
#[derive(Debug, Default)]
pub struct CarryOutProblems {
    /// The first Job creation the apiserver refused.
    pub job_refused: Option<String>,
    /// How many new runners got no credentials, and the first reason.
    pub without_credentials: Option<(usize, String)>,
}

/// How creating one runner Job went.
#[derive(Debug)]
pub enum CreateOutcome {
    /// Created now.
    Created(Box<Job>),
    /// Another reconcile or replica made it first.
    AlreadyExists,
    /// The apiserver refused it; the message is for the pool's condition.
    Refused(String),
    /// This replica may not write any more.
    NotLeader,
}

/// Writes the plan of one pool: its Jobs and Secrets in the cluster, its runners in Forgejo.
pub struct PlanExecutor<'a> {
    ctx: &'a Context,
    rd: &'a RunnerDeployment,
    client: &'a forgejo::Client,
    scope: &'a forgejo::Scope,
    jobs: Api<Job>,
    secrets: Api<Secret>,
}

impl<'a> PlanExecutor<'a> {
    /// An executor for `rd`'s plans, talking to Forgejo through `client` in `scope`.
    pub fn new(
        ctx: &'a Context,
        rd: &'a RunnerDeployment,
        client: &'a forgejo::Client,
        scope: &'a forgejo::Scope,
    ) -> Self {
        let namespace = rd.namespace().unwrap_or_default();
        Self {
            ctx,
            rd,
            client,
            scope,
            jobs: Api::namespaced(ctx.client.clone(), &namespace),
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
        }
    }

    /// Whether this replica may write now: skips work whose only use is a write.
    fn may_write(&self) -> bool {
        self.ctx.may_write()
    }

    /// Reads within the process-wide bound on requests in flight: a burst of plans then
    /// reuses a few connections instead of opening one per request.
    async fn read<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        self.ctx.writer.read(request).await
    }

    /// Writes through the gated writer: not sent once this replica lost the Lease.
    async fn write<T>(
        &self,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, super::writer::NotLeader> {
        self.ctx.writer.write(request).await
    }

    /// Carries out a plan in the order that never strands a runner: registrations, Jobs and
    /// Secrets go first, then Jobs are created, then their credentials.
    pub async fn carry_out(&self, plan: &Plan) -> CarryOutProblems {
        bounded(&plan.delete_registrations, |d| self.delete_registration(d)).await;
        bounded(&plan.delete_jobs, |d| self.delete_job(d)).await;
        bounded(&plan.retire_warm_runners, |r| self.retire_warm_runner(r)).await;
        bounded(&plan.delete_secrets, |d| self.delete_secret(d)).await;
        for finished in &plan.finished {
            let (ctx, rd) = (self.ctx, self.rd);
            record_item(
                ctx,
                rd,
                None,
                finished.reason,
                "JobFinished",
                &finished.message,
            )
            .await;
        }

        let outcomes = bounded(&plan.create_jobs, |c| self.create_job(c)).await;
        let mut created = Vec::new();
        let mut job_refused = None;
        for outcome in outcomes {
            match outcome {
                CreateOutcome::Created(job) => created.push(*job),
                CreateOutcome::Refused(message) => {
                    job_refused.get_or_insert(message);
                }
                CreateOutcome::AlreadyExists | CreateOutcome::NotLeader => {}
            }
        }

        let registration_token = OnceCell::new();
        let created_names: std::collections::HashSet<String> = created
            .iter()
            .filter_map(|job| job.metadata.name.clone())
            .collect();
        let failed: Vec<String> = bounded(&plan.create_secrets, |request| {
            self.give_credentials(request, &created, &registration_token)
        })
        .await
        .into_iter()
        .flatten()
        .collect();
        // Events last: they are for people, and a runner waits for its Job and Secret.
        let announced: Vec<&JobCreation> = plan
            .create_jobs
            .iter()
            .filter(|c| created_names.contains(&c.name))
            .collect();
        bounded(&announced, |creation| {
            let (ctx, rd) = (self.ctx, self.rd);
            let kind = (EventType::Normal, "JobCreated", "CreateJob");
            publish(ctx, rd, kind.0, kind.1, kind.2, &creation.message)
        })
        .await;
        CarryOutProblems {
            job_refused,
            without_credentials: failed.first().map(|first| (failed.len(), first.clone())),
        }
    }

    async fn delete_job(&self, deletion: &Deletion) {
        if self.delete(&self.jobs, "runner Job", deletion).await {
            let namespace = self.rd.namespace().unwrap_or_default();
            self.ctx.recent.job_deleted(&namespace, &deletion.name);
            let cleanups = &self.ctx.metrics.reconcile.cleanups;
            let (ctx, rd) = (self.ctx, self.rd);
            let (reason, message) = (deletion.reason, &deletion.message);
            record_item(ctx, rd, Some(cleanups), reason, "DeleteJob", message).await;
        }
    }

    async fn delete_secret(&self, deletion: &Deletion) {
        if self.delete(&self.secrets, "runner Secret", deletion).await {
            ReconcileMetrics::count(&self.ctx.metrics.reconcile.cleanups, "SecretDeleted");
        }
    }

    /// Deletes one object behind the write gate; true if this call deleted it (gone
    /// already is not a failure, and not counted again).
    async fn delete<K>(&self, api: &Api<K>, what: &str, deletion: &Deletion) -> bool
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if !self.may_write() {
            return false;
        }
        let deleted = self
            .write(api.delete(&deletion.name, &DeleteParams::background()))
            .await;
        let Ok(deleted) = deleted else {
            return false;
        };
        match deleted {
            Ok(_) => {
                tracing::info!(name = %deletion.name, reason = deletion.reason.as_str(), message = %deletion.message, "{what} deleted");
                true
            }
            Err(error) if is_not_found(&error) => false,
            Err(error) => {
                tracing::warn!(name = %deletion.name, %error, "deleting a {what} failed");
                false
            }
        }
    }

    /// Creates one runner Job; an `AlreadyExists` means another reconcile (or replica) made it.
    pub async fn create_job(&self, creation: &JobCreation) -> CreateOutcome {
        if !self.may_write() {
            return CreateOutcome::NotLeader;
        }
        let metrics = &self.ctx.metrics.reconcile;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        // The Job is built once a request slot is free, so that a plan's Jobs do not all
        // exist at once; the slot is released before the event below takes one.
        let created = self
            .write(async {
                let job = creation.job()?;
                Ok::<_, scheduler::PodError>(self.jobs.create(&params, &job).await)
            })
            .await;
        let created = match created {
            Err(super::writer::NotLeader) => return CreateOutcome::NotLeader,
            Ok(Ok(created)) => created,
            Ok(Err(error)) => {
                let message = format!(
                    "building runner Job {} for Forgejo job {} failed: {error}",
                    creation.name, creation.forgejo_job_id
                );
                tracing::warn!(job = %creation.name, %error, "building a runner Job failed");
                return CreateOutcome::Refused(message);
            }
        };
        match created {
            Ok(job) => {
                // The answer is the whole Job, template and managed fields: keep what the
                // caches keep (the Secret's owner reference needs only the metadata).
                let job = super::trim::RunnerJob::from(job);
                self.ctx.recent.job_created(job.clone());
                metrics.jobs_created.inc();
                super::latency::observe_latency(
                    self.ctx,
                    self.rd,
                    creation.forgejo_job_id,
                    creation.attempt,
                );
                tracing::info!(job = %creation.name, forgejo_job_id = creation.forgejo_job_id, "runner Job created");
                // Its `JobCreated` event goes after the credentials (see `carry_out`).
                CreateOutcome::Created(Box::new(job.to_job()))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(job = %creation.name, "runner Job already exists");
                CreateOutcome::AlreadyExists
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
                let (ctx, rd) = (self.ctx, self.rd);
                publish(
                    ctx,
                    rd,
                    EventType::Warning,
                    "JobCreateFailed",
                    "CreateJob",
                    &message,
                )
                .await;
                CreateOutcome::Refused(message)
            }
        }
    }

    /// Deletes a runner registration from Forgejo, once.
    pub async fn delete_registration(&self, deletion: &RegistrationDeletion) {
        if !self.may_write() {
            return;
        }
        let deleted = self
            .write(self.client.delete_runner(self.scope, deletion.id))
            .await;
        let Ok(deleted) = deleted else {
            return;
        };
        match deleted {
            Ok(()) => {
                self.ctx.deleted.remember(self.client.server(), deletion.id);
                tracing::info!(runner = %deletion.name, id = deletion.id, reason = deletion.reason.as_str(), "runner registration deleted");
                let cleanups = &self.ctx.metrics.reconcile.cleanups;
                let (ctx, rd) = (self.ctx, self.rd);
                let action = "DeleteRunnerRegistration";
                record_item(
                    ctx,
                    rd,
                    Some(cleanups),
                    deletion.reason,
                    action,
                    &deletion.message,
                )
                .await;
            }
            Err(error) => {
                tracing::warn!(runner = %deletion.name, %error, "deleting a runner registration failed");
            }
        }
    }
}

impl PlanExecutor<'_> {
    /// Retires a warm runner: reads each registration again and stops if one is `active`
    /// now (the listing the plan read may be seconds old, and a runner with a task keeps
    /// it: Forgejo would fail the task once its registration is gone); else deletes the
    /// registrations, then the Job, so no runner is left fetching without a registration.
    async fn retire_warm_runner(&self, retirement: &WarmRetirement) {
        if !self.may_write() {
            return;
        }
        for deletion in &retirement.registrations {
            let now = self
                .read(self.client.get_runner(self.scope, deletion.id))
                .await;
            match now {
                Ok(Some(runner)) if runner.status == "active" => {
                    tracing::info!(runner = %deletion.name, "warm runner took a job since the listing; not retired");
                    return;
                }
                Ok(Some(_)) => self.delete_registration(deletion).await,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(runner = %deletion.name, %error, "reading a warm runner's registration failed; not retired now");
                    return;
                }
            }
        }
        self.delete_job(&retirement.job).await;
    }
}

/// Runs `run` on every item, at most as many at once as there are request slots (another
/// starts as one ends): each run is a future of several KiB, and a plan of the scale bench
/// had 100 creations per pool.
async fn bounded<'a, I, T, F, Fut>(items: &'a [I], run: F) -> Vec<T>
where
    F: Fn(&'a I) -> Fut,
    Fut: Future<Output = T>,
{
    let mut items = items.iter();
    let mut running: FuturesUnordered<Fut> = items
        .by_ref()
        .take(super::MAX_CONCURRENT_REQUESTS)
        .map(&run)
        .collect();
    let mut done = Vec::with_capacity(running.len());
    while let Some(output) = running.next().await {
        done.push(output);
        if let Some(item) = items.next() {
            running.push(run(item));
        }
    }
    done
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
