//! A RunnerDeployment read once into what the decisions need: identity, parsed labels,
//! limits, the user's pod template and where its runners find the shared cache.

use std::time::Duration;

use api::{RunnerDeployment, RunnerLabel, SpecError, WeeklyWindow, runs_on_labels};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// `apiVersion` of RunnerDeployment, for owner references.
pub const RUNNER_DEPLOYMENT_API_VERSION: &str = "forgejo.runners.dev/v1alpha1";
/// `kind` of RunnerDeployment, for owner references.
pub const RUNNER_DEPLOYMENT_KIND: &str = "RunnerDeployment";

/// Why a RunnerDeployment cannot be planned for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The object lacks a metadata field the apiserver always sets.
    #[error("the RunnerDeployment has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// The spec is invalid (the schema should have refused it).
    #[error("the RunnerDeployment spec is invalid: {0}")]
    InvalidSpec(#[from] SpecError),
}

impl PlanError {
    /// A PascalCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::InvalidSpec(_) => "InvalidSpec",
        }
    }
}

/// Where a pool's runners find the cache: what their pods mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCache {
    /// The ConfigMap holding the runner configs ([`crate::RUNNER_CONFIG_KEY`] and
    /// [`crate::DOCKER_RUNNER_CONFIG_KEY`]).
    pub config_map: String,
    /// The Secret holding the HMAC secret.
    pub secret_name: String,
    /// Its key.
    pub secret_key: String,
}

/// A validated pool of runners.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// The RunnerDeployment name.
    pub name: String,
    /// Its namespace, where the runner Jobs go.
    pub namespace: String,
    /// Its uid, which names the Jobs.
    pub uid: String,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// The Forgejo base URL, without a trailing slash.
    pub server: String,
    /// The parsed runner labels, in spec order.
    pub labels: Vec<RunnerLabel>,
    /// The most runner Jobs active at once.
    pub max_runners: usize,
    /// The forgejo-runner image.
    pub runner_image: String,
    /// `ttlSecondsAfterFinished` of the Jobs.
    pub ttl_seconds_after_finished: i32,
    /// `activeDeadlineSeconds` of the Jobs.
    pub active_deadline_seconds: i64,
    /// The user's pod template, merged into every runner pod.
    pub template: Option<PodTemplateSpec>,
    /// The shared Actions cache runner pods mount; set by the operator once the cache's
    /// config and secret exist (`None`: each runner keeps its own, as without `spec.cache`).
    pub cache: Option<RunnerCache>,
    /// `spec.warmRunners`, parsed.
    pub warm: Option<WarmPool>,
}

/// A pool's warm runners, as `spec.warmRunners` asks for them.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmPool {
    /// How many idle runners to keep per label, in spec order.
    pub runners: Vec<(RunnerLabel, usize)>,
    /// How often an idle warm runner asks Forgejo for a job.
    pub fetch_interval: Duration,
    /// How long after the pool's last job they are kept; `None`: always.
    pub activity_window: Option<Duration>,
    /// The schedule windows in which they are kept.
    pub windows: Vec<WeeklyWindow>,
}

impl Pool {
    /// Reads and validates a RunnerDeployment.
    pub fn from_resource(rd: &RunnerDeployment) -> Result<Self, PlanError> {
        let meta = &rd.metadata;
        let name = meta
            .name
            .clone()
            .ok_or(PlanError::MissingMetadata("name"))?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or(PlanError::MissingMetadata("namespace"))?;
        let uid = meta
            .uid
            .clone()
            .filter(|uid| !uid.is_empty())
            .ok_or(PlanError::MissingMetadata("uid"))?;
        let spec = &rd.spec;
        spec.validate()?;
        let labels = spec.runner_labels().map_err(SpecError::from)?;
        let template = spec
            .job_template
            .as_ref()
            .map(|t| t.pod_template())
            .transpose()
            .map_err(|e| SpecError::JobTemplate(e.to_string()))?;
        let warm = match &spec.warm_runners {
            None => None,
            Some(warm) => {
                let error = |e: api::WarmRunnersError| PlanError::InvalidSpec(SpecError::from(e));
                let runners = warm
                    .runners
                    .iter()
                    .filter_map(|w| {
                        let label = labels.iter().find(|l| l.name == w.label)?;
                        Some((label.clone(), usize::try_from(w.count.max(0)).unwrap_or(0)))
                    })
                    .collect();
                Some(WarmPool {
                    runners,
                    fetch_interval: warm.fetch_interval().map_err(error)?,
                    activity_window: warm.activity_window().map_err(error)?,
                    windows: warm.windows().map_err(error)?,
                })
            }
        };
        Ok(Self {
            name,
            namespace,
            uid,
            generation: meta.generation,
            server: spec.forgejo_server.trim_end_matches('/').to_owned(),
            labels,
            max_runners: usize::try_from(spec.max_runners.max(1)).unwrap_or(1),
            runner_image: spec.runner_image.clone(),
            ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
            active_deadline_seconds: spec.active_deadline_seconds,
            template,
            cache: None,
            warm,
        })
    }

    /// Whether a job with `runs_on` is this pool's (Forgejo's `ItRunsOn` rule).
    pub fn serves(&self, runs_on: &[String]) -> bool {
        runs_on_labels(runs_on, self.labels.iter().map(|l| l.name.as_str()))
    }

    /// The controller owner reference to the RunnerDeployment that runner Jobs carry.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: RUNNER_DEPLOYMENT_API_VERSION.to_owned(),
            kind: RUNNER_DEPLOYMENT_KIND.to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}
