//! The pool's status: the bounded `scheduledJobs` list and conditions.
//!
//! Conditions follow the Kubernetes convention: `lastTransitionTime` moves only when the
//! status flips, and every condition carries the `observedGeneration` it describes.

use api::ScheduledJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The most entries `status.scheduledJobs` holds (about 130 bytes each, so ~33 KiB at most,
/// far below etcd's 1.5 MiB object limit). `activeJobs` still counts every active Job.
pub const MAX_SCHEDULED_JOBS: usize = 256;

/// Condition reasons the scheduler sets.
pub mod reasons {
    /// `AtCapacity=True`: jobs wait because `maxRunners` Jobs are active.
    pub const MAX_RUNNERS_REACHED: &str = "MaxRunnersReached";
    /// `AtCapacity=False`: every waiting job has a Job.
    pub const BELOW_MAX_RUNNERS: &str = "BelowMaxRunners";
}

/// A condition with `lastTransitionTime` `now` (kept by [`set_condition`] if nothing flips).
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Puts `new` into `conditions` in place of the one of its type: `lastTransitionTime`
/// stays when the status did not change, and becomes `now` when it did (or is new).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: Time) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                now
            };
            *existing = new;
        }
        None => {
            new.last_transition_time = now;
            conditions.push(new);
        }
    }
}

/// The scheduled jobs oldest first, keeping the newest [`MAX_SCHEDULED_JOBS`].
pub fn bound_scheduled_jobs(mut jobs: Vec<ScheduledJob>) -> Vec<ScheduledJob> {
    jobs.sort_by(|a, b| {
        (&a.scheduled_at, &a.kubernetes_job_name).cmp(&(&b.scheduled_at, &b.kubernetes_job_name))
    });
    let excess = jobs.len().saturating_sub(MAX_SCHEDULED_JOBS);
    jobs.drain(..excess);
    jobs
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    /// Sets the pool's `AtCapacity` condition at `seconds`, as a reconcile would.
    fn set_capacity(
        conditions: &mut Vec<Condition>,
        (seconds, generation): (i64, i64),
        full: bool,
        message: &str,
    ) {
        let reason = if full {
            "MaxRunnersReached"
        } else {
            "BelowMaxRunners"
        };
        let new = condition(
            "AtCapacity",
            full,
            reason,
            message,
            Some(generation),
            at(seconds),
        );
        set_condition(conditions, new, at(seconds));
    }

    #[test]
    fn transition_time_stays_while_the_status_stays() {
        let mut conditions = Vec::new();
        set_capacity(&mut conditions, (0, 1), false, "0/2");
        set_capacity(&mut conditions, (10, 2), false, "1/2");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(0));
        assert_eq!(conditions[0].message, "1/2");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_capacity(&mut conditions, (20, 2), true, "2/2");
        assert_eq!(conditions[0].last_transition_time, at(20));
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn other_conditions_are_left_alone() {
        let mut conditions = vec![condition("Ready", true, "Polling", "ok", None, at(0))];
        set_condition(
            &mut conditions,
            condition("AtCapacity", false, "BelowMaxRunners", "", None, at(5)),
            at(5),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].type_, "Ready");
        assert_eq!(conditions[0].last_transition_time, at(0));
    }

    #[test]
    fn scheduled_jobs_keep_the_newest_in_order() {
        let jobs: Vec<ScheduledJob> = (0..MAX_SCHEDULED_JOBS as i64 + 10)
            .rev()
            .map(|i| ScheduledJob {
                forgejo_job_id: i + 1,
                attempt: None,
                kubernetes_job_name: format!("j{i}"),
                scheduled_at: at(i),
            })
            .collect();
        let bounded = bound_scheduled_jobs(jobs);
        assert_eq!(bounded.len(), MAX_SCHEDULED_JOBS);
        assert_eq!(bounded[0].scheduled_at, at(10));
        assert!(
            bounded
                .windows(2)
                .all(|w| w[0].scheduled_at <= w[1].scheduled_at)
        );
    }
}
