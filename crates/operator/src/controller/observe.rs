//! Observing a pool: its token, what Forgejo lists, and what it owns in the cluster.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::Api;

use api::{RunnerDeployment, Scope};
use scheduler::{OwnedJob, WarmRunner};

use crate::controller::Context;
use crate::controller::trim::RunnerJob;
use crate::error::{Error, Result};

/// Reads the Forgejo API token from the pool's Secret.
pub async fn read_token(ctx: &Context, rd: &RunnerDeployment) -> Result<forgejo::Token> {
    let namespace = rd.namespace().unwrap_or_default();
    let reference = &rd.spec.token_secret_ref;
    let data = match ctx.tokens.get(&namespace, &reference.name) {
        Some(watched) => watched,
        // Its watch has not listed it yet (the pool is new): read it once.
        None => Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&reference.name)
            .await
            .map_err(|e| Error::kube(format!("read Secret {}", reference.name), e))?
            .map(|secret| secret.data.unwrap_or_default()),
    };
    let data = data.ok_or_else(|| Error::SecretNotFound {
        namespace: namespace.clone(),
        name: reference.name.clone(),
    })?;
    match data
        .get(&reference.key)
        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned())
    {
        Some(token) if !token.is_empty() => Ok(forgejo::Token::new(token)),
        _ => Err(Error::SecretKeyMissing {
            name: reference.name.clone(),
            key: reference.key.clone(),
        }),
    }
}

/// Reads Kubernetes' `FailedCreate` words for the pool's Jobs still without a pod past
/// `pod_create_deadline`, so that the scheduler deletes those refused by admission and keeps
/// those the job controller has not reached yet. One list of the namespace's `FailedCreate`
/// events, and only when there is such a Job; a failed read keeps the Jobs (next poll).
pub async fn note_refused_pods(ctx: &Context, namespace: &str, owned: &mut [OwnedJob]) {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let deadline = i64::try_from(ctx.timeouts.pod_create_deadline.as_secs()).unwrap_or(i64::MAX);
    let overdue = |job: &OwnedJob| {
        !job.has_pod
            && job.is_live()
            && job
                .created_at
                .as_ref()
                .is_some_and(|created| now.saturating_sub(created.0.as_second()) >= deadline)
    };
    if !owned.iter().any(overdue) {
        return;
    }
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(ctx.client.clone(), namespace);
    let params =
        kube::api::ListParams::default().fields("involvedObject.kind=Job,reason=FailedCreate");
    let list = ctx.writer.read(events.list(&params)).await;
    let list = match list {
        Ok(list) => list,
        Err(error) => {
            tracing::debug!(%error, namespace, "reading FailedCreate events failed");
            return;
        }
    };
    let mut latest: HashMap<String, (Option<Timestamp>, String)> = HashMap::new();
    for event in list.items {
        let (Some(name), Some(message)) = (event.involved_object.name, event.message) else {
            continue;
        };
        let at = event.last_timestamp.map(|t| t.0);
        match latest.get(&name) {
            Some((seen, _)) if *seen >= at => {}
            _ => {
                latest.insert(name, (at, message.chars().take(400).collect()));
            }
        }
    }
    for job in owned.iter_mut().filter(|job| overdue(job)) {
        job.pod_create_refused = latest.get(&job.name).map(|(_, message)| message.clone());
    }
}

/// Whether the pool has a runner Secret in the cache (a Secret normally goes with its Job;
/// one left alone still names a registration to reconcile).
pub fn has_runner_secrets(ctx: &Context, namespace: &str, pool_uid: &str) -> bool {
    ctx.stores
        .secrets
        .find(|secret| {
            secret.namespace().as_deref() == Some(namespace)
                && scheduler::labels::pool_uid_of(secret.metadata.labels.as_ref()) == Some(pool_uid)
        })
        .is_some()
}

/// The Forgejo scope of a pool, in the client's terms.
pub fn forgejo_scope(scope: &Scope) -> forgejo::Scope {
    match scope {
        Scope::Organization(org) => forgejo::Scope::Organization(org.clone()),
        Scope::Repository { owner, repo } => forgejo::Scope::Repository {
            owner: owner.clone(),
            repo: repo.clone(),
        },
        Scope::User(_) => forgejo::Scope::User,
        Scope::Instance => forgejo::Scope::Instance,
    }
}

/// The runner Jobs this pool owns, summarised from the watch caches: those made for a
/// Forgejo job, and its warm runners.
#[derive(Debug, Default)]
pub struct PoolRunners {
    /// The Jobs made for a Forgejo job.
    pub owned: Vec<OwnedJob>,
    /// The warm runners' Jobs.
    pub warm: Vec<WarmRunner>,
}

/// The runner Jobs this pool owns, summarised from the watch caches.
pub fn owned_jobs(ctx: &Context, rd: &RunnerDeployment) -> PoolRunners {
    let Some(uid) = rd.uid() else {
        return PoolRunners::default();
    };
    let namespace = rd.namespace().unwrap_or_default();
    let mut jobs: Vec<std::sync::Arc<RunnerJob>> = ctx
        .stores
        .jobs
        .state()
        .into_iter()
        .filter(|job| {
            job.namespace().as_deref() == Some(namespace.as_str())
                && scheduler::labels::pool_uid_of(job.metadata.labels.as_ref())
                    == Some(uid.as_str())
        })
        .collect();
    let mut names: std::collections::HashSet<String> =
        jobs.iter().map(|job| job.name_any()).collect();
    let created = ctx
        .recent
        .jobs_missing_from(&namespace, &uid, &|name| names.contains(name));
    names.extend(created.iter().map(|job| job.name_any()));
    jobs.extend(created);
    if jobs.is_empty() {
        return PoolRunners::default();
    }
    // Only this pool's pods are copied: a namespace may hold thousands of other runner pods.
    let pods: Vec<Pod> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace.as_str())
                && pod
                    .labels()
                    .get("batch.kubernetes.io/job-name")
                    .is_some_and(|job| names.contains(job))
        })
        .map(|pod| pod.to_pod())
        .collect();
    let mut runners = PoolRunners::default();
    for job in &jobs {
        let name = job.name_any();
        let secret = ctx
            .stores
            .secrets
            .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
            .or_else(|| ctx.recent.secret(&namespace, &name));
        let job = job.to_job();
        if let Some(owned) = OwnedJob::from_objects(&job, &pods, secret.as_deref()) {
            runners.owned.push(owned);
        } else if let Some(warm) = WarmRunner::from_objects(&job, &pods, secret.as_deref()) {
            runners.warm.push(warm);
        }
    }
    runners
}
