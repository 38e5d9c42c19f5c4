//! Warm runners: idle runners of a label, registered without a handle and fetching every
//! `fetchInterval`, so that Forgejo hands one the next job of its label at once. A warm
//! runner runs one job and exits like any runner pod; the plan starts another to keep the
//! count. They are kept only while the pool is in use ([`window`]); outside that they are
//! retired, and the pool is at zero pods.
//!
//! The decisions, in the order [`crate::plan`] asks for them:
//! - [`observe`]: where each warm runner stands ([`WarmState`]) and whether they are kept;
//! - [`deferrals`]: which waiting jobs are left to idle warm runners, for [`warm_grace`]
//!   after they were first seen (a job still waiting then gets its own Job);
//! - [`decide`]: which warm runners to start (within `maxRunners`, after the jobs' own
//!   Jobs), which to retire, and the status.
//!
//! Retiring never stops a runner with a task: a retirement ([`WarmRetirement`]) names an
//! idle runner's registrations and its Job; the operator reads the registrations again and
//! deletes them, then the Job, only if none is `active`. A runner whose registration is
//! `active` is never retired, and one whose task ended is left to exit.

mod deferral;
mod report;
mod retire;
mod start;
mod state;
mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::{RunnerDeploymentStatus, WarmRunnersStatus, runs_on_labels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cleanup::{after, earliest};
use crate::input::{ForgejoJob, PlanInput, RegistrationStatus, RunnerPath, RunnerRegistration};
use crate::items::{
    Deletion, JobCreation, RegistrationDeletion, RunnerFor, SecretRequest, WarmRetirement,
};
use crate::naming::{WarmRunnerName, parse_warm_name, pool_hash};
use crate::pod::PodMode;
use crate::pool::Pool;
use crate::reason::Reason;
use crate::view::{JobKey, PoolView};
use crate::warm_runner::WarmRunner;

pub(crate) use deferral::deferrals;
pub(crate) use report::report;
pub use state::WarmState;

/// How long a waiting job that an idle warm runner can take is left to it: three fetch
/// intervals, and two seconds for the poll that sees it taken.
pub fn warm_grace(fetch_interval: Duration) -> Duration {
    fetch_interval.saturating_mul(3) + Duration::from_secs(2)
}

/// The pool's warm runners, each where it stands, and whether they are kept.
pub(crate) struct WarmView<'a> {
    /// The pool's live warm runners.
    live: Vec<(&'a WarmRunner, WarmState)>,
    /// Every warm Job of the pool, by name.
    all: BTreeMap<&'a str, &'a WarmRunner>,
    /// The pool's registrations named like its warm runners.
    registrations: BTreeMap<&'a str, Vec<&'a RunnerRegistration>>,
    /// Whether warm runners are kept now.
    kept: bool,
    /// When a job of the pool was last seen waiting.
    last_job_seen: Option<Time>,
}

impl WarmView<'_> {
    /// How many warm runner Jobs hold a slot now.
    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// Classifies the pool's warm runners and decides whether they are kept at `now`.
pub(crate) fn observe<'a>(
    pool: &Pool,
    input: &PlanInput<'a>,
    view: &PoolView<'a>,
    now: &Time,
) -> WarmView<'a> {
    let ours = pool_hash(&pool.uid);
    let is_ours = |name: &str| parse_warm_name(name).is_some_and(|p| p.pool_hash == ours);
    let mut registrations: BTreeMap<&str, Vec<&RunnerRegistration>> = BTreeMap::new();
    for r in input.registrations.iter().filter(|r| is_ours(&r.name)) {
        registrations.entry(r.name.as_str()).or_default().push(r);
    }
    let all: BTreeMap<&str, &WarmRunner> = input
        .warm
        .runners
        .iter()
        .filter(|r| is_ours(&r.name))
        .map(|r| (r.name.as_str(), r))
        .collect();
    let live_runners: Vec<&WarmRunner> = all.values().copied().filter(|r| r.is_live()).collect();
    let live = match input.runner_path {
        RunnerPath::Ephemeral => live_runners
            .into_iter()
            .map(|r| {
                let own = own_registrations(r, registrations.get(r.name.as_str()));
                let listed = input
                    .warm
                    .registrations_listed_at
                    .map(|at| (at, own.as_slice()));
                (r, state::ephemeral_state(r, listed))
            })
            .collect(),
        RunnerPath::Legacy => state::legacy_states(live_runners, view),
    };
    let previous = input
        .pool
        .status
        .as_ref()
        .and_then(|s| s.warm_runners.as_ref());
    // Demand is a job waiting: a long job running does not keep idle runners by itself.
    let job_seen = view
        .forgejo
        .as_ref()
        .is_some_and(|jobs| jobs.values().any(|job| job.is_waiting()));
    let last_job_seen = if job_seen {
        Some(now.clone())
    } else {
        previous.and_then(|w| w.last_job_seen.clone())
    };
    let kept = pool.warm.as_ref().is_some_and(|warm| {
        window::is_kept(
            now,
            last_job_seen.as_ref(),
            warm.activity_window,
            &warm.windows,
        )
    });
    WarmView {
        live,
        all,
        registrations,
        kept,
        last_job_seen,
    }
}

/// The registrations of `runner`: those with its Secret's uuid, or all with its name while
/// the uuid is not known.
fn own_registrations<'a>(
    runner: &WarmRunner,
    named: Option<&Vec<&'a RunnerRegistration>>,
) -> Vec<&'a RunnerRegistration> {
    named
        .into_iter()
        .flatten()
        .filter(|r| {
            runner
                .runner_uuid
                .as_ref()
                .is_none_or(|uuid| uuid == &r.uuid)
        })
        .copied()
        .collect()
}

/// What the plan does with warm runners.
#[derive(Debug, Default)]
pub(crate) struct WarmDecisions {
    /// Warm runner Jobs to create.
    pub(crate) create_jobs: Vec<JobCreation>,
    /// Their credentials, and those of live warm Jobs without a Secret.
    pub(crate) create_secrets: Vec<SecretRequest>,
    /// Warm runners to retire.
    pub(crate) retire: Vec<WarmRetirement>,
    /// Registrations of warm runners that no live warm Job can use.
    pub(crate) delete_registrations: Vec<RegistrationDeletion>,
    /// When to plan again.
    pub(crate) recheck_at: Option<Timestamp>,
    /// How many warm runner Jobs hold a slot once the plan is applied.
    pub(crate) live_after: usize,
}

/// What [`decide`] needs besides the warm view.
pub(crate) struct WarmContext<'a> {
    /// The pool.
    pub(crate) pool: &'a Arc<Pool>,
    /// The pool's view of Forgejo and its Jobs.
    pub(crate) view: &'a PoolView<'a>,
    /// How runners get credentials.
    pub(crate) path: RunnerPath,
    /// How long a pod may take to start its runner.
    pub(crate) start_deadline: Duration,
    /// Runner slots left once the jobs' own Jobs are made.
    pub(crate) free_slots: usize,
    /// The time of the plan.
    pub(crate) now: &'a Time,
}

/// Decides which warm runners go and which are started.
pub(crate) fn decide(warm_view: &WarmView<'_>, ctx: &WarmContext<'_>) -> WarmDecisions {
    let mut decisions = WarmDecisions::default();
    let mut leaving: BTreeSet<&str> = BTreeSet::new();
    for (runner, why) in retire::retirements(warm_view, ctx) {
        retire::retire(runner, why, warm_view, ctx, &mut decisions);
        leaving.insert(runner.name.as_str());
    }
    retire::orphaned_registrations(warm_view, &mut decisions);
    let deleted: BTreeSet<String> = decisions
        .retire
        .iter()
        .map(|r| r.job.name.clone())
        .collect();
    decisions.live_after = warm_view
        .live
        .iter()
        .filter(|(r, _)| !deleted.contains(&r.name))
        .count();
    start::missing_secrets(warm_view, ctx, &deleted, &mut decisions);
    if warm_view.kept && ctx.view.forgejo.is_some() {
        start::start(warm_view, ctx, &leaving, &mut decisions);
    }
    if let (Some(warm), Some(seen), true) =
        (&ctx.pool.warm, &warm_view.last_job_seen, warm_view.kept)
        && let Some(activity) = warm.activity_window
    {
        let ends = window::activity_ends(seen, activity);
        decisions.recheck_at = earliest(decisions.recheck_at, Some(ends));
    }
    decisions
}
