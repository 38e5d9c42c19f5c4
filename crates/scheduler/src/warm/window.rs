//! Whether a pool keeps warm runners now: a job seen within the activity window, or a
//! schedule window open.

use std::time::Duration;

use api::WeeklyWindow;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Whether warm runners are kept at `now`: `activity` is `None` for always, else a job
/// seen at `last_job_seen` keeps them that long; an open schedule window keeps them too.
pub(crate) fn is_kept(
    now: &Time,
    last_job_seen: Option<&Time>,
    activity: Option<Duration>,
    windows: &[WeeklyWindow],
) -> bool {
    let Some(activity) = activity else {
        return true;
    };
    let seen_lately = last_job_seen.is_some_and(|seen| now.0 < after(&seen.0, activity));
    seen_lately || windows.iter().any(|w| is_open(w, &now.0))
}

/// When the activity window of a job seen at `last_job_seen` ends.
pub(crate) fn activity_ends(last_job_seen: &Time, activity: Duration) -> Timestamp {
    after(&last_job_seen.0, activity)
}

/// Whether `window` is open at `at`: on one of its days, from `start` to before `end`, in
/// its zone.
pub(crate) fn is_open(window: &WeeklyWindow, at: &Timestamp) -> bool {
    let local = at.to_zoned(window.time_zone.clone());
    let (day, time) = (local.weekday(), local.time());
    window.days.contains(&day) && time >= window.start && window.end.is_none_or(|end| time < end)
}

fn after(at: &Timestamp, duration: Duration) -> Timestamp {
    let duration = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use api::{Day, WarmSchedule};

    use super::*;

    fn berlin_office() -> WeeklyWindow {
        WarmSchedule {
            days: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri],
            start: "07:00".into(),
            end: "19:00".into(),
            time_zone: "Europe/Berlin".into(),
        }
        .window(0)
        .unwrap()
    }

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn schedule_opens_in_its_own_zone() {
        let window = berlin_office();
        // Monday 2026-12-07: Berlin is UTC+1 in winter.
        assert!(!is_open(&window, &at("2026-12-07T05:59:00Z").0));
        assert!(is_open(&window, &at("2026-12-07T06:00:00Z").0));
        assert!(is_open(&window, &at("2026-12-07T17:59:00Z").0));
        assert!(!is_open(&window, &at("2026-12-07T18:00:00Z").0));
        // Saturday.
        assert!(!is_open(&window, &at("2026-12-12T10:00:00Z").0));
        // Summer time: UTC+2.
        assert!(is_open(&window, &at("2026-07-06T05:00:00Z").0));
        assert!(!is_open(&window, &at("2026-07-06T04:59:00Z").0));
    }

    #[test]
    fn a_job_seen_keeps_them_for_the_activity_window() {
        let thirty = Some(Duration::from_secs(1800));
        let seen = at("2026-12-12T10:00:00Z");
        assert!(is_kept(
            &at("2026-12-12T10:29:59Z"),
            Some(&seen),
            thirty,
            &[]
        ));
        assert!(!is_kept(
            &at("2026-12-12T10:30:00Z"),
            Some(&seen),
            thirty,
            &[]
        ));
        assert!(!is_kept(&at("2026-12-12T10:00:00Z"), None, thirty, &[]));
        assert!(is_kept(&at("2026-12-12T10:00:00Z"), None, None, &[]));
        let monday = at("2026-12-07T10:00:00Z");
        assert!(is_kept(&monday, None, thirty, &[berlin_office()]));
    }
}
