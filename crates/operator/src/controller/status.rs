//! The conditions the operator sets (Ready, SecretFound, ForgejoReachable) from what a
//! reconcile found; `AtCapacity` comes from the scheduler.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource as _, ResourceExt as _};

use api::condition_types::{FORGEJO_REACHABLE, READY, SECRET_FOUND};
use api::{RunnerDeployment, RunnerDeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use scheduler::{condition, set_condition};

use super::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};

/// Condition reasons of the operator (errors use [`Error::reason`]).
pub mod reasons {
    /// Ready: polling and scheduling.
    pub const POLLING: &str = "Polling";
    /// SecretFound: the token was read.
    pub const FOUND: &str = "Found";
    /// ForgejoReachable: the last poll succeeded.
    pub const REACHABLE: &str = "Reachable";
    /// Ready: the apiserver refused a runner Job (often an invalid `spec.jobTemplate`).
    pub const JOB_CREATE_FAILED: &str = "JobCreateFailed";
    /// Ready: runner pods were created but Forgejo gave them no credentials.
    pub const CREDENTIALS_FAILED: &str = "RunnerCredentialsFailed";
}

/// Which step a failure happened in decides which conditions it touches.
pub fn record_failure(
    status: &mut RunnerDeploymentStatus,
    error: &Error,
    generation: Option<i64>,
    now: &Time,
) {
    let reason = error.reason();
    let message = error.to_string();
    let set = |status: &mut RunnerDeploymentStatus,
               type_: &str,
               ok: bool,
               reason: &str,
               message: &str| {
        set_condition(
            &mut status.conditions,
            condition(type_, ok, reason, message, generation, now.clone()),
            now.clone(),
        );
    };
    match error {
        Error::SecretNotFound { .. } | Error::SecretKeyMissing { .. } => {
            set(status, SECRET_FOUND, false, reason, &message);
        }
        Error::Forgejo(_) | Error::ForgejoTooOld { .. } => {
            set(
                status,
                SECRET_FOUND,
                true,
                reasons::FOUND,
                "the token Secret and key exist",
            );
            set(status, FORGEJO_REACHABLE, false, reason, &message);
        }
        _ => {}
    }
    set(status, READY, false, reason, &message);
    status.observed_generation = generation;
}

/// Marks a successful poll: the Secret was read and Forgejo answered.
pub fn record_success(
    status: &mut RunnerDeploymentStatus,
    forgejo: &str,
    ready_message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    for (type_, reason, message) in [
        (
            SECRET_FOUND,
            reasons::FOUND,
            "the token Secret and key exist",
        ),
        (FORGEJO_REACHABLE, reasons::REACHABLE, forgejo),
        (READY, reasons::POLLING, ready_message),
    ] {
        set_condition(
            &mut status.conditions,
            condition(type_, true, reason, message, generation, now.clone()),
            now.clone(),
        );
    }
    status.last_poll_time = Some(now.clone());
    status.observed_generation = generation;
}

/// Marks the pool not ready for `reason`, keeping the other conditions.
pub fn record_not_ready(
    status: &mut RunnerDeploymentStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    set_condition(
        &mut status.conditions,
        condition(READY, false, reason, message, generation, now.clone()),
        now.clone(),
    );
}

/// Server-side-applies a status (the whole of it: fields this manager leaves out are removed).
pub async fn apply_status(
    ctx: &Context,
    rd: &RunnerDeployment,
    status: &api::RunnerDeploymentStatus,
) -> Result<()> {
    let name = rd.name_any();
    let api: Api<RunnerDeployment> =
        Api::namespaced(ctx.client.clone(), &rd.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": RunnerDeployment::api_version(&()),
        "kind": RunnerDeployment::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&patch);
    match ctx
        .writer
        .write(api.patch_status(&name, &params, &patch))
        .await
    {
        Ok(written) => {
            written.map_err(|e| {
                Error::kube(format!("apply the status of RunnerDeployment {name}"), e)
            })?;
        }
        // The leader that follows writes the status from what it observes.
        Err(not_leader) => tracing::debug!(%not_leader, "status not written"),
    }
    Ok(())
}
