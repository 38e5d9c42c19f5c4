//! A job a test adds to the stand-in (`StandIn::add_job`), built field by field.

/// A job to add to the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInJob {
    /// The job id; `None`: the next free one.
    pub id: Option<i64>,
    /// `owner/repo` the job belongs to.
    pub repository: String,
    /// The job's name.
    pub name: String,
    /// The label names it runs on.
    pub runs_on: Vec<String>,
    /// Jobs it needs.
    pub needs: Vec<String>,
    /// `waiting` (default), `running`, `success`, `blocked`, …
    pub status: String,
    /// The attempt number (default 1).
    pub attempt: i64,
    /// The attempt's handle; `None`: a random one; `Some("")`: a job from before Forgejo 15.
    pub handle: Option<String>,
    /// Shell lines, one `run:` step each, of the workflow a runner gets for it.
    pub steps: Vec<String>,
}

impl StandInJob {
    /// A waiting job of `owner/repo` named `name` on `runs_on`.
    pub fn new(repository: &str, name: &str, runs_on: &[&str]) -> Self {
        Self {
            id: None,
            repository: repository.into(),
            name: name.into(),
            runs_on: runs_on.iter().map(|s| (*s).to_owned()).collect(),
            needs: Vec::new(),
            status: "waiting".into(),
            attempt: 1,
            handle: None,
            steps: vec![format!("echo \"hello from {name}\"")],
        }
    }

    /// Sets the `run:` steps (shell lines) of its workflow.
    pub fn with_steps(mut self, steps: &[&str]) -> Self {
        self.steps = steps.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: i64) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// Sets the jobs it needs.
    pub fn with_needs(mut self, needs: &[&str]) -> Self {
        self.needs = needs.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the handle (`""` for a job created before the upgrade to Forgejo 15).
    pub fn with_handle(mut self, handle: &str) -> Self {
        self.handle = Some(handle.into());
        self
    }
}
