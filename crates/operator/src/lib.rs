//! The Forgejo runner controller: watches `RunnerDeployment`s, polls Forgejo for jobs waiting
//! for a runner, and creates one Kubernetes Job per waiting job.
//!
//! Start at [`Args`] (the command line and start-up) and [`controller`] (the loop). The
//! decisions themselves live in the `scheduler` crate; this crate observes and acts.

pub mod admin;
pub mod args;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod polls;
pub mod rbac;
pub mod telemetry;
pub mod webhook;

pub use args::Args;
pub use error::{Error, Result};
