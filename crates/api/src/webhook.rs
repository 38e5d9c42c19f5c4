//! `spec.webhook`: Forgejo's `workflow_job` deliveries wake the pool at once; polling stays
//! the backstop.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::cache::SharedSecretRef;
use crate::rules::{URL_MESSAGE, URL_RULE};

/// The event a pool's hook must send: a job became waiting.
pub const WAITING_EVENT: &str = "workflow_job_waiting";

/// How a pool takes Forgejo's `workflow_job` webhooks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret (in this namespace) holding the hook's secret: a delivery to
    /// `/webhooks/{namespace}/{name}` of the operator's webhook listener counts only if it
    /// is signed with it (`X-Forgejo-Signature`, HMAC-SHA256 of the body). Default key
    /// `secret`.
    pub secret_ref: SharedSecretRef,
    /// The address Forgejo calls for this pool, as Forgejo reaches the operator's webhook
    /// listener, e.g. `https://hooks.example.com/webhooks/ci/faro`. With it, the operator
    /// creates the hook on the pool's scope with the pool's token, keeps its event and
    /// secret right, and deletes it with the pool; without it, add the hook by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(URL_RULE).message(URL_MESSAGE))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
}
