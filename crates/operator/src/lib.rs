//! The Forgejo runner controller: watches `RunnerDeployment`s, polls Forgejo for jobs waiting
//! for a runner, and creates one Kubernetes Job per waiting job.

pub mod rbac;
