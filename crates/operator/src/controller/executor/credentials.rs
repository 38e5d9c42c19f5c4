//! A new runner Job's credentials: its ephemeral runner registered (Forgejo 15+) or the
//! scope's registration token fetched (before 15), then its credential Secret, owned by the
//! Job; a registration whose Secret could not be made is removed at once.

use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use tokio::sync::OnceCell;

use scheduler::{RunnerCredentials, RunnerPath, SecretRequest};

use super::super::FIELD_MANAGER;
use super::super::events::publish;
use super::PlanExecutor;
use crate::metrics::ReconcileMetrics;

impl PlanExecutor<'_> {
    /// Registers a runner (v15) or fetches the registration token (legacy) and creates the
    /// runner Secret, owned by its Job. Returns why a runner was left without credentials.
    pub(super) async fn give_credentials(
        &self,
        request: &SecretRequest,
        created: &[Job],
        registration_token: &OnceCell<Option<forgejo::Token>>,
    ) -> Option<String> {
        if !self.may_write() {
            return None;
        }
        let job = self.job_without_secret(request, created).await?;
        for stale in &request.stale_registrations {
            self.delete_registration(stale).await;
        }
        let (credentials, registered_id) = match request.path {
            RunnerPath::Ephemeral => match self.register(request).await {
                Ok(registered) => registered,
                Err(message) => return Some(message),
            },
            RunnerPath::Legacy => {
                let token = registration_token
                    .get_or_init(|| self.fetch_registration_token())
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
        self.create_secret(request, &job, &credentials, registered_id)
            .await
    }

    /// The Job a request is for, unless its Secret exists already (the cache may lag our
    /// own write: the apiserver has the last word) or the Job is gone.
    async fn job_without_secret(&self, request: &SecretRequest, created: &[Job]) -> Option<Job> {
        match self.read(self.secrets.get_opt(&request.job_name)).await {
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(secret = %request.job_name, %error, "reading a runner Secret failed");
                return None;
            }
        }
        if let Some(job) = created
            .iter()
            .find(|job| job.metadata.name.as_deref() == Some(request.job_name.as_str()))
        {
            return Some(job.clone());
        }
        match self.read(self.jobs.get_opt(&request.job_name)).await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(job = %request.job_name, %error, "reading a runner Job failed");
                None
            }
        }
    }

    /// Registers an ephemeral runner for the request's Job (Forgejo 15+).
    async fn register(
        &self,
        request: &SecretRequest,
    ) -> Result<(RunnerCredentials, Option<i64>), String> {
        let registration = forgejo::RegisterRunner {
            name: request.registration_name.clone(),
            description: request.registration_description.clone(),
            ephemeral: true,
        };
        let registered = self
            .write(self.client.register_runner(self.scope, &registration))
            .await
            .map_err(|not_leader| not_leader.to_string())?;
        match registered {
            Ok(runner) => Ok((
                RunnerCredentials::Ephemeral {
                    uuid: runner.uuid.clone(),
                    token: runner.token.expose().to_owned(),
                },
                Some(runner.id),
            )),
            Err(error) => {
                let metrics = &self.ctx.metrics.reconcile;
                ReconcileMetrics::count(&metrics.create_failures, error.reason());
                let message = format!(
                    "registering an ephemeral runner for Job {} failed: {error}",
                    request.job_name
                );
                let (ctx, rd) = (self.ctx, self.rd);
                let (kind, action) = ("RunnerRegistrationFailed", "RegisterRunner");
                publish(ctx, rd, EventType::Warning, kind, action, &message).await;
                Err(message)
            }
        }
    }

    /// The scope's registration token (Forgejo before 15), fetched once per reconcile.
    async fn fetch_registration_token(&self) -> Option<forgejo::Token> {
        match self.read(self.client.registration_token(self.scope)).await {
            Ok(token) => Some(token),
            Err(error) => {
                let metrics = &self.ctx.metrics.reconcile;
                ReconcileMetrics::count(&metrics.create_failures, error.reason());
                let message = format!("fetching the runner registration token failed: {error}");
                let (ctx, rd) = (self.ctx, self.rd);
                let (kind, action) = ("RegistrationTokenFailed", "RegisterRunner");
                publish(ctx, rd, EventType::Warning, kind, action, &message).await;
                None
            }
        }
    }

    /// Creates the runner Secret; if that fails, removes the runner just registered.
    async fn create_secret(
        &self,
        request: &SecretRequest,
        job: &Job,
        credentials: &RunnerCredentials,
        registered_id: Option<i64>,
    ) -> Option<String> {
        let secret = match scheduler::runner_secret(job, credentials) {
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
        let created = self.write(self.secrets.create(&params, &secret)).await;
        let Ok(created) = created else {
            // Not sent: the leader that follows gives the Job its credentials.
            return None;
        };
        match created {
            Ok(created) => {
                self.ctx.recent.secret_created(&created);
                tracing::info!(job = %request.job_name, reason = request.reason.as_str(), "runner Secret created");
                None
            }
            Err(error) => {
                let lost = matches!(&error, kube::Error::Api(status) if status.code == 409);
                if !lost {
                    let metrics = &self.ctx.metrics.reconcile;
                    ReconcileMetrics::count(&metrics.create_failures, "SecretCreateFailed");
                    tracing::warn!(job = %request.job_name, %error, "creating a runner Secret failed");
                }
                // Nobody will ever use the runner just registered: remove it now.
                if let Some(id) = registered_id
                    && let Ok(Err(error)) =
                        self.write(self.client.delete_runner(self.scope, id)).await
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
}
