//! What each controller costs: RSS and CPU from `/proc/<pid>` over the run, and the Forgejo
//! requests each sent (told apart by token in the stand-in's request log).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forgejo_stand_in::StandIn;

use super::systems::System;
use crate::bench::setup::{cpu_ticks, is_listing};

/// RSS samples and CPU time of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    /// Samples of VmRSS (KiB).
    samples: u64,
    rss_sum_kib: u64,
    /// The largest VmRSS sample (KiB).
    pub(super) rss_max_kib: u64,
    /// VmHWM at the last sample (KiB): the peak the kernel saw, between samples too.
    pub(super) hwm_kib: u64,
    /// CPU ticks when sampling began, and at the last sample.
    ticks_first: u64,
    ticks_last: u64,
    /// Seconds between the first and the last sample.
    pub(super) seconds: f64,
}

impl Usage {
    /// Mean VmRSS over the samples (MiB).
    pub(super) fn rss_mean_mib(&self) -> f64 {
        self.rss_sum_kib as f64 / self.samples.max(1) as f64 / 1024.0
    }

    /// CPU time over the sampled wall time, in % of one core (100 ticks a second).
    pub(super) fn cpu_percent(&self) -> f64 {
        let cpu = self.ticks_last.saturating_sub(self.ticks_first) as f64 / 100.0;
        cpu * 100.0 / self.seconds.max(1e-9)
    }

    /// CPU seconds over the run.
    pub(super) fn cpu_seconds(&self) -> f64 {
        self.ticks_last.saturating_sub(self.ticks_first) as f64 / 100.0
    }
}

/// A `VmRSS`/`VmHWM` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let prefix = format!("{field}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples both processes once a second until aborted.
#[derive(Clone, Default)]
pub(super) struct Sampler(Arc<Mutex<[Usage; 2]>>);

impl Sampler {
    /// Starts sampling `pids` (by [`System::index`]), for at most an hour.
    pub(super) fn start(&self, pids: [u32; 2]) -> tokio::task::JoinHandle<()> {
        let shared = self.0.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(3600) {
                for system in System::BOTH {
                    let pid = pids[system.index()];
                    let (Some(rss), Ok(ticks)) = (status_kib(pid, "VmRSS"), cpu_ticks(pid)) else {
                        continue;
                    };
                    let mut all = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let usage = &mut all[system.index()];
                    if usage.samples == 0 {
                        usage.ticks_first = ticks;
                    }
                    usage.samples += 1;
                    usage.rss_sum_kib += rss;
                    usage.rss_max_kib = usage.rss_max_kib.max(rss);
                    usage.hwm_kib = status_kib(pid, "VmHWM").unwrap_or(usage.hwm_kib);
                    usage.ticks_last = ticks;
                    usage.seconds = began.elapsed().as_secs_f64();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The figures so far.
    pub(super) fn usage(&self) -> [Usage; 2] {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Requests one system sent: all of them, and its job listings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Requests {
    pub(super) all: f64,
    pub(super) listings: f64,
}

impl Requests {
    /// Both systems' counts so far.
    pub(super) fn now(forgejo: &StandIn) -> [Requests; 2] {
        System::BOTH.map(|system| {
            let by =
                |r: &forgejo_stand_in::RecordedRequest| r.token_index == Some(system.token_index());
            Requests {
                all: forgejo.count_requests(by) as f64,
                listings: forgejo.count_requests(|r| by(r) && is_listing(r)) as f64,
            }
        })
    }

    /// Per `interval` between two counts taken `window` apart.
    pub(super) fn per_interval(
        before: [Requests; 2],
        after: [Requests; 2],
        window: Duration,
        interval: Duration,
    ) -> [Requests; 2] {
        let intervals = window.as_secs_f64() / interval.as_secs_f64();
        [0, 1].map(|i| Requests {
            all: (after[i].all - before[i].all) / intervals,
            listings: (after[i].listings - before[i].listings) / intervals,
        })
    }
}

/// When each system's job listings reached the stand-in, seen by checking its request log
/// every 2 ms (the log has no times): a job added at `t` is first shown by the first
/// listing after `t`.
#[derive(Clone, Default)]
pub(super) struct ListingClock(Arc<Mutex<[Vec<Instant>; 2]>>);

impl ListingClock {
    /// Starts watching `forgejo`'s log, for at most an hour.
    pub(super) fn start(&self, forgejo: &StandIn) -> tokio::task::JoinHandle<()> {
        let (shared, forgejo) = (self.0.clone(), forgejo.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let mut known = [0usize; 2];
            while began.elapsed() < Duration::from_secs(3600) {
                let counts = Requests::now(&forgejo);
                let now = Instant::now();
                for system in System::BOTH {
                    let i = system.index();
                    let count = counts[i].listings as usize;
                    if count > known[i] {
                        known[i] = count;
                        shared.lock().unwrap_or_else(|p| p.into_inner())[i].push(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    }

    /// When `system`'s first listing at or after `t` was seen.
    pub(super) fn first_after(&self, system: System, t: Instant) -> Option<Instant> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all[system.index()].iter().copied().find(|at| *at >= t)
    }
}
