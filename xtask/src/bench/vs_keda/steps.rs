//! The job sequence both systems are fed: each job is added to both organizations at the
//! same instant, and each step is matched to the Jobs each system made for it.

use std::time::{Duration, Instant};

use forgejo_stand_in::{StandIn, StandInJob};

use super::Settings;
use super::systems::System;
use super::usage::ListingClock;
use super::watch::{JobWatch, SeenJob};

/// One job of the sequence, added to both organizations.
#[derive(Debug, Clone)]
pub(super) struct Pair {
    /// The Forgejo job id in each organization, by [`System::index`].
    pub(super) ids: [i64; 2],
    /// When each was added (waiting from then on).
    pub(super) added: [Instant; 2],
}

/// One step: the jobs it added and when it ran.
#[derive(Debug, Clone)]
pub(super) struct Step {
    /// When its first job was added.
    pub(super) start: Instant,
    /// When the next step started (its window of Jobs for KEDA ends there).
    pub(super) end: Option<Instant>,
    /// Its jobs, in the order added.
    pub(super) pairs: Vec<Pair>,
}

/// What a step got from one system.
#[derive(Debug, Clone, Default)]
pub(super) struct StepFigures {
    /// Jobs the step added (the ideal number of Jobs).
    pub(super) jobs: usize,
    /// Jobs made for it, per system.
    pub(super) created: [usize; 2],
    /// Waiting → Job (ms) of each job that got one, per system.
    pub(super) latencies: [Vec<f64>; 2],
    /// The listing that first showed the job → its Job (ms): the controller's own part.
    pub(super) reactions: [Vec<f64>; 2],
}

impl Step {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            end: None,
            pairs: Vec::new(),
        }
    }

    /// Adds one job on `labels`, named `name`, to both organizations.
    pub(super) fn add(&mut self, forgejo: &StandIn, labels: &str, name: &str) -> &Pair {
        let add = |system: System| {
            let repository = format!("{}/app", system.org());
            let job = forgejo.add_job(StandInJob::new(&repository, name, &[labels]));
            (job.id, Instant::now())
        };
        let (ours, ours_at) = add(System::Ours);
        let (keda, keda_at) = add(System::Keda);
        if self.pairs.is_empty() {
            self.start = ours_at.min(keda_at);
        }
        self.pairs.push(Pair {
            ids: [ours, keda],
            added: [ours_at, keda_at],
        });
        self.pairs.last().expect("just pushed")
    }

    /// The ids of its jobs in `system`'s organization.
    pub(super) fn ids(&self, system: System) -> Vec<i64> {
        self.pairs.iter().map(|p| p.ids[system.index()]).collect()
    }

    /// The Jobs `system` made for this step: ours by the job-id label; KEDA's, which are
    /// not tied to a job, are those first seen between the step's start and the next's.
    pub(super) fn jobs_of(&self, watch: &JobWatch, system: System) -> Vec<SeenJob> {
        match system {
            System::Ours => {
                let ids = self.ids(system);
                watch
                    .of(system)
                    .into_iter()
                    .filter(|j| j.job_id.is_some_and(|id| ids.contains(&id)))
                    .collect()
            }
            System::Keda => {
                let end = self
                    .end
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                watch.seen_between(system, self.start, end)
            }
        }
    }

    /// How many of its jobs `system` has made a Job for (KEDA: Jobs in its window, capped).
    fn covered(&self, watch: &JobWatch, system: System) -> usize {
        let jobs = self.jobs_of(watch, system);
        match system {
            System::Ours => self
                .ids(system)
                .iter()
                .filter(|id| jobs.iter().any(|j| j.job_id == Some(**id)))
                .count(),
            System::Keda => jobs.len().min(self.pairs.len()),
        }
    }

    /// Waits until both systems made a Job for each of its jobs, at most `timeout`, then one
    /// poll interval more (to see any Job made beyond one per job).
    pub(super) async fn settle(&self, watch: &JobWatch, settings: &Settings, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let done = System::BOTH
                .into_iter()
                .all(|s| self.covered(watch, s) >= self.pairs.len());
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(settings.poll).await;
    }

    /// The Jobs each system made for this step, and how long each job waited for its Job,
    /// from when it was added and from the listing that first showed it. KEDA's n-th Job
    /// of the step's window is matched to the step's n-th job.
    pub(super) fn figures(&self, watch: &JobWatch, clock: &ListingClock) -> StepFigures {
        let mut figures = StepFigures {
            jobs: self.pairs.len(),
            ..StepFigures::default()
        };
        for system in System::BOTH {
            let i = system.index();
            let jobs = self.jobs_of(watch, system);
            figures.created[i] = jobs.len();
            for (n, pair) in self.pairs.iter().enumerate() {
                let first = match system {
                    System::Ours => jobs
                        .iter()
                        .filter(|j| j.job_id == Some(pair.ids[i]))
                        .map(|j| j.seen)
                        .min(),
                    System::Keda => jobs.get(n).map(|j| j.seen),
                };
                let Some(seen) = first else {
                    continue;
                };
                let waited = seen.saturating_duration_since(pair.added[i]);
                figures.latencies[i].push(waited.as_secs_f64() * 1e3);
                if let Some(listed) = clock.first_after(system, pair.added[i]) {
                    let reaction = seen.saturating_duration_since(listed);
                    figures.reactions[i].push(reaction.as_secs_f64() * 1e3);
                }
            }
        }
        figures
    }
}

/// The `q` quantile (nearest rank) of `values`; `None` when empty.
pub(super) fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(10.0));
        assert_eq!(percentile(&values, 0.95), Some(19.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
