//! Observing a pool: its token, what Forgejo lists, and what it owns in the cluster.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt as _;
use kube::api::Api;

use api::{RunnerDeployment, Scope};
use scheduler::OwnedJob;

use crate::controller::Context;
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

/// Why Kubernetes made no pod for runner Job `job`: its latest `FailedCreate` event, if any.
pub async fn failed_create_reason(ctx: &Context, namespace: &str, job: &str) -> Option<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(ctx.client.clone(), namespace);
    let params = kube::api::ListParams::default().fields(&format!(
        "involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"
    ));
    match events.list(&params).await {
        Ok(list) => list
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message)
            .map(|message| message.chars().take(400).collect()),
        Err(error) => {
            tracing::debug!(%error, job, "reading a runner Job's FailedCreate events failed");
            None
        }
    }
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

/// The runner Jobs this pool owns, summarised from the watch caches.
pub fn owned_jobs(ctx: &Context, rd: &RunnerDeployment) -> Vec<OwnedJob> {
    let Some(uid) = rd.uid() else {
        return Vec::new();
    };
    let namespace = rd.namespace().unwrap_or_default();
    let mut jobs: Vec<std::sync::Arc<Job>> = ctx
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
        return Vec::new();
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
        .map(|pod| pod.as_ref().clone())
        .collect();
    jobs.iter()
        .filter_map(|job| {
            let name = job.name_any();
            let secret = ctx
                .stores
                .secrets
                .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
                .or_else(|| ctx.recent.secret(&namespace, &name));
            OwnedJob::from_objects(job, &pods, secret.as_deref())
        })
        .collect()
}
