//! Where a live warm runner stands, from its Job, its Secret and its registration (or, on
//! the legacy path, from what Forgejo lists as running).

use std::collections::BTreeMap;

use api::runs_on_labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::input::{RegistrationStatus, RunnerRegistration};
use crate::view::PoolView;
use crate::warm_runner::WarmRunner;

/// Where a live warm runner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmState {
    /// Not registered yet, or registered and its runner not started: it takes no job yet.
    Starting,
    /// Registered, started and not running a task: it takes the next job of its label.
    Idle,
    /// Running a task (its registration is `active`).
    Busy,
    /// Its registration is gone after it was made: it ran its task (Forgejo deletes an
    /// ephemeral runner when its task ends) or was retired; its pod is exiting.
    Done,
    /// Not known: the registrations were not listed after its Secret was made.
    Unknown,
}

impl WarmState {
    /// Whether it counts as ready for a job (toward `count`).
    pub fn is_ready(self) -> bool {
        matches!(self, Self::Starting | Self::Idle)
    }
}

/// Where `runner` stands on the ephemeral path, from its registrations (`None`: not listed,
/// else when they were listed and which have its name).
pub(crate) fn ephemeral_state(
    runner: &WarmRunner,
    listed: Option<(&Time, &[&RunnerRegistration])>,
) -> WarmState {
    let Some(secret_at) = &runner.secret_created_at else {
        return WarmState::Starting;
    };
    let Some((listed_at, registrations)) = listed else {
        return WarmState::Unknown;
    };
    if registrations
        .iter()
        .any(|r| r.status == RegistrationStatus::Active)
    {
        return WarmState::Busy;
    }
    if registrations.is_empty() {
        // A listing older than the registration would not show it yet; the Secret is made
        // after the registration, and its timestamp has whole seconds.
        let after_secret = secret_at.0.as_second().saturating_add(1);
        return if listed_at.0.as_second() > after_secret {
            WarmState::Done
        } else {
            WarmState::Unknown
        };
    }
    if runner.runner_started_at.is_some() {
        WarmState::Idle
    } else {
        WarmState::Starting
    }
}

/// On the legacy path there is no registration to read: of the started runners of a
/// label, as many as Forgejo lists running jobs of that label are taken to be busy (the
/// earliest started), the others idle.
pub(crate) fn legacy_states<'a>(
    runners: Vec<&'a WarmRunner>,
    view: &PoolView<'_>,
) -> Vec<(&'a WarmRunner, WarmState)> {
    let mut busy_left: BTreeMap<&str, usize> = BTreeMap::new();
    let mut started: Vec<&WarmRunner> = runners
        .iter()
        .copied()
        .filter(|r| r.runner_started_at.is_some())
        .collect();
    started.sort_by_key(|r| r.runner_started_at.clone());
    for r in &started {
        busy_left
            .entry(r.label.as_str())
            .or_insert_with(|| running_on(view, &r.label));
    }
    let mut states = Vec::new();
    for r in runners.iter().filter(|r| r.runner_started_at.is_none()) {
        states.push((*r, WarmState::Starting));
    }
    for r in started {
        let left = busy_left.entry(r.label.as_str()).or_default();
        let state = if *left > 0 {
            *left -= 1;
            WarmState::Busy
        } else {
            WarmState::Idle
        };
        states.push((r, state));
    }
    states
}

/// How many jobs Forgejo lists as running that a runner of `label` alone could run.
pub(super) fn running_on(view: &PoolView<'_>, label: &str) -> usize {
    view.forgejo
        .iter()
        .flat_map(|jobs| jobs.values())
        .filter(|job| !job.is_waiting() && runs_on_labels(&job.runs_on, [label]))
        .count()
}
