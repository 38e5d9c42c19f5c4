//! `spec.warmRunners`: idle runners kept registered and fetching, so that a job starts in
//! about a fetch interval instead of a poll interval plus a pod start; kept only while the
//! pool is in use (a job seen lately, or a schedule window open).

use std::time::Duration;

use jiff::civil::{Time as CivilTime, Weekday};
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// The fetch interval of warm runners unless `spec.warmRunners.fetchInterval` says otherwise.
pub const DEFAULT_WARM_FETCH_INTERVAL: &str = "1s";
/// How long warm runners are kept after the pool's last job unless
/// `spec.warmRunners.activityWindow` says otherwise.
pub const DEFAULT_ACTIVITY_WINDOW: &str = "30m";
/// Bounds of `spec.warmRunners.fetchInterval`.
pub const WARM_FETCH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30));
/// The longest `spec.warmRunners.activityWindow`.
pub const MAX_ACTIVITY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

const CLOCK_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$";
const CLOCK_MESSAGE: &str = "must be a time of day HH:MM from 00:00 to 24:00, e.g. 07:00";

/// Idle runners a pool keeps ready, per label, and when it keeps them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmRunnersSpec {
    /// How many idle runners to keep per label; each label must be one of `spec.labels`.
    #[schemars(length(min = 1, max = 32))]
    pub runners: Vec<WarmLabel>,
    /// How often an idle warm runner asks Forgejo for a job, from 1s to 30s (default 1s).
    #[serde(default = "default_fetch_interval")]
    #[schemars(length(min = 1, max = 32))]
    pub fetch_interval: String,
    /// Warm runners are kept while a job of the pool was seen waiting within this long;
    /// `0s` keeps them always (default 30m, at most 168h).
    #[serde(default = "default_activity_window")]
    #[schemars(length(min = 1, max = 32))]
    pub activity_window: String,
    /// Weekly windows in which warm runners are kept even with no job seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub schedules: Vec<WarmSchedule>,
}

/// How many idle warm runners to keep for one label.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmLabel {
    /// The label name, one of `spec.labels` (its scheme decides the pod, as for any job).
    #[schemars(length(min = 1, max = 255))]
    pub label: String,
    /// Idle runners to keep; they count toward `spec.maxRunners`.
    #[schemars(range(min = 1, max = 1000))]
    pub count: i32,
}

/// A weekly window, e.g. Monday to Friday 07:00-19:00 in Europe/Berlin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmSchedule {
    /// The days it is open: Mon, Tue, Wed, Thu, Fri, Sat, Sun.
    #[schemars(length(min = 1, max = 7))]
    pub days: Vec<Day>,
    /// When it opens on those days, HH:MM local time.
    #[schemars(length(min = 5, max = 5))]
    #[x_kube(validation = Rule::new(format!("self.matches('{CLOCK_PATTERN}')")).message(CLOCK_MESSAGE))]
    pub start: String,
    /// When it closes on those days, HH:MM local time, after `start` (24:00: midnight).
    #[schemars(length(min = 5, max = 5))]
    #[x_kube(validation = Rule::new(format!("self.matches('{CLOCK_PATTERN}')")).message(CLOCK_MESSAGE))]
    pub end: String,
    /// The IANA time zone of `start` and `end`, e.g. `Europe/Berlin` (default UTC).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    /// The calendar's weekday.
    pub fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// What the pool's warm runners are doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmRunnersStatus {
    /// Warm runners waiting for a job (started, or starting).
    pub idle: i32,
    /// Warm runners running a job.
    pub busy: i32,
    /// Whether warm runners are kept now: a job was seen within `activityWindow`, or a
    /// schedule window is open.
    pub kept: bool,
    /// When a job of the pool was last seen waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_seen: Option<Time>,
}

/// Why `spec.warmRunners` cannot be served; each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarmRunnersError {
    /// A warm label is not one of `spec.labels`.
    #[error(
        "spec.warmRunners.runners[{index}].label: {label:?} is not one of spec.labels ({known})"
    )]
    UnknownLabel {
        /// Its index.
        index: usize,
        /// The label.
        label: String,
        /// The pool's label names.
        known: String,
    },
    /// A label is listed twice.
    #[error("spec.warmRunners.runners[{index}].label: {label:?} is listed twice")]
    DuplicateLabel {
        /// Its second index.
        index: usize,
        /// The label.
        label: String,
    },
    /// A count is below 1 or above 1000.
    #[error("spec.warmRunners.runners[{index}].count must be from 1 to 1000, got {count}")]
    Count {
        /// Its index.
        index: usize,
        /// The count.
        count: i32,
    },
    /// `fetchInterval` does not parse or is out of range.
    #[error("spec.warmRunners.fetchInterval: {0}")]
    FetchInterval(String),
    /// `activityWindow` does not parse or is out of range.
    #[error("spec.warmRunners.activityWindow: {0}")]
    ActivityWindow(String),
    /// A schedule's field is wrong.
    #[error("spec.warmRunners.schedules[{index}].{field}: {problem}")]
    Schedule {
        /// Its index.
        index: usize,
        /// The field, e.g. `timeZone`.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// A schedule window, parsed: days, local start and end, and the zone.
#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyWindow {
    /// The days it is open.
    pub days: Vec<Weekday>,
    /// When it opens, local time.
    pub start: CivilTime,
    /// When it closes, local time; `None` for the end of the day (24:00).
    pub end: Option<CivilTime>,
    /// The zone of `start` and `end`.
    pub time_zone: TimeZone,
}

impl WarmRunnersSpec {
    /// The fetch interval, within [`WARM_FETCH_INTERVAL_RANGE`].
    pub fn fetch_interval(&self) -> Result<Duration, WarmRunnersError> {
        let error = |m: String| WarmRunnersError::FetchInterval(m);
        let interval = parse_duration(&self.fetch_interval).map_err(|e| error(e.to_string()))?;
        let (min, max) = WARM_FETCH_INTERVAL_RANGE;
        if interval < min || interval > max {
            return Err(error(format!(
                "{:?} is outside 1s..30s",
                self.fetch_interval
            )));
        }
        Ok(interval)
    }

    /// The activity window; `None` for `0s` (always kept).
    pub fn activity_window(&self) -> Result<Option<Duration>, WarmRunnersError> {
        let error = |m: String| WarmRunnersError::ActivityWindow(m);
        let window = parse_duration(&self.activity_window).map_err(|e| error(e.to_string()))?;
        if window > MAX_ACTIVITY_WINDOW {
            return Err(error(format!(
                "{:?} is longer than 168h",
                self.activity_window
            )));
        }
        Ok((!window.is_zero()).then_some(window))
    }

    /// The schedule windows, parsed.
    pub fn windows(&self) -> Result<Vec<WeeklyWindow>, WarmRunnersError> {
        self.schedules
            .iter()
            .enumerate()
            .map(|(index, schedule)| schedule.window(index))
            .collect()
    }

    /// Checks the warm labels against the pool's label names, and every other field.
    pub fn validate(&self, label_names: &[&str]) -> Result<(), WarmRunnersError> {
        for (index, warm) in self.runners.iter().enumerate() {
            if !label_names.contains(&warm.label.as_str()) {
                return Err(WarmRunnersError::UnknownLabel {
                    index,
                    label: warm.label.clone(),
                    known: label_names.join(","),
                });
            }
            if self.runners[..index].iter().any(|w| w.label == warm.label) {
                let label = warm.label.clone();
                return Err(WarmRunnersError::DuplicateLabel { index, label });
            }
            if !(1..=1000).contains(&warm.count) {
                let count = warm.count;
                return Err(WarmRunnersError::Count { index, count });
            }
        }
        self.fetch_interval()?;
        self.activity_window()?;
        self.windows()?;
        Ok(())
    }
}

impl WarmSchedule {
    /// The window, parsed; `index` names it in errors.
    pub fn window(&self, index: usize) -> Result<WeeklyWindow, WarmRunnersError> {
        let problem = |field: &'static str, problem: String| WarmRunnersError::Schedule {
            index,
            field,
            problem,
        };
        if self.days.is_empty() {
            return Err(problem(
                "days",
                "name at least one day, e.g. [Mon, Fri]".into(),
            ));
        }
        let start = parse_clock(&self.start)
            .ok_or_else(|| problem("start", format!("{:?} {CLOCK_MESSAGE}", self.start)))?;
        let end = parse_clock(&self.end)
            .ok_or_else(|| problem("end", format!("{:?} {CLOCK_MESSAGE}", self.end)))?;
        if start.is_none() || end.is_some_and(|end| Some(end) <= start) {
            return Err(problem(
                "end",
                format!("{:?} must be after start {:?}", self.end, self.start),
            ));
        }
        let time_zone = TimeZone::get(&self.time_zone).map_err(|_| {
            problem(
                "timeZone",
                format!(
                    "{:?} is not an IANA time zone, e.g. Europe/Berlin or UTC",
                    self.time_zone
                ),
            )
        })?;
        Ok(WeeklyWindow {
            days: self.days.iter().map(|d| d.weekday()).collect(),
            start: start.unwrap_or_default(),
            end,
            time_zone,
        })
    }
}

/// `HH:MM` as a time of day; `Some(None)` for 24:00; `None` if it does not parse.
fn parse_clock(text: &str) -> Option<Option<CivilTime>> {
    if text == "24:00" {
        return Some(None);
    }
    let (hour, minute) = text.split_once(':')?;
    if hour.len() != 2 || minute.len() != 2 {
        return None;
    }
    let hour: i8 = hour.parse().ok()?;
    let minute: i8 = minute.parse().ok()?;
    CivilTime::new(hour, minute, 0, 0).ok().map(Some)
}

fn default_fetch_interval() -> String {
    DEFAULT_WARM_FETCH_INTERVAL.to_owned()
}
fn default_activity_window() -> String {
    DEFAULT_ACTIVITY_WINDOW.to_owned()
}
fn default_time_zone() -> String {
    "UTC".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WarmRunnersSpec {
        WarmRunnersSpec {
            runners: vec![WarmLabel {
                label: "docker".into(),
                count: 2,
            }],
            fetch_interval: "1s".into(),
            activity_window: "30m".into(),
            schedules: vec![WarmSchedule {
                days: vec![Day::Mon, Day::Fri],
                start: "07:00".into(),
                end: "19:00".into(),
                time_zone: "Europe/Berlin".into(),
            }],
        }
    }

    #[test]
    fn a_valid_spec_parses() {
        let spec = spec();
        spec.validate(&["docker", "x"]).unwrap();
        assert_eq!(spec.fetch_interval().unwrap(), Duration::from_secs(1));
        assert_eq!(
            spec.activity_window().unwrap(),
            Some(Duration::from_secs(1800))
        );
        let window = &spec.windows().unwrap()[0];
        assert_eq!(window.days, [Weekday::Monday, Weekday::Friday]);
        assert_eq!(window.start, CivilTime::new(7, 0, 0, 0).unwrap());
        assert_eq!(window.time_zone.iana_name(), Some("Europe/Berlin"));
    }

    #[test]
    fn zero_activity_window_keeps_always() {
        let mut spec = spec();
        spec.activity_window = "0s".into();
        assert_eq!(spec.activity_window().unwrap(), None);
    }

    /// A change that breaks the spec, and how its error starts.
    type Breakage = (fn(&mut WarmRunnersSpec), &'static str);

    #[test]
    fn each_error_names_its_field() {
        let cases: Vec<Breakage> = vec![
            (
                |s| s.runners[0].label = "gpu".into(),
                "spec.warmRunners.runners[0].label: \"gpu\" is not one of spec.labels",
            ),
            (
                |s| s.runners.push(s.runners[0].clone()),
                "spec.warmRunners.runners[1].label: \"docker\" is listed twice",
            ),
            (
                |s| s.runners[0].count = 0,
                "spec.warmRunners.runners[0].count",
            ),
            (
                |s| s.fetch_interval = "90s".into(),
                "spec.warmRunners.fetchInterval",
            ),
            (
                |s| s.activity_window = "9000h".into(),
                "spec.warmRunners.activityWindow",
            ),
            (
                |s| s.schedules[0].time_zone = "Mars/Olympus".into(),
                "spec.warmRunners.schedules[0].timeZone: \"Mars/Olympus\" is not an IANA time zone",
            ),
            (
                |s| s.schedules[0].end = "06:00".into(),
                "spec.warmRunners.schedules[0].end: \"06:00\" must be after start",
            ),
            (
                |s| s.schedules[0].start = "7am".into(),
                "spec.warmRunners.schedules[0].start",
            ),
            (
                |s| s.schedules[0].days.clear(),
                "spec.warmRunners.schedules[0].days",
            ),
        ];
        for (break_it, expected) in cases {
            let mut spec = spec();
            break_it(&mut spec);
            let error = spec.validate(&["docker", "x"]).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn end_of_day_is_24_00() {
        let mut spec = spec();
        spec.schedules[0].end = "24:00".into();
        assert_eq!(spec.windows().unwrap()[0].end, None);
    }
}
