//! The typed view of `spec.labels`: runner labels `name[:scheme[:arg]]`, comma-separated.
//!
//! The name filters Forgejo jobs (`runs_on` holds bare names); the scheme says how the pod
//! runs the job's steps. Forgejo's own schemes are `docker` and `host`; `kubernetes` is ours:
//! the pod's main container is the label's image and the runner inside it uses `name:host`.

use std::fmt;

/// The image forgejo-runner uses for a `docker` label without one.
pub const DEFAULT_DOCKER_IMAGE: &str = "node:22-bookworm";

/// The regular expression the CRD schema checks `spec.labels` against; the parser below is
/// the same grammar, so the apiserver and the controller never disagree.
pub const LABELS_PATTERN: &str = r"^\s*[A-Za-z0-9._-]+(:docker(://[^,\s]+)?|:host|:kubernetes://[^,\s]+)?(\s*,\s*[A-Za-z0-9._-]+(:docker(://[^,\s]+)?|:host|:kubernetes://[^,\s]+)?)*\s*$";

/// How a pod runs the steps of a job that ran on a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelScheme {
    /// Steps run in containers of `image` through a Docker daemon (a `docker:dind` sidecar).
    Docker {
        /// The image the steps run in.
        image: String,
    },
    /// Steps run in the runner's own container.
    Host,
    /// Steps run in the pod's main container, which is `image`; the runner is copied in.
    Kubernetes {
        /// The image of the pod's main container.
        image: String,
    },
}

/// One parsed runner label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunnerLabel {
    /// The label name Forgejo matches against a job's `runs_on`.
    pub name: String,
    /// How jobs on this label run.
    pub scheme: LabelScheme,
}

/// Why `spec.labels` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No label at all.
    #[error("spec.labels is empty: give at least one runner label, e.g. docker")]
    Empty,
    /// An entry between commas is empty.
    #[error("spec.labels has an empty entry (check for a stray comma)")]
    EmptyEntry,
    /// The name part has characters Forgejo label names do not use.
    #[error("spec.labels entry {entry:?}: the name must be letters, digits, '.', '_' or '-'")]
    BadName {
        /// The offending entry.
        entry: String,
    },
    /// The scheme is not one this controller can run.
    #[error(
        "spec.labels entry {entry:?}: unknown scheme {scheme:?}; use docker, host or kubernetes"
    )]
    UnknownScheme {
        /// The offending entry.
        entry: String,
        /// The scheme given.
        scheme: String,
    },
    /// The scheme's argument is missing or malformed.
    #[error("spec.labels entry {entry:?}: {problem}")]
    BadArgument {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The same name appears twice.
    #[error("spec.labels names {name:?} twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
}

/// Whether a job with `runs_on` runs on a runner with `labels`: Forgejo's `ItRunsOn`, i.e.
/// every entry of a non-empty `runs_on` is among the labels. The scheduler applies it once
/// per reconcile, to the whole listing of the pool's scope.
pub fn runs_on_labels<'a>(runs_on: &[String], labels: impl IntoIterator<Item = &'a str>) -> bool {
    let labels: Vec<&str> = labels.into_iter().collect();
    !runs_on.is_empty() && runs_on.iter().all(|l| labels.contains(&l.as_str()))
}

/// Parses `spec.labels` (`name[:scheme[:arg]]`, comma-separated) into typed labels.
pub fn parse_labels(text: &str) -> Result<Vec<RunnerLabel>, LabelError> {
    if text.trim().is_empty() {
        return Err(LabelError::Empty);
    }
    let mut labels: Vec<RunnerLabel> = Vec::new();
    for entry in text.split(',') {
        let label = RunnerLabel::parse(entry.trim())?;
        if labels.iter().any(|l| l.name == label.name) {
            return Err(LabelError::Duplicate { name: label.name });
        }
        labels.push(label);
    }
    Ok(labels)
}

impl RunnerLabel {
    /// Parses one entry `name[:scheme[:arg]]`.
    pub fn parse(entry: &str) -> Result<Self, LabelError> {
        if entry.is_empty() {
            return Err(LabelError::EmptyEntry);
        }
        let mut parts = entry.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(LabelError::BadName {
                entry: entry.to_owned(),
            });
        }
        let scheme = match (parts.next(), parts.next()) {
            (None, _) | (Some("docker"), None) => LabelScheme::Docker {
                image: DEFAULT_DOCKER_IMAGE.to_owned(),
            },
            (Some("docker"), Some(arg)) => LabelScheme::Docker {
                image: image_of(entry, arg)?,
            },
            (Some("host"), None) => LabelScheme::Host,
            (Some("host"), Some(_)) => {
                return Err(LabelError::BadArgument {
                    entry: entry.to_owned(),
                    problem: "the host scheme takes no argument",
                });
            }
            (Some("kubernetes"), Some(arg)) => LabelScheme::Kubernetes {
                image: image_of(entry, arg)?,
            },
            (Some("kubernetes"), None) => {
                return Err(LabelError::BadArgument {
                    entry: entry.to_owned(),
                    problem: "the kubernetes scheme needs an image, e.g. kubernetes://node:22",
                });
            }
            (Some(scheme), _) => {
                return Err(LabelError::UnknownScheme {
                    entry: entry.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            scheme,
        })
    }

    /// The label as forgejo-runner must declare it inside the pod: `kubernetes` labels run as
    /// `host`, because the pod's main container already is the job's image.
    pub fn runner_label(&self) -> String {
        match &self.scheme {
            LabelScheme::Docker { image } => format!("{}:docker://{image}", self.name),
            LabelScheme::Host | LabelScheme::Kubernetes { .. } => format!("{}:host", self.name),
        }
    }
}

fn image_of(entry: &str, arg: &str) -> Result<String, LabelError> {
    match arg.strip_prefix("//") {
        Some(image) if !image.is_empty() && !image.contains(char::is_whitespace) => {
            Ok(image.to_owned())
        }
        _ => Err(LabelError::BadArgument {
            entry: entry.to_owned(),
            problem: "the image must be written //image, e.g. docker://node:22-bookworm",
        }),
    }
}

impl fmt::Display for RunnerLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            LabelScheme::Docker { image } => write!(f, "{}:docker://{image}", self.name),
            LabelScheme::Host => write!(f, "{}:host", self.name),
            LabelScheme::Kubernetes { image } => write!(f, "{}:kubernetes://{image}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(name: &str, image: &str) -> RunnerLabel {
        RunnerLabel {
            name: name.into(),
            scheme: LabelScheme::Docker {
                image: image.into(),
            },
        }
    }

    #[test]
    fn bare_name_means_docker_with_the_default_image() {
        assert_eq!(
            parse_labels("docker"),
            Ok(vec![docker("docker", DEFAULT_DOCKER_IMAGE)])
        );
    }

    #[test]
    fn docker_scheme_keeps_an_image_with_a_tag_colon() {
        let labels = parse_labels("ubuntu-22.04:docker://node:20-bullseye").unwrap();
        assert_eq!(labels, vec![docker("ubuntu-22.04", "node:20-bullseye")]);
        assert_eq!(
            labels[0].runner_label(),
            "ubuntu-22.04:docker://node:20-bullseye"
        );
    }

    #[test]
    fn host_scheme_parses_and_round_trips() {
        let labels = parse_labels("x:host").unwrap();
        assert_eq!(
            labels,
            vec![RunnerLabel {
                name: "x".into(),
                scheme: LabelScheme::Host
            }]
        );
        assert_eq!(labels[0].to_string(), "x:host");
        assert_eq!(labels[0].runner_label(), "x:host");
    }

    #[test]
    fn kubernetes_scheme_runs_as_host_inside_the_pod() {
        let labels = parse_labels("node:kubernetes://node:22-bookworm").unwrap();
        assert_eq!(
            labels[0].scheme,
            LabelScheme::Kubernetes {
                image: "node:22-bookworm".into()
            }
        );
        assert_eq!(labels[0].runner_label(), "node:host");
    }

    #[test]
    fn several_labels_with_spaces() {
        let labels = parse_labels(" docker , x:host,k:kubernetes://alpine:3 ").unwrap();
        let names: Vec<_> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["docker", "x", "k"]);
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry_named() {
        assert_eq!(parse_labels(""), Err(LabelError::Empty));
        assert_eq!(parse_labels("  "), Err(LabelError::Empty));
        assert_eq!(parse_labels("a,,b"), Err(LabelError::EmptyEntry));
        assert_eq!(parse_labels("a,"), Err(LabelError::EmptyEntry));
        assert!(matches!(
            parse_labels("bad name"),
            Err(LabelError::BadName { .. })
        ));
        assert!(matches!(
            parse_labels(":host"),
            Err(LabelError::BadName { .. })
        ));
        assert!(matches!(
            parse_labels("a:lxc://debian"),
            Err(LabelError::UnknownScheme { .. })
        ));
        assert!(matches!(
            parse_labels("a:docker:node"),
            Err(LabelError::BadArgument { .. })
        ));
        assert!(matches!(
            parse_labels("a:host:x"),
            Err(LabelError::BadArgument { .. })
        ));
        assert!(matches!(
            parse_labels("a:kubernetes"),
            Err(LabelError::BadArgument { .. })
        ));
        assert_eq!(
            parse_labels("a,a:host"),
            Err(LabelError::Duplicate { name: "a".into() })
        );
        let message = parse_labels("a:lxc://debian").unwrap_err().to_string();
        assert!(message.contains("spec.labels") && message.contains("a:lxc://debian"));
    }
}
