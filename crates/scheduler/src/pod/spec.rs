//! The pod of a runner Job: its volumes, credentials, the runner container of each mode and
//! the docker-in-docker sidecar, before the user's `jobTemplate` is merged in.

use super::*;

/// The controller's own pod spec, before the user's template is merged in.
pub(super) fn pod_spec(
    pool: &Pool,
    mode: &PodMode,
    runner_name: &str,
    declared: &[String],
    fetch: Fetch<'_>,
    path: RunnerPath,
) -> PodSpec {
    let binary = match mode {
        PodMode::Kubernetes { .. } => COPIED_RUNNER_BINARY,
        PodMode::Host | PodMode::Docker => RUNNER_BINARY,
    };
    let fetch = match path {
        RunnerPath::Ephemeral => fetch,
        // The legacy script runs `one-job --wait` with the runner's own defaults.
        RunnerPath::Legacy => Fetch::default(),
    };
    let (command, mut args) =
        runner_command(binary, &pool.server, runner_name, declared, fetch, path);
    if pool.cache.is_some() {
        // `-c` is global: before the command (`one-job`), or the legacy script's `$5`.
        match path {
            RunnerPath::Ephemeral => {
                args.splice(0..0, ["-c".to_owned(), CONFIG_FILE.to_owned()]);
            }
            RunnerPath::Legacy => args.push(CONFIG_FILE.to_owned()),
        }
    }

    // forgejo-runner writes its caches under $HOME: a job image's own HOME may not be
    // writable (or may be the image's user's), so point it at the pod's data volume.
    let mut env = vec![plain_env("HOME", DATA_DIR)];
    if path == RunnerPath::Ephemeral {
        env.push(EnvVar {
            name: UUID_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: runner_name.to_owned(),
                    key: UUID_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let mounts = vec![
        mount(DATA_VOLUME, DATA_DIR, false),
        mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR, true),
    ];
    let credentials_key = match path {
        RunnerPath::Ephemeral => TOKEN_KEY,
        RunnerPath::Legacy => REGISTRATION_TOKEN_KEY,
    };
    let volumes = vec![
        empty_dir(DATA_VOLUME),
        secret_file_volume(
            CREDENTIALS_VOLUME,
            runner_name,
            credentials_key,
            credentials_key,
            CREDENTIALS_MODE,
        ),
    ];
    let mut parts = PodParts {
        env,
        mounts,
        volumes,
        init_containers: Vec::new(),
    };
    if let Some(cache) = &pool.cache {
        mount_cache(cache, mode, &mut parts);
    }
    let runner = runner_for_mode(pool, mode, &mut parts);
    let PodParts {
        env,
        mounts,
        volumes,
        init_containers,
    } = parts;
    let runner = Container {
        name: RUNNER_CONTAINER.to_owned(),
        command: Some(command),
        args: Some(args),
        env: Some(env),
        working_dir: Some(DATA_DIR.to_owned()),
        volume_mounts: Some(mounts),
        ..runner
    };

    PodSpec {
        containers: vec![runner],
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        volumes: Some(volumes),
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        ..PodSpec::default()
    }
}

/// The pod level of every pod the controller makes: files of group [`RUNNER_UID`], seccomp
/// `RuntimeDefault`.
pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        fs_group: Some(RUNNER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The privileged Docker daemon, as a native sidecar: it is up (its TLS port open) before
/// the runner starts, and it stops when the runner exits, so the Job can complete.
fn dind_sidecar() -> Container {
    Container {
        name: DIND_CONTAINER.to_owned(),
        image: Some(DIND_IMAGE.to_owned()),
        restart_policy: Some("Always".to_owned()),
        env: Some(vec![plain_env("DOCKER_TLS_CERTDIR", DOCKER_CERTS_DIR)]),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(2376),
                host: None,
            }),
            period_seconds: Some(1),
            failure_threshold: Some(120),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            mount(DOCKER_CERTS_VOLUME, DOCKER_CERTS_DIR, false),
            mount(DOCKER_DATA_VOLUME, "/var/lib/docker", false),
        ]),
        resources: Some(resources(("250m", "256Mi"), ("2", "4Gi"))),
        ..Container::default()
    }
}

/// Non-root, no privilege escalation, no capabilities.
pub(crate) fn runner_security_context(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: read_only_root.then_some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// CPU and memory requests and limits, each as (cpu, memory).
fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(pair(limits)),
        ..ResourceRequirements::default()
    }
}

/// A mount of `volume` at `path`.
fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// An `emptyDir` volume.
fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// An environment variable with a literal value.
fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// The runner container of a mode (before its command, env and mounts are set), and what
/// the mode adds to the pod: env, mounts, volumes, init containers.
fn runner_for_mode(pool: &Pool, mode: &PodMode, pod: &mut PodParts) -> Container {
    let PodParts {
        env,
        mounts,
        volumes,
        init_containers,
    } = pod;
    match mode {
        PodMode::Host => Container {
            image: Some(pool.runner_image.clone()),
            resources: Some(resources(("250m", "256Mi"), ("2", "4Gi"))),
            security_context: Some(runner_security_context(false)),
            ..Container::default()
        },
        PodMode::Docker => {
            env.extend([
                plain_env("DOCKER_HOST", "tcp://localhost:2376"),
                plain_env("DOCKER_TLS_VERIFY", "1"),
                plain_env("DOCKER_CERT_PATH", "/certs/client"),
            ]);
            mounts.push(mount(DOCKER_CERTS_VOLUME, DOCKER_CERTS_DIR, true));
            volumes.push(empty_dir(DOCKER_CERTS_VOLUME));
            volumes.push(empty_dir(DOCKER_DATA_VOLUME));
            let mut dind = dind_sidecar();
            if pool.cache.is_some() {
                // Step containers reach the runner's cache proxy at the bridge's address,
                // which `cache.host` names: pin it rather than let dockerd pick a free range.
                dind.args = Some(vec![format!("--bip={DIND_BRIDGE_CIDR}")]);
            }
            init_containers.push(dind);
            Container {
                image: Some(pool.runner_image.clone()),
                resources: Some(resources(("100m", "128Mi"), ("1", "1Gi"))),
                security_context: Some(runner_security_context(false)),
                ..Container::default()
            }
        }
        PodMode::Kubernetes { image } => {
            mounts.push(mount(RUNNER_BIN_VOLUME, COPIED_RUNNER_DIR, true));
            volumes.push(empty_dir(RUNNER_BIN_VOLUME));
            init_containers.push(Container {
                name: INSTALL_RUNNER_CONTAINER.to_owned(),
                image: Some(pool.runner_image.clone()),
                command: Some(vec![
                    "cp".to_owned(),
                    RUNNER_BINARY.to_owned(),
                    COPIED_RUNNER_BINARY.to_owned(),
                ]),
                volume_mounts: Some(vec![mount(RUNNER_BIN_VOLUME, COPIED_RUNNER_DIR, false)]),
                resources: Some(resources(("10m", "32Mi"), ("500m", "128Mi"))),
                security_context: Some(runner_security_context(true)),
                ..Container::default()
            });
            // The label's image runs as the user it was built for: many job images need
            // root to install packages. A `runner` container in jobTemplate can restrict it.
            Container {
                image: Some(image.clone()),
                resources: Some(resources(("250m", "256Mi"), ("2", "4Gi"))),
                ..Container::default()
            }
        }
    }
}

/// Mounts the forgejo-runner config (docker mode's names the dind bridge as the proxy's
/// host) and the cache's HMAC secret into the runner container.
fn mount_cache(cache: &RunnerCache, mode: &PodMode, pod: &mut PodParts) {
    let key = match mode {
        PodMode::Docker => DOCKER_RUNNER_CONFIG_KEY,
        PodMode::Host | PodMode::Kubernetes { .. } => RUNNER_CONFIG_KEY,
    };
    pod.mounts.push(mount(CONFIG_VOLUME, CONFIG_DIR, true));
    pod.mounts
        .push(mount(CACHE_SECRET_VOLUME, CACHE_SECRET_DIR, true));
    pod.volumes.push(config_volume(&cache.config_map, key));
    pod.volumes
        .push(secret_volume(&cache.secret_name, &cache.secret_key));
}

/// What the modes add to a runner pod besides its runner container.
struct PodParts {
    /// Environment of the runner container.
    env: Vec<EnvVar>,
    /// Mounts of the runner container.
    mounts: Vec<VolumeMount>,
    /// Volumes of the pod.
    volumes: Vec<Volume>,
    /// Init containers and sidecars.
    init_containers: Vec<Container>,
}
