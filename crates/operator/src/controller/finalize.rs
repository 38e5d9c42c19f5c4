//! The cleanup path of a deleted pool: its runner registrations leave Forgejo (15+), its
//! per-pool state leaves the operator. Its Jobs and their Secrets go by owner references.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use api::RunnerDeployment;

use super::events::publish;
use super::observe::{forgejo_scope, read_token};
use super::{Context, latency};
use crate::error::Result;

/// How long a deleted pool waits for Forgejo before it lets go of its registrations.
pub const CLEANUP_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Removes the pool's registrations; gives up (with a Warning event) on what needs a person,
/// or once the pool has waited [`CLEANUP_GIVE_UP_AFTER`] for Forgejo.
pub async fn cleanup(rd: Arc<RunnerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    forget_pool(&ctx, &rd);
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
                let reason = "RegistrationsRemoved";
                publish(&ctx, &rd, EventType::Normal, reason, "Cleanup", &note).await;
            }
            Ok(Action::await_change())
        }
        Err(error) if error.needs_a_person() || deleting_for > CLEANUP_GIVE_UP_AFTER => {
            let note = format!(
                "could not remove this pool's runner registrations from Forgejo, letting the pool go; remove runners named forgejo-job-* by hand if any remain: {error}"
            );
            let reason = "CleanupIncomplete";
            publish(&ctx, &rd, EventType::Warning, reason, "Cleanup", &note).await;
            Ok(Action::await_change())
        }
        Err(error) => Err(error),
    }
}

/// Forgets the operator's own state of a deleted pool: backoff, pauses, latency marks and
/// its per-pool gauges, so that nothing grows with pools that come and go.
fn forget_pool(ctx: &Context, rd: &RunnerDeployment) {
    let uid = rd.uid().unwrap_or_default();
    ctx.start_pause.forget(&uid);
    ctx.sweeps.forget(&uid);
    latency::forget_pool(ctx, &uid);
    ctx.not_waiting.forget_pool(&uid);
    ctx.wakes.forget_pool(&uid);
    ctx.hooks.forget_pool(&uid);
    ctx.jobs_seen.forget_pool(&uid);
    super::backoff::reset_backoff(ctx, rd);
    let labels = crate::metrics::PoolLabels {
        namespace: rd.namespace().unwrap_or_default(),
        pool: rd.name_any(),
    };
    ctx.metrics.reconcile.waiting_jobs.remove(&labels);
    ctx.metrics.reconcile.active_jobs.remove(&labels);
    ctx.metrics.reconcile.cache_ready.remove(&labels);
    ctx.metrics.jobs.forget_pool(&labels);
    ctx.caches.forget(&uid);
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
    let hooks = super::hook::remove_hooks(ctx, rd, &client, &scope).await?;
    if hooks > 0 {
        tracing::info!(hooks, "removed the pool's Forgejo webhook");
    }
    let runners = client.list_runners(&scope).await?;
    let mut removed = 0;
    for runner in runners
        .iter()
        .filter(|runner| scheduler::naming::is_pool_job_name(&runner.name, &uid))
    {
        // Not sent without the Lease: the finalizer stays, so the next leader removes it.
        if let Ok(deleted) = ctx
            .writer
            .write(client.delete_runner(&scope, runner.id))
            .await
        {
            deleted?;
            removed += 1;
        }
    }
    Ok(removed)
}
