//! The `RunnerDeployment` custom resource (`forgejo.runners.dev/v1alpha1`) and typed views
//! of its fields.
//!
//! This crate owns the wire shape of the resource and the validation that lives in its
//! schema. It does no I/O: the operator reads and writes these types, the scheduler plans
//! with them, and `xtask gen-crds` prints their CRD.

mod cache;
pub mod condition_types;
mod duration;
mod labels;
pub mod names;
mod privileges;
mod resource;
mod rules;
mod warm;
mod webhook;

pub use cache::{
    CacheError, CacheMode, CacheSpec, CacheStorage, DEFAULT_CACHE_SECRET_KEY, DEFAULT_CACHE_SIZE,
    ExternalCache, SharedSecretRef,
};
pub use duration::{DurationError, parse_duration};
pub use labels::{
    DEFAULT_DOCKER_IMAGE, LABELS_PATTERN, LabelError, LabelScheme, RunnerLabel, parse_labels,
    runs_on_labels,
};
pub use privileges::{
    ALLOW_PRIVILEGED_FLAG, BASELINE_CAPABILITIES, DIND_SIDECAR, PodPrivileges, check_pod_template,
};
pub use resource::*;
pub use warm::{
    DEFAULT_ACTIVITY_WINDOW, DEFAULT_WARM_FETCH_INTERVAL, Day, MAX_ACTIVITY_WINDOW,
    WARM_FETCH_INTERVAL_RANGE, WarmLabel, WarmRunnersError, WarmRunnersSpec, WarmRunnersStatus,
    WarmSchedule, WeeklyWindow,
};
pub use webhook::{WAITING_EVENT, WebhookSpec};
