//! The operator's errors. Each has a PascalCase [`Error::reason`], used as the condition
//! reason, the event reason and the metric label, so one word follows a failure everywhere.

use std::sync::Arc;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid (the schema normally refuses it first).
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] api::SpecError),

    /// The token Secret does not exist.
    #[error("Secret {name:?} (spec.tokenSecretRef.name) not found in namespace {namespace:?}")]
    SecretNotFound {
        /// Namespace of the pool.
        namespace: String,
        /// Secret name.
        name: String,
    },

    /// The token Secret lacks the key, or it is empty.
    #[error("Secret {name:?} has no non-empty key {key:?} (spec.tokenSecretRef.key)")]
    SecretKeyMissing {
        /// Secret name.
        name: String,
        /// The key looked for.
        key: String,
    },

    /// Forgejo refused or failed a request.
    #[error("Forgejo: {0}")]
    Forgejo(#[source] Arc<forgejo::Error>),

    /// The Forgejo server is older than the oldest supported release.
    #[error(
        "Forgejo {version} is too old: runner job listing needs Forgejo 11 or newer (15 or newer for exact one-job runners)"
    )]
    ForgejoTooOld {
        /// The version the server reported.
        version: String,
    },

    /// A call to the Kubernetes API failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was being done, e.g. "create Job forgejo-job-1-abc".
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// The scheduler could not plan (a spec it cannot build a pod from).
    #[error("cannot plan runner Jobs: {0}")]
    Plan(#[from] scheduler::PlanError),

    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<forgejo::Error> for Error {
    fn from(error: forgejo::Error) -> Self {
        Error::Forgejo(Arc::new(error))
    }
}

impl From<Arc<forgejo::Error>> for Error {
    fn from(error: Arc<forgejo::Error>) -> Self {
        Error::Forgejo(error)
    }
}

impl Error {
    /// A PascalCase word for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(error) => error.reason(),
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::Forgejo(error) => forgejo_reason(error),
            Error::ForgejoTooOld { .. } => "ForgejoTooOld",
            Error::Kube { .. } => "KubernetesApiError",
            Error::Plan(error) => error.reason(),
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// Whether fixing it needs a person (then retrying fast only adds load).
    pub fn needs_a_person(&self) -> bool {
        match self {
            Error::InvalidSpec(_)
            | Error::SecretNotFound { .. }
            | Error::SecretKeyMissing { .. }
            | Error::ForgejoTooOld { .. }
            | Error::Plan(_) => true,
            Error::Forgejo(error) => !error.is_retryable(),
            Error::Kube { .. } | Error::Finalizer(_) => false,
        }
    }

    /// How soon trying again can help: see [`RetryClass`].
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::Forgejo(error) => match error.retry_after() {
                Some(delay) => RetryClass::After(delay),
                // A maintenance page, a proxy's error page or endless answer is an outage, not
                // a misconfiguration.
                _ if error.is_retryable()
                    || matches!(error.reason(), "InvalidResponse" | "BodyTooLarge") =>
                {
                    RetryClass::Transient
                }
                _ => RetryClass::NeedsAPerson,
            },
            _ if self.needs_a_person() => RetryClass::NeedsAPerson,
            _ => RetryClass::Transient,
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}

/// How a failed reconcile is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// An outage that ends by itself: retry soon, never later than one poll interval.
    Transient,
    /// The server asked for this delay (`Retry-After`): not sooner.
    After(std::time::Duration),
    /// A person must fix something: retry slowly.
    NeedsAPerson,
}

/// The condition reason of a Forgejo error.
pub fn forgejo_reason(error: &forgejo::Error) -> &'static str {
    match error.reason() {
        "Timeout" | "ConnectionFailed" => "Unreachable",
        other => other,
    }
}
