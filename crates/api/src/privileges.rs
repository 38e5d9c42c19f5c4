//! What `spec.jobTemplate` may ask of the node.
//!
//! A RunnerDeployment makes pods: whoever may create one may otherwise get a privileged
//! container, the node's namespaces or files, or a powerful ServiceAccount token, by writing
//! them into `spec.jobTemplate`. Unless the operator is started with
//! `--allow-privileged-runners` ([`PodPrivileges::Privileged`]), [`check_pod_template`]
//! refuses such a template, naming the field.
//!
//! Only the user's template is checked. The controller's own containers are not: in
//! `docker` mode the scheduler adds a privileged `docker:dind` sidecar itself, which is what
//! that label scheme means, and it is not affected by this check. (A container of the
//! template named like one of ours is checked as the user wrote it.)

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, SecurityContext};

pub use crate::resource::ALLOW_PRIVILEGED_FLAG;
use crate::resource::{RunnerDeploymentSpec, SpecError};

/// The capabilities Kubernetes' "baseline" Pod Security Standard lets a container add
/// (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>, "Capabilities").
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// What runner pod templates may ask for, set by the operator's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PodPrivileges {
    /// No privileged or escalating containers, no capabilities beyond
    /// [`BASELINE_CAPABILITIES`], none of the node's PID, network or IPC namespaces, no
    /// hostPath volumes or host ports, no Windows host processes, and no ServiceAccount other
    /// than `default` unless its token is not mounted. The default.
    #[default]
    Baseline,
    /// Anything the apiserver admits (the operator was started with
    /// `--allow-privileged-runners`).
    Privileged,
}

/// Checks a user pod template (`spec.jobTemplate`) against `policy`; the error names the
/// first field that asks for too much, as `spec.jobTemplate.…`.
pub fn check_pod_template(
    template: &PodTemplateSpec,
    policy: PodPrivileges,
) -> Result<(), SpecError> {
    if policy == PodPrivileges::Privileged {
        return Ok(());
    }
    let Some(spec) = &template.spec else {
        return Ok(());
    };
    // The scheduler keeps the sidecar privileged but lets a template replace its image (a
    // mirror): without the flag that would run any image privileged.
    for (index, container) in spec.containers.iter().enumerate() {
        if container.name == DIND_SIDECAR && container.image.is_some() {
            return refuse(
                format!("spec.jobTemplate.spec.containers[{index}].image"),
                "replaces the image of the privileged docker-in-docker sidecar",
            );
        }
    }
    check_pod_spec(spec, "spec.jobTemplate.spec")
}

/// The name of the docker-mode sidecar the scheduler adds (privileged by design).
pub const DIND_SIDECAR: &str = "dind";

fn refuse(field: String, problem: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError::PrivilegedTemplate {
        field,
        problem: problem.into(),
    })
}

fn check_pod_spec(spec: &PodSpec, path: &str) -> Result<(), SpecError> {
    check_host_namespaces(spec, path)?;
    // A ServiceAccount other than the namespace's default, with its token in the pod.
    let service_account = [
        ("serviceAccountName", &spec.service_account_name),
        ("serviceAccount", &spec.service_account),
    ]
    .into_iter()
    .find_map(|(field, name)| {
        name.as_deref()
            .filter(|n| !n.is_empty() && *n != "default")
            .map(|n| (field, n))
    });
    if let Some((field, name)) = service_account
        && spec.automount_service_account_token != Some(false)
    {
        return refuse(
            format!("{path}.{field}"),
            format!(
                "ServiceAccount {name:?} would have its API token mounted in the runner pod; \
                 set automountServiceAccountToken: false in spec.jobTemplate.spec, or leave \
                 the ServiceAccount unset"
            ),
        );
    }

    check_volumes(spec, path, service_account)?;
    check_containers(spec, path)
}

/// Host namespaces and Windows host processes.
fn check_host_namespaces(spec: &PodSpec, path: &str) -> Result<(), SpecError> {
    for (set, field, what) in [
        (
            spec.host_pid,
            "hostPID",
            "shares the node's process namespace",
        ),
        (
            spec.host_network,
            "hostNetwork",
            "shares the node's network namespace",
        ),
        (spec.host_ipc, "hostIPC", "shares the node's IPC namespace"),
    ] {
        if set == Some(true) {
            return refuse(format!("{path}.{field}"), format!("{field}: true {what}"));
        }
    }
    if let Some(host_process) = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.windows_options.as_ref())
        .and_then(|w| w.host_process)
        .filter(|p| *p)
    {
        return refuse(
            format!("{path}.securityContext.windowsOptions.hostProcess"),
            format!("hostProcess: {host_process} runs the pod as a process of the Windows node"),
        );
    }

    Ok(())
}

/// hostPath volumes, and tokens of the template's own ServiceAccount projected into volumes.
fn check_volumes(
    spec: &PodSpec,
    path: &str,
    service_account: Option<(&str, &str)>,
) -> Result<(), SpecError> {
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if volume.host_path.is_some() {
            return refuse(
                format!("{path}.volumes[{i}].hostPath"),
                format!("volume {:?} mounts a path of the node", volume.name),
            );
        }
        if let Some((account_field, account)) = service_account {
            let sources = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten());
            for (j, source) in sources.enumerate() {
                if source.service_account_token.is_some() {
                    return refuse(
                        format!("{path}.volumes[{i}].projected.sources[{j}].serviceAccountToken"),
                        format!(
                            "volume {:?} projects a token of ServiceAccount {account:?} \
                             ({path}.{account_field})",
                            volume.name
                        ),
                    );
                }
            }
        }
    }

    Ok(())
}

/// Each container's security context and host ports.
fn check_containers(spec: &PodSpec, path: &str) -> Result<(), SpecError> {
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, &c.name, &c.security_context, &c.ports));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ("initContainers", i, &c.name, &c.security_context, &c.ports));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            (
                "ephemeralContainers",
                i,
                &c.name,
                &c.security_context,
                &c.ports,
            )
        });
    for (list, i, name, security_context, ports) in containers.chain(init).chain(ephemeral) {
        let at = format!("{path}.{list}[{i}]");
        if let Some(sc) = security_context {
            check_security_context(sc, &format!("{at}.securityContext"), name)?;
        }
        for (j, port) in ports.iter().flatten().enumerate() {
            if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
                return refuse(
                    format!("{at}.ports[{j}].hostPort"),
                    format!("container {name:?} binds port {host_port} of the node"),
                );
            }
        }
    }
    Ok(())
}

fn check_security_context(sc: &SecurityContext, at: &str, name: &str) -> Result<(), SpecError> {
    if sc.privileged == Some(true) {
        return refuse(
            format!("{at}.privileged"),
            format!("container {name:?} is privileged"),
        );
    }
    if sc.allow_privilege_escalation == Some(true) {
        return refuse(
            format!("{at}.allowPrivilegeEscalation"),
            format!("container {name:?} may gain more privileges than its parent process"),
        );
    }
    let added = sc.capabilities.iter().flat_map(|c| c.add.iter().flatten());
    for (j, capability) in added.enumerate() {
        // Container runtimes take `sys_admin` and `CAP_SYS_ADMIN` for `SYS_ADMIN`.
        let upper = capability.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !BASELINE_CAPABILITIES.contains(&bare) {
            return refuse(
                format!("{at}.capabilities.add[{j}]"),
                format!(
                    "container {name:?} adds capability {capability:?}, beyond Kubernetes' \
                     baseline set ({})",
                    BASELINE_CAPABILITIES.join(", ")
                ),
            );
        }
    }
    if sc
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        .unwrap_or(false)
    {
        return refuse(
            format!("{at}.windowsOptions.hostProcess"),
            format!("container {name:?} runs as a process of the Windows node"),
        );
    }
    Ok(())
}

impl RunnerDeploymentSpec {
    /// Checks `spec.jobTemplate` against what the operator allows runner pods (see
    /// [`PodPrivileges`]): with [`PodPrivileges::Baseline`] a template asking for a host
    /// privilege is refused with [`SpecError::PrivilegedTemplate`], naming the field. Call it
    /// with [`validate`](Self::validate) before planning Jobs; the schema cannot check this,
    /// as the answer depends on the operator's flags. The controller's own containers (the
    /// privileged `dind` sidecar of `docker` labels) are not in the template and not checked.
    pub fn check_pod_privileges(&self, policy: PodPrivileges) -> Result<(), SpecError> {
        if policy == PodPrivileges::Privileged {
            return Ok(());
        }
        let Some(template) = &self.job_template else {
            return Ok(());
        };
        let template = template
            .pod_template()
            .map_err(|e| SpecError::JobTemplate(e.to_string()))?;
        check_pod_template(&template, policy)
    }
}

#[cfg(test)]
mod tests;
