//! Which Jobs ended on their own since the last status: those `scheduledJobs` listed that no
//! longer hold a slot and that this plan does not delete. The operator reports each one
//! once, so the previous status is the memory of what was already reported.

use std::collections::BTreeSet;

use api::ScheduledJob;

use crate::items::FinishedJob;
use crate::owned::JobState;
use crate::reason::Reason;
use crate::text::truncate;
use crate::view::PoolView;

/// The Jobs of the previous status that left it on their own (not deleted by this plan).
pub(crate) fn finished_since(
    view: &PoolView<'_>,
    deleted: &BTreeSet<&str>,
    scheduled: &[ScheduledJob],
    previous: &[ScheduledJob],
) -> Vec<FinishedJob> {
    let in_status: BTreeSet<&str> = scheduled
        .iter()
        .map(|s| s.kubernetes_job_name.as_str())
        .collect();
    let mut finished = Vec::new();
    for entry in previous {
        let name = entry.kubernetes_job_name.as_str();
        if in_status.contains(name) || deleted.contains(name) {
            continue;
        }
        let id = entry.forgejo_job_id;
        let (reason, message) = match view.owned.get(name).map(|j| (&j.state, j.deleting)) {
            Some((JobState::Succeeded, _)) => (
                Reason::JobSucceeded,
                format!("Job {name} for Forgejo job {id} succeeded"),
            ),
            Some((JobState::Failed { reason, message }, _)) => (
                Reason::JobFailed,
                format!(
                    "Job {name} for Forgejo job {id} failed: {reason}: {}",
                    truncate(message, 512)
                ),
            ),
            Some((JobState::Active, true)) => (
                Reason::JobVanished,
                format!("Job {name} for Forgejo job {id} is being deleted"),
            ),
            Some((JobState::Active, false)) => continue,
            None => (
                Reason::JobVanished,
                format!("Job {name} for Forgejo job {id} is gone"),
            ),
        };
        finished.push(FinishedJob {
            name: name.to_owned(),
            forgejo_job_id: id,
            reason,
            message,
        });
    }
    finished
}
