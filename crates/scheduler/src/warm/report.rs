//! The warm part of the pool's status, and the window change to report.

use super::*;

/// The warm part of the next status, and the window change to report, if any.
pub(crate) fn report(
    warm_view: &WarmView<'_>,
    decisions: &WarmDecisions,
    pool: &Pool,
    previous: &RunnerDeploymentStatus,
) -> (Option<WarmRunnersStatus>, Option<(Reason, String)>) {
    if pool.warm.is_none() && warm_view.live.is_empty() {
        return (None, None);
    }
    let deleted: BTreeSet<&str> = decisions
        .retire
        .iter()
        .map(|r| r.job.name.as_str())
        .collect();
    let count = |wanted: fn(WarmState) -> bool| {
        warm_view
            .live
            .iter()
            .filter(|(r, s)| wanted(*s) && !deleted.contains(r.name.as_str()))
            .count()
    };
    let idle = count(WarmState::is_ready) + decisions.create_jobs.len();
    let busy = count(|s| matches!(s, WarmState::Busy | WarmState::Done));
    let status = WarmRunnersStatus {
        idle: i32::try_from(idle).unwrap_or(i32::MAX),
        busy: i32::try_from(busy).unwrap_or(i32::MAX),
        kept: warm_view.kept,
        last_job_seen: warm_view.last_job_seen.clone(),
    };
    let was_kept = previous.warm_runners.as_ref().is_some_and(|w| w.kept);
    let change = match (was_kept, warm_view.kept) {
        (false, true) => Some((
            Reason::WarmWindowOpened,
            "warm runners are kept: a job was seen or a schedule window is open".to_owned(),
        )),
        (true, false) => Some((
            Reason::WarmWindowClosed,
            "warm runners are retired: no job within spec.warmRunners.activityWindow and no schedule window open".to_owned(),
        )),
        _ => None,
    };
    (Some(status), change)
}
