//! A watch of both systems' runner Jobs: when each was first seen, finished and deleted,
//! the Forgejo job it is for (ours only: KEDA's Jobs are not tied to a job), and the most
//! that were alive at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt as _};

use super::systems::System;

/// One runner Job as the watch saw it.
#[derive(Debug, Clone)]
pub(super) struct SeenJob {
    /// Whose it is.
    pub(super) system: System,
    /// Its name.
    pub(super) name: String,
    /// The Forgejo job id of its label (ours only).
    pub(super) job_id: Option<i64>,
    /// When the watch first saw it.
    pub(super) seen: Instant,
    /// When it was first seen Complete or Failed.
    pub(super) finished: Option<Instant>,
    /// When it was first seen going (a deletion timestamp, or gone).
    pub(super) deleted: Option<Instant>,
}

impl SeenJob {
    /// Neither finished nor going.
    pub(super) fn alive(&self) -> bool {
        self.finished.is_none() && self.deleted.is_none()
    }
}

#[derive(Default)]
struct Seen {
    /// In the order first seen.
    jobs: Vec<SeenJob>,
    /// The most alive at once, per system.
    most_alive: [usize; 2],
}

/// The shared record both watch tasks write.
#[derive(Clone, Default)]
pub(super) struct JobWatch(Arc<Mutex<Seen>>);

impl JobWatch {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one watch per system; they run until aborted.
    pub(super) fn start(&self, client: &Client) -> Vec<tokio::task::JoinHandle<()>> {
        System::BOTH
            .into_iter()
            .map(|system| {
                let api: Api<Job> = Api::namespaced(client.clone(), system.namespace());
                let config = watcher::Config::default().labels(&system.jobs_selector());
                let record = self.clone();
                tokio::spawn(async move {
                    let mut events = watcher(api, config).boxed();
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => {
                                record.note(system, &job, false);
                            }
                            Ok(watcher::Event::Delete(job)) => record.note(system, &job, true),
                            _ => {}
                        }
                    }
                })
            })
            .collect()
    }

    fn note(&self, system: System, job: &Job, gone: bool) {
        let now = Instant::now();
        let name = job.name_any();
        let finished = job_finished(job);
        let going = gone || job.metadata.deletion_timestamp.is_some();
        let mut seen = self.lock();
        let index = match seen
            .jobs
            .iter()
            .position(|j| j.system == system && j.name == name)
        {
            Some(index) => index,
            None => {
                let job_id = job
                    .labels()
                    .get(scheduler::labels::FORGEJO_JOB_ID)
                    .and_then(|id| id.parse().ok());
                seen.jobs.push(SeenJob {
                    system,
                    name,
                    job_id,
                    seen: now,
                    finished: None,
                    deleted: None,
                });
                seen.jobs.len() - 1
            }
        };
        let entry = &mut seen.jobs[index];
        if finished {
            entry.finished.get_or_insert(now);
        }
        if going {
            entry.deleted.get_or_insert(now);
        }
        let alive = seen
            .jobs
            .iter()
            .filter(|j| j.system == system && j.alive())
            .count();
        let most = &mut seen.most_alive[system.index()];
        *most = (*most).max(alive);
    }

    /// `system`'s Jobs, in the order first seen.
    pub(super) fn of(&self, system: System) -> Vec<SeenJob> {
        self.lock()
            .jobs
            .iter()
            .filter(|j| j.system == system)
            .cloned()
            .collect()
    }

    /// The most Jobs of `system` alive at once so far.
    pub(super) fn most_alive(&self, system: System) -> usize {
        self.lock().most_alive[system.index()]
    }

    /// `system`'s Jobs first seen in `[from, to)`, in that order.
    pub(super) fn seen_between(&self, system: System, from: Instant, to: Instant) -> Vec<SeenJob> {
        self.lock()
            .jobs
            .iter()
            .filter(|j| j.system == system && j.seen >= from && j.seen < to)
            .cloned()
            .collect()
    }
}

/// Whether a Job is Complete or Failed.
pub(super) fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}
