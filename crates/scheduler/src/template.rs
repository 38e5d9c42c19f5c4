//! Merging the user's `jobTemplate` into the controller's runner pod.
//!
//! The user's pod is the base: node selector, tolerations, affinity, service account,
//! extra containers and volumes all stay. The controller injects what the runner needs and
//! keeps control of what makes it work:
//!
//! - Containers named like ours (`runner`, `dind`, `install-runner`) are merged: our image
//!   (except `dind`, whose image the user may replace, e.g. with a mirror), command, args,
//!   env and mounts win; the user's resources, security context and other fields stay.
//! - Our volumes replace the user's of the same name; `restartPolicy` is always `Never`.
//! - Our labels and annotations win over the user's; the rest of theirs stay.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::containers::DIND_CONTAINER;

/// Our pod template with the user's merged in (see the module docs for the rules).
pub(crate) fn merge_user_template(
    ours: PodTemplateSpec,
    user: Option<&PodTemplateSpec>,
) -> PodTemplateSpec {
    let Some(user) = user else {
        return ours;
    };
    let our_meta = ours.metadata.unwrap_or_default();
    let user_meta = user.metadata.clone().unwrap_or_default();
    let metadata = ObjectMeta {
        labels: merge_maps(user_meta.labels, our_meta.labels),
        annotations: merge_maps(user_meta.annotations, our_meta.annotations),
        ..ObjectMeta::default()
    };
    let spec = match (ours.spec, user.spec.clone()) {
        (Some(ours), Some(theirs)) => Some(merge_pod_spec(ours, theirs)),
        (ours, theirs) => ours.or(theirs),
    };
    PodTemplateSpec {
        metadata: Some(metadata),
        spec,
    }
}

/// `base` with `winning` laid over it; `None` only when both are.
fn merge_maps(
    base: Option<BTreeMap<String, String>>,
    winning: Option<BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    match (base, winning) {
        (None, None) => None,
        (base, winning) => {
            let mut merged = base.unwrap_or_default();
            merged.extend(winning.unwrap_or_default());
            Some(merged)
        }
    }
}

/// The user's pod spec with our containers, volumes and pod-level settings merged in.
fn merge_pod_spec(ours: PodSpec, mut spec: PodSpec) -> PodSpec {
    // Our containers first (the runner is the pod's first container), then the user's.
    let mut user_containers = std::mem::take(&mut spec.containers);
    let mut containers: Vec<Container> = ours
        .containers
        .into_iter()
        .map(|c| {
            let theirs = take_named(&mut user_containers, &c.name);
            merge_container(c, theirs)
        })
        .collect();
    containers.extend(user_containers);
    spec.containers = containers;

    // The user's init containers run first; ours (dind, install-runner) right before the runner.
    let mut init_containers = spec.init_containers.take().unwrap_or_default();
    let ours_init: Vec<Container> = ours
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let theirs = take_named(&mut init_containers, &c.name);
            merge_container(c, theirs)
        })
        .collect();
    init_containers.extend(ours_init);
    spec.init_containers = (!init_containers.is_empty()).then_some(init_containers);

    let our_volumes = ours.volumes.unwrap_or_default();
    let mut volumes: Vec<_> = spec
        .volumes
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !our_volumes.iter().any(|o| o.name == v.name))
        .collect();
    volumes.extend(our_volumes);
    spec.volumes = Some(volumes);

    spec.restart_policy = ours.restart_policy;
    spec.automount_service_account_token = spec
        .automount_service_account_token
        .or(ours.automount_service_account_token);
    spec.enable_service_links = spec.enable_service_links.or(ours.enable_service_links);
    spec.security_context = match (spec.security_context, ours.security_context) {
        (Some(mut theirs), Some(ours)) => {
            // The credential files are group-readable: the pod needs an fsGroup.
            theirs.fs_group = theirs.fs_group.or(ours.fs_group);
            theirs.seccomp_profile = theirs.seccomp_profile.or(ours.seccomp_profile);
            Some(theirs)
        }
        (theirs, ours) => theirs.or(ours),
    };
    spec
}

/// Removes and returns the container named `name`.
fn take_named(containers: &mut Vec<Container>, name: &str) -> Option<Container> {
    let index = containers.iter().position(|c| c.name == name)?;
    Some(containers.remove(index))
}

/// Our container with the user's same-named one (if any) merged in.
fn merge_container(ours: Container, theirs: Option<Container>) -> Container {
    let Some(theirs) = theirs else {
        return ours;
    };
    let image = if ours.name == DIND_CONTAINER {
        theirs.image.clone().or(ours.image)
    } else {
        ours.image
    };
    let privileged = ours
        .security_context
        .as_ref()
        .and_then(|sc| sc.privileged)
        .filter(|p| *p);
    let mut security_context = theirs.security_context.clone().or(ours.security_context);
    if let (Some(sc), Some(privileged)) = (security_context.as_mut(), privileged) {
        sc.privileged = Some(privileged);
    }
    Container {
        name: ours.name,
        image,
        command: ours.command,
        args: ours.args,
        env: merge_env(ours.env, theirs.env.clone()),
        volume_mounts: merge_mounts(ours.volume_mounts, theirs.volume_mounts.clone()),
        working_dir: theirs.working_dir.clone().or(ours.working_dir),
        resources: theirs.resources.clone().or(ours.resources),
        security_context,
        restart_policy: ours.restart_policy,
        startup_probe: ours.startup_probe.or(theirs.startup_probe.clone()),
        ..theirs
    }
}

/// Ours first (so the user's may refer to them with `$(VAR)`), then theirs not named like ours.
fn merge_env(ours: Option<Vec<EnvVar>>, theirs: Option<Vec<EnvVar>>) -> Option<Vec<EnvVar>> {
    let ours = ours.unwrap_or_default();
    let mut env: Vec<EnvVar> = ours.clone();
    env.extend(
        theirs
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !ours.iter().any(|o| o.name == e.name)),
    );
    (!env.is_empty()).then_some(env)
}

/// Theirs not clashing with ours (by volume or path), then ours.
fn merge_mounts(
    ours: Option<Vec<VolumeMount>>,
    theirs: Option<Vec<VolumeMount>>,
) -> Option<Vec<VolumeMount>> {
    let ours = ours.unwrap_or_default();
    let mut mounts: Vec<VolumeMount> = theirs
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            !ours
                .iter()
                .any(|o| o.name == m.name || o.mount_path == m.mount_path)
        })
        .collect();
    mounts.extend(ours);
    (!mounts.is_empty()).then_some(mounts)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

    use super::*;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(format!("{name}-image")),
            ..Container::default()
        }
    }

    #[test]
    fn without_a_user_template_ours_is_kept() {
        let ours = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![container("runner")],
                ..PodSpec::default()
            }),
        };
        assert_eq!(merge_user_template(ours.clone(), None), ours);
    }

    #[test]
    fn dind_keeps_privileged_and_may_take_the_users_image() {
        let ours = Container {
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..SecurityContext::default()
            }),
            ..container(DIND_CONTAINER)
        };
        let theirs = Container {
            image: Some("mirror.example/docker:28-dind".into()),
            security_context: Some(SecurityContext {
                privileged: Some(false),
                run_as_user: Some(0),
                ..SecurityContext::default()
            }),
            ..container(DIND_CONTAINER)
        };
        let merged = merge_container(ours, Some(theirs));
        assert_eq!(
            merged.image.as_deref(),
            Some("mirror.example/docker:28-dind")
        );
        let sc = merged.security_context.unwrap();
        assert_eq!((sc.privileged, sc.run_as_user), (Some(true), Some(0)));
    }

    #[test]
    fn runner_image_and_command_are_ours_env_is_merged() {
        let ours = Container {
            command: Some(vec!["ours".into()]),
            env: Some(vec![EnvVar {
                name: "A".into(),
                value: Some("ours".into()),
                value_from: None,
            }]),
            ..container("runner")
        };
        let theirs = Container {
            image: Some("theirs".into()),
            command: Some(vec!["theirs".into()]),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("theirs".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "B".into(),
                    value: Some("theirs".into()),
                    value_from: None,
                },
            ]),
            ..container("runner")
        };
        let merged = merge_container(ours, Some(theirs));
        assert_eq!(merged.image.as_deref(), Some("runner-image"));
        assert_eq!(merged.command.unwrap(), ["ours"]);
        let env: Vec<_> = merged
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(
            env,
            [("A".into(), "ours".into()), ("B".into(), "theirs".into())]
        );
    }

    #[test]
    fn user_pod_security_context_gets_an_fs_group() {
        let ours = PodSpec {
            security_context: Some(PodSecurityContext {
                fs_group: Some(1000),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        };
        let theirs = PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        };
        let sc = merge_pod_spec(ours, theirs).security_context.unwrap();
        assert_eq!((sc.fs_group, sc.run_as_non_root), (Some(1000), Some(true)));
    }
}
