//! The pool's Forgejo webhook (`spec.webhook.url`): created on the pool's scope with the
//! pool's token, kept sending `workflow_job_waiting` signed with the Secret's current value,
//! deleted with the pool; and the `WebhookReady` condition that says how it stands.
//!
//! Forgejo never shows a hook's secret, so the operator cannot read back what a hook signs
//! with: it remembers the hash of the secret it registered, and a hook it did not register
//! in this process (found after a restart, or made by hand at the same URL) is replaced
//! once, so that its secret is known to be right.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::Api;
use sha2::{Digest as _, Sha256};

use api::condition_types::WEBHOOK_READY;
use api::{RunnerDeployment, RunnerDeploymentStatus, WAITING_EVENT, WebhookSpec};

use super::Context;

/// How often a registered hook is listed again (a spec or secret change acts at once).
const RECHECK_EVERY: Duration = Duration::from_secs(600);
/// How often the hook's Secret is read again while the spec stays the same: a changed
/// secret is registered within this long.
const SECRET_RECHECK_EVERY: Duration = Duration::from_secs(30);

/// Reasons of `WebhookReady`.
pub mod reasons {
    /// The operator registered the hook (or replaced one at the same URL).
    pub const REGISTERED: &str = "Registered";
    /// No `spec.webhook.url`: the hook is added by hand.
    pub const MANUAL: &str = "Manual";
    /// The token may not manage the scope's hooks.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    /// The hook's Secret or key is missing.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Forgejo did not take the registration.
    pub const REGISTRATION_FAILED: &str = "RegistrationFailed";
}

/// What the last check of a pool's hook found.
#[derive(Debug, Clone)]
struct Checked {
    generation: Option<i64>,
    secret_hash: [u8; 32],
    hook_id: i64,
    /// When the scope's hooks were last listed.
    listed: Instant,
    /// When the Secret was last read.
    secret_read: Instant,
}

/// The hooks this process registered, by pool uid.
#[derive(Debug, Default)]
pub struct RegisteredHooks {
    pools: Mutex<HashMap<String, Checked>>,
}

impl RegisteredHooks {
    /// Forgets a deleted pool.
    pub fn forget_pool(&self, pool_uid: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool_uid);
    }

    fn get(&self, pool_uid: &str) -> Option<Checked> {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool_uid)
            .cloned()
    }

    fn set(&self, pool_uid: &str, checked: Checked) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool_uid.to_owned(), checked);
    }
}

/// When the pool must be reconciled again at the latest for its hook: the hook's Secret is
/// not watched, so a pool that registers its hook looks at it every
/// [`SECRET_RECHECK_EVERY`], however seldom it polls.
pub fn recheck_after(rd: &RunnerDeployment) -> Duration {
    match rd.spec.webhook.as_ref().and_then(|h| h.url.as_ref()) {
        Some(_) => SECRET_RECHECK_EVERY,
        None => Duration::MAX,
    }
}

/// How the pool's hook stands: `WebhookReady`'s status, reason and message.
struct HookReport {
    ready: bool,
    reason: &'static str,
    message: String,
}

/// Checks (and if needed registers) the pool's hook and writes `WebhookReady`; a pool
/// without `spec.webhook` gets no condition.
pub async fn reconcile_hook(
    ctx: &Context,
    rd: &RunnerDeployment,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
    status: &mut RunnerDeploymentStatus,
    now: &Time,
) {
    let Some(hook) = rd.spec.webhook.as_ref() else {
        return;
    };
    let report = match &hook.url {
        None => HookReport {
            ready: true,
            reason: reasons::MANUAL,
            message: format!(
                "no spec.webhook.url: add a hook sending {WAITING_EVENT} to /webhooks/{}/{} by hand",
                rd.namespace().unwrap_or_default(),
                rd.name_any()
            ),
        },
        Some(url) => register(ctx, rd, hook, url, client, scope).await,
    };
    let last = crate::webhook::wake_stamp(rd).map_or_else(|| "none yet".to_owned(), str::to_owned);
    let message = format!(
        "{}; last delivery that woke the pool: {last}",
        report.message
    );
    scheduler::set_condition(
        &mut status.conditions,
        scheduler::condition(
            WEBHOOK_READY,
            report.ready,
            report.reason,
            message,
            rd.metadata.generation,
            now.clone(),
        ),
        now.clone(),
    );
}

async fn register(
    ctx: &Context,
    rd: &RunnerDeployment,
    hook: &WebhookSpec,
    url: &str,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
) -> HookReport {
    let failed = |reason, message: String| HookReport {
        ready: false,
        reason,
        message,
    };
    let uid = rd.uid().unwrap_or_default();
    let registered = |hook_id| HookReport {
        ready: true,
        reason: reasons::REGISTERED,
        message: format!("hook {hook_id} on {scope} sends {WAITING_EVENT} to {url}"),
    };
    let known = ctx.hooks.get(&uid);
    if let Some(known) = &known
        && known.generation == rd.metadata.generation
        // A little less than the requeue, so that the requeued reconcile reads it.
        && known.secret_read.elapsed() + Duration::from_secs(5) < SECRET_RECHECK_EVERY
    {
        return registered(known.hook_id);
    }
    let secret = match read_secret(ctx, rd, hook).await {
        Ok(secret) => secret,
        Err(message) => return failed(reasons::SECRET_NOT_FOUND, message),
    };
    let secret_hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    if let Some(known) = &known
        && known.generation == rd.metadata.generation
        && known.secret_hash == secret_hash
        && known.listed.elapsed() < RECHECK_EVERY
    {
        ctx.hooks.set(
            &uid,
            Checked {
                secret_read: Instant::now(),
                ..known.clone()
            },
        );
        return registered(known.hook_id);
    }
    let denied = |error: forgejo::Error| {
        let reason = if error.reason() == "Forbidden" {
            reasons::NOT_ALLOWED
        } else {
            reasons::REGISTRATION_FAILED
        };
        failed(reason, error.to_string())
    };
    let hooks = match client.list_hooks(scope).await {
        Ok(hooks) => hooks,
        Err(error) => return denied(error),
    };
    let ours = known.as_ref().filter(|k| k.secret_hash == secret_hash);
    let mut kept = None;
    for found in hooks.iter().filter(|h| h.url == url) {
        let right = found.active
            && found
                .events
                .iter()
                .any(|e| e.eq_ignore_ascii_case(WAITING_EVENT))
            && ours.is_some_and(|k| k.hook_id == found.id);
        if right && kept.is_none() {
            kept = Some(found.id);
            continue;
        }
        // Not known to sign with the current secret, or a duplicate: replaced.
        if let Ok(Err(error)) = ctx.writer.write(client.delete_hook(scope, found.id)).await {
            return denied(error);
        }
    }
    let hook_id = match kept {
        Some(id) => id,
        None => {
            let new = forgejo::NewHook {
                url: url.to_owned(),
                secret,
                events: vec![WAITING_EVENT.to_owned()],
            };
            match ctx.writer.write(client.create_hook(scope, &new)).await {
                Ok(Ok(created)) => created.id,
                Ok(Err(error)) => return denied(error),
                // Not the leader: the leader registers.
                Err(_) => return failed(reasons::REGISTRATION_FAILED, "not the leader".into()),
            }
        }
    };
    ctx.hooks.set(
        &uid,
        Checked {
            generation: rd.metadata.generation,
            secret_hash,
            hook_id,
            listed: Instant::now(),
            secret_read: Instant::now(),
        },
    );
    registered(hook_id)
}

/// The hook secret's value, or why it cannot be read (a message for the condition).
async fn read_secret(
    ctx: &Context,
    rd: &RunnerDeployment,
    hook: &WebhookSpec,
) -> Result<String, String> {
    let namespace = rd.namespace().unwrap_or_default();
    let reference = &hook.secret_ref;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("reading Secret {}: {e}", reference.name))?;
    let value = secret
        .and_then(|s| s.data?.remove(&reference.key))
        .ok_or_else(|| {
            format!(
                "spec.webhook.secretRef: Secret {} has no key {} in namespace {namespace}",
                reference.name, reference.key
            )
        })?;
    String::from_utf8(value.0)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "spec.webhook.secretRef: key {} of Secret {} is empty or not UTF-8",
                reference.key, reference.name
            )
        })
}

/// Deletes the pool's hooks (those at its `spec.webhook.url`) when the pool goes; returns
/// how many.
pub async fn remove_hooks(
    ctx: &Context,
    rd: &RunnerDeployment,
    client: &forgejo::Client,
    scope: &forgejo::Scope,
) -> Result<usize, forgejo::Error> {
    let Some(url) = rd.spec.webhook.as_ref().and_then(|h| h.url.as_deref()) else {
        return Ok(0);
    };
    let mut removed = 0;
    for hook in client
        .list_hooks(scope)
        .await?
        .iter()
        .filter(|h| h.url == url)
    {
        if let Ok(deleted) = ctx.writer.write(client.delete_hook(scope, hook.id)).await {
            deleted?;
            removed += 1;
        }
    }
    Ok(removed)
}
