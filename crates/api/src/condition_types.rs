//! Condition types a RunnerDeployment reports.

/// The pool is polling Forgejo and scheduling runners.
pub const READY: &str = "Ready";
/// The token Secret and its key exist.
pub const SECRET_FOUND: &str = "SecretFound";
/// Forgejo answered the last poll with the token.
pub const FORGEJO_REACHABLE: &str = "ForgejoReachable";
/// `maxRunners` Jobs are active and more jobs wait.
pub const AT_CAPACITY: &str = "AtCapacity";
/// The pool's shared Actions cache is serving (see `spec.cache`).
pub const CACHE_READY: &str = "CacheReady";
/// Forgejo's `workflow_job` hook of the pool is registered (or added by hand) and its
/// deliveries count (see `spec.webhook`).
pub const WEBHOOK_READY: &str = "WebhookReady";
