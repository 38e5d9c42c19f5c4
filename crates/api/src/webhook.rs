//! `spec.webhook`: Forgejo's `workflow_job` deliveries wake the pool at once; polling stays
//! the backstop.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::cache::SharedSecretRef;

/// How a pool takes Forgejo's `workflow_job` webhooks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret (in this namespace) holding the hook's secret: a delivery to
    /// `/webhooks/{namespace}/{name}` of the operator's webhook listener counts only if it
    /// is signed with it (`X-Forgejo-Signature`, HMAC-SHA256 of the body). Default key
    /// `secret`.
    pub secret_ref: SharedSecretRef,
}
