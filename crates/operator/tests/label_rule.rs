//! The operator's label rule (`api::runs_on_labels`) and the Forgejo stand-in's copy of
//! Forgejo's `ItRunsOn` (`forgejo::it_runs_on`) are one rule: the operator must start a runner
//! exactly for the jobs Forgejo would hand to it. `forgejo` does not depend on `api`, so the
//! two are pinned together here, over every pair of label sets from a small alphabet.

const ALPHABET: [&str; 3] = ["docker", "ubuntu-latest", "arm64"];

/// Every subset of the alphabet, the empty one included.
fn subsets() -> Vec<Vec<String>> {
    (0..1u32 << ALPHABET.len())
        .map(|mask| {
            ALPHABET
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, l)| (*l).to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_operator_and_forgejo_agree_on_which_runner_takes_a_job() {
    let sets = subsets();
    let mut matches = 0;
    for runs_on in &sets {
        for labels in &sets {
            let operator = api::runs_on_labels(runs_on, labels.iter().map(String::as_str));
            let forgejo = forgejo::it_runs_on(runs_on, labels);
            assert_eq!(operator, forgejo, "runs-on {runs_on:?}, labels {labels:?}");
            matches += usize::from(operator);
        }
    }
    // runs-on within the labels: each label is in neither, the labels only, or both (3^3),
    // minus the 2^3 pairs with an empty runs-on, which no runner takes.
    assert_eq!(matches, 27 - 8);
}
