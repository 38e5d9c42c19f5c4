//! The double's shared-cache roles against each other and the Forgejo stand-in (docs/forgejo.md,
//! "Caches"): a `cache-server` process, and `one-job` with a `-c` config naming it, whose
//! cache proxy the steps reach through `$ACTIONS_CACHE_URL`.

mod harness;
mod proxy;
mod server;
