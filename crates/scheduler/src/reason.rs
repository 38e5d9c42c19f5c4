//! Why the scheduler does something: one reason per plan item, for events and metric labels.

use std::fmt;

/// The reason of a plan item; [`Reason::as_str`] is PascalCase and bounded, fit for event
/// reasons and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A Forgejo job waits for a runner and has no Job: create one.
    JobWaiting,
    /// A Job was just created: give it its runner Secret.
    NewJob,
    /// A live Job has no runner Secret (a crash between creating both): give it one.
    SecretMissing,
    /// The Forgejo job no longer waits and the Job's runner runs nothing.
    ForgejoJobNotWaiting,
    /// The pod could not pull an image past the deadline.
    ImagePullFailed,
    /// The pod's container config could not be built past the deadline.
    ContainerConfigError,
    /// The pod stayed unschedulable past the deadline.
    Unschedulable,
    /// Kubernetes created no pod for the Job past the deadline (admission refused it).
    PodNotCreated,
    /// The Job finished but its Forgejo job still waits: make room for a new Job.
    RetryWaitingJob,
    /// The Job finished: its runner credentials are no longer needed.
    JobFinished,
    /// The Job is deleted: its Secret and registration go with it.
    JobDeleted,
    /// A runner registration of this pool has no Job that could use it.
    RegistrationOrphaned,
    /// A runner registration was replaced by a newer one for the same Job.
    RegistrationSuperseded,
    /// The Job's runner Secret was lost, so its registration's token is unusable.
    CredentialsLost,
    /// A Job finished with its runner exiting 0.
    JobSucceeded,
    /// A Job failed (pod failure, eviction, deadline).
    JobFailed,
    /// A Job in the status is gone without the scheduler deleting it.
    JobVanished,
    /// The pool keeps fewer idle warm runners than `spec.warmRunners` asks: start one.
    WarmRunnerWanted,
    /// An idle warm runner is no longer wanted (the pool is quiet, or fewer are asked for).
    WarmRunnerRetired,
    /// An idle warm runner is old enough that a job it takes could outrun the Job's
    /// `activeDeadlineSeconds`: it is replaced by a new one.
    WarmRunnerRecycled,
    /// A warm runner's pod did not start its runner in time.
    WarmRunnerNotStarted,
    /// Warm runners are kept: a job was seen, or a schedule window opened.
    WarmWindowOpened,
    /// Warm runners are no longer kept: no job within the activity window, no schedule open.
    WarmWindowClosed,
}

impl Reason {
    /// The PascalCase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::JobWaiting => "JobWaiting",
            Self::NewJob => "NewJob",
            Self::SecretMissing => "SecretMissing",
            Self::ForgejoJobNotWaiting => "ForgejoJobNotWaiting",
            Self::ImagePullFailed => "ImagePullFailed",
            Self::ContainerConfigError => "ContainerConfigError",
            Self::Unschedulable => "Unschedulable",
            Self::PodNotCreated => "PodNotCreated",
            Self::RetryWaitingJob => "RetryWaitingJob",
            Self::JobFinished => "JobFinished",
            Self::JobDeleted => "JobDeleted",
            Self::RegistrationOrphaned => "RegistrationOrphaned",
            Self::RegistrationSuperseded => "RegistrationSuperseded",
            Self::CredentialsLost => "CredentialsLost",
            Self::JobSucceeded => "JobSucceeded",
            Self::JobFailed => "JobFailed",
            Self::JobVanished => "JobVanished",
            Self::WarmRunnerWanted => "WarmRunnerWanted",
            Self::WarmRunnerRetired => "WarmRunnerRetired",
            Self::WarmRunnerRecycled => "WarmRunnerRecycled",
            Self::WarmRunnerNotStarted => "WarmRunnerNotStarted",
            Self::WarmWindowOpened => "WarmWindowOpened",
            Self::WarmWindowClosed => "WarmWindowClosed",
        }
    }

    /// Whether it reports a failure (a Warning event) rather than routine work.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::ImagePullFailed
                | Self::ContainerConfigError
                | Self::Unschedulable
                | Self::PodNotCreated
                | Self::RetryWaitingJob
                | Self::SecretMissing
                | Self::CredentialsLost
                | Self::WarmRunnerNotStarted
                | Self::JobFailed
                | Self::JobVanished
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case() {
        for reason in [
            Reason::JobWaiting,
            Reason::ForgejoJobNotWaiting,
            Reason::JobVanished,
        ] {
            let text = reason.as_str();
            assert!(text.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(reason.to_string(), text);
        }
        assert!(Reason::ImagePullFailed.is_failure());
        assert!(!Reason::JobWaiting.is_failure());
    }
}
