//! Which waiting jobs are left to idle warm runners, and for how long.

use super::*;

/// Whether any waiting job is listed that a runner of `label` alone could run.
pub(super) fn waiting_on(view: &PoolView<'_>, label: &str) -> bool {
    view.waiting()
        .iter()
        .any(|job| runs_on_labels(&job.runs_on, [label]))
}

/// The waiting jobs left to idle warm runners, and when the first grace ends.
pub(crate) struct Deferrals {
    /// The job attempts left to warm runners now.
    pub(crate) jobs: BTreeSet<JobKey>,
    /// When the earliest of their graces ends.
    pub(crate) recheck_at: Option<Timestamp>,
}

/// Leaves waiting jobs without a Job (oldest first) to the idle warm runners of a label
/// that can run them, one job per idle runner, while the job's grace lasts.
pub(crate) fn deferrals(
    pool: &Pool,
    warm_view: &WarmView<'_>,
    input: &PlanInput<'_>,
    waiting: &[&ForgejoJob],
    is_owned: impl Fn(&ForgejoJob) -> bool,
    now: &Time,
) -> Deferrals {
    let mut deferrals = Deferrals {
        jobs: BTreeSet::new(),
        recheck_at: None,
    };
    let Some(warm) = &pool.warm else {
        return deferrals;
    };
    let grace = warm_grace(warm.fetch_interval);
    let mut idle: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, state) in &warm_view.live {
        // A started runner that the registrations listed so far do not show yet is most
        // likely fetching already: leaving it the job for the grace costs at most the
        // grace, while a Job made now would be a second runner for the job.
        let may_take = match state {
            WarmState::Idle => true,
            WarmState::Unknown => r.runner_started_at.is_some(),
            _ => false,
        };
        if may_take {
            *idle.entry(r.label.as_str()).or_default() += 1;
        }
    }
    let since: BTreeMap<JobKey, &Time> = input
        .warm
        .waiting_since
        .iter()
        .map(|(k, t)| (*k, t))
        .collect();
    for job in waiting.iter().filter(|job| !is_owned(job)) {
        let key = (job.id, job.attempt_number());
        let ends = after(since.get(&key).copied().unwrap_or(now), grace);
        if now.0 >= ends {
            continue;
        }
        let taker = idle
            .iter_mut()
            .find(|(label, count)| **count > 0 && runs_on_labels(&job.runs_on, [**label]));
        if let Some((_, count)) = taker {
            *count -= 1;
            deferrals.jobs.insert(key);
            deferrals.recheck_at = earliest(deferrals.recheck_at, Some(ends));
        }
    }
    deferrals
}
