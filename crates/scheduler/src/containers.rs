//! The names of the containers the scheduler puts in runner pods (a leaf: the pod
//! builder, the template merge and the Job summary all read them).

/// The container that runs `forgejo-runner one-job` (in every mode).
pub const RUNNER_CONTAINER: &str = "runner";
/// The Docker daemon sidecar of docker-mode pods.
pub const DIND_CONTAINER: &str = api::DIND_SIDECAR;
/// The init container that copies the runner binary into kubernetes-mode pods.
pub const INSTALL_RUNNER_CONTAINER: &str = "install-runner";
