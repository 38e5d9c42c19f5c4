//! The runner credential Secret: one per runner Job, with the Job's name, owned by the Job.
//!
//! The operator creates it after the Job (it needs the Job's uid for the owner reference,
//! so that deleting the Job deletes the Secret). The pod mounts it; the Forgejo API token is
//! never in it. On the v15 path it holds the ephemeral runner's `uuid` and `token`; on the
//! legacy path the scope's `registration-token`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::labels;

/// Secret key of the ephemeral runner's uuid (v15 path).
pub const UUID_KEY: &str = "uuid";
/// Secret key of the ephemeral runner's token (v15 path).
pub const TOKEN_KEY: &str = "token";
/// Secret key of the scope's runner registration token (legacy path).
pub const REGISTRATION_TOKEN_KEY: &str = "registration-token";

/// What goes into a runner credential Secret; `Debug` never shows a token.
#[derive(Clone, PartialEq, Eq)]
pub enum RunnerCredentials {
    /// Forgejo v15+: an ephemeral runner the operator registered, named after the Job.
    Ephemeral {
        /// The runner uuid.
        uuid: String,
        /// The runner token.
        token: String,
    },
    /// Forgejo v11–v14: the registration token the pod registers itself with.
    Legacy {
        /// The scope's runner registration token (not the API token).
        registration_token: String,
    },
}

impl fmt::Debug for RunnerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ephemeral { uuid, .. } => f
                .debug_struct("Ephemeral")
                .field("uuid", uuid)
                .field("token", &"<redacted>")
                .finish(),
            Self::Legacy { .. } => f
                .debug_struct("Legacy")
                .field("registration_token", &"<redacted>")
                .finish(),
        }
    }
}

/// Why a runner Secret cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The Job lacks a field the Secret needs (it was not read back from the apiserver).
    #[error("the runner Job has no metadata.{0}; use the Job the apiserver returned")]
    MissingJobMetadata(&'static str),
}

/// The runner credential Secret for `job` (as returned by the apiserver, with its uid).
pub fn runner_secret(job: &Job, credentials: &RunnerCredentials) -> Result<Secret, SecretError> {
    let name = job
        .metadata
        .name
        .clone()
        .ok_or(SecretError::MissingJobMetadata("name"))?;
    let namespace = job
        .metadata
        .namespace
        .clone()
        .ok_or(SecretError::MissingJobMetadata("namespace"))?;
    let uid = job
        .metadata
        .uid
        .clone()
        .ok_or(SecretError::MissingJobMetadata("uid"))?;

    let mut secret_labels: BTreeMap<String, String> = job
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != labels::APP_COMPONENT)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    secret_labels.insert(
        labels::APP_COMPONENT.to_owned(),
        labels::COMPONENT_CREDENTIALS.to_owned(),
    );
    secret_labels.insert(
        labels::MANAGED_BY.to_owned(),
        labels::MANAGED_BY_VALUE.to_owned(),
    );

    let bytes = |value: &str| ByteString(value.as_bytes().to_vec());
    let data = match credentials {
        RunnerCredentials::Ephemeral { uuid, token } => BTreeMap::from([
            (UUID_KEY.to_owned(), bytes(uuid)),
            (TOKEN_KEY.to_owned(), bytes(token)),
        ]),
        RunnerCredentials::Legacy { registration_token } => {
            BTreeMap::from([(REGISTRATION_TOKEN_KEY.to_owned(), bytes(registration_token))])
        }
    };

    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(secret_labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(data),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created_job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("forgejo-job-1-0-0123456789".into()),
                namespace: Some("ci".into()),
                uid: Some("job-uid".into()),
                labels: Some(BTreeMap::from([
                    (labels::FORGEJO_JOB_ID.to_owned(), "1".to_owned()),
                    (
                        labels::APP_COMPONENT.to_owned(),
                        labels::COMPONENT_RUNNER.to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }
    }

    #[test]
    fn ephemeral_secret_holds_uuid_and_token_and_is_owned_by_the_job() {
        let credentials = RunnerCredentials::Ephemeral {
            uuid: "u".into(),
            token: "t".into(),
        };
        let secret = runner_secret(&created_job(), &credentials).unwrap();
        let data = secret.data.unwrap();
        assert_eq!(data[UUID_KEY].0, b"u");
        assert_eq!(data[TOKEN_KEY].0, b"t");
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", "job-uid")
        );
        let secret_labels = secret.metadata.labels.unwrap();
        assert_eq!(
            secret_labels[labels::APP_COMPONENT],
            labels::COMPONENT_CREDENTIALS
        );
        assert_eq!(secret_labels[labels::FORGEJO_JOB_ID], "1");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("forgejo-job-1-0-0123456789")
        );
        assert_eq!(secret.immutable, Some(true));
    }

    #[test]
    fn legacy_secret_holds_only_the_registration_token() {
        let credentials = RunnerCredentials::Legacy {
            registration_token: "r".into(),
        };
        let data = runner_secret(&created_job(), &credentials)
            .unwrap()
            .data
            .unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [REGISTRATION_TOKEN_KEY]);
    }

    #[test]
    fn a_job_not_read_back_is_refused() {
        let mut job = created_job();
        job.metadata.uid = None;
        let credentials = RunnerCredentials::Legacy {
            registration_token: "r".into(),
        };
        assert_eq!(
            runner_secret(&job, &credentials),
            Err(SecretError::MissingJobMetadata("uid"))
        );
    }

    #[test]
    fn debug_hides_tokens() {
        let credentials = RunnerCredentials::Ephemeral {
            uuid: "u-1".into(),
            token: "very-secret".into(),
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("u-1") && !shown.contains("very-secret"));
        let legacy = RunnerCredentials::Legacy {
            registration_token: "very-secret".into(),
        };
        assert!(!format!("{legacy:?}").contains("very-secret"));
    }
}
