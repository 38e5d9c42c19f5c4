//! Forgejo's label rule (`ItRunsOn` in `models/actions/run_job.go`), as a pure function.
//!
//! Forgejo hands a job to a runner, and lists a job for a `labels=` filter, when every entry
//! of the job's `runs_on` is among the runner's label names. Applying the rule locally lets
//! one unfiltered poll (Forgejo 14+) serve many pools with different label sets.

/// Whether a job with `runs_on` matches a pool with label names `labels` (Forgejo's `ItRunsOn`).
///
/// True when `labels` is a superset of `runs_on`; false when either side is empty.
pub fn it_runs_on(runs_on: &[String], labels: &[String]) -> bool {
    if runs_on.is_empty() || labels.is_empty() {
        return false;
    }
    runs_on.iter().all(|wanted| labels.contains(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn job_on_a_and_b_needs_both_labels() {
        let job = v(&["a", "b"]);
        assert!(!it_runs_on(&job, &v(&["a"])), "[a,b] vs a");
        assert!(it_runs_on(&job, &v(&["a", "b"])), "[a,b] vs a,b");
        assert!(it_runs_on(&job, &v(&["b", "a"])), "[a,b] vs b,a");
        assert!(it_runs_on(&job, &v(&["a", "b", "c"])), "[a,b] vs a,b,c");
        assert!(!it_runs_on(&job, &v(&[])), "[a,b] vs empty");
    }

    #[test]
    fn job_without_labels_never_matches() {
        assert!(!it_runs_on(&v(&[]), &v(&["a"])));
        assert!(!it_runs_on(&v(&[]), &v(&[])));
    }

    #[test]
    fn labels_compare_exactly() {
        assert!(!it_runs_on(&v(&["Docker"]), &v(&["docker"])));
        assert!(!it_runs_on(
            &v(&["docker"]),
            &v(&["docker:docker://node:22"])
        ));
        assert!(it_runs_on(&v(&["a", "a"]), &v(&["a"])));
    }
}
