//! The one table of what the operator may do in the cluster.
//!
//! `cargo xtask gen-crds` renders it to `deploy/rbac/`, and the cluster tests run the operator
//! with exactly these grants, so a call missing here fails in tests, not in production.

/// Where a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantScope {
    /// Every namespace (a ClusterRole).
    Cluster,
    /// Only the operator's own namespace (a Role), e.g. for its leader-election Lease.
    OperatorNamespace,
}

/// One RBAC rule and why the operator needs it.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// API group (`""` for core).
    pub api_group: &'static str,
    /// Resources, with subresources as `resource/sub`.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Where it applies.
    pub scope: GrantScope,
    /// Why the operator needs it (rendered as a comment).
    pub why: &'static str,
}

/// The namespace `deploy/` installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "forgejo-runner-system";
/// The operator's ServiceAccount, and the name of its roles and bindings.
pub const OPERATOR_NAME: &str = "forgejo-runner-controller";

/// Everything the operator is allowed to do.
pub const OPERATOR_GRANTS: &[Grant] = &[
    Grant {
        api_group: api::GROUP,
        resources: &["runnerdeployments"],
        verbs: &["get", "list", "watch", "patch", "update"],
        scope: GrantScope::Cluster,
        why: "watch pools; add and remove the cleanup finalizer",
    },
    Grant {
        api_group: api::GROUP,
        resources: &["runnerdeployments/status"],
        verbs: &["get", "patch", "update"],
        scope: GrantScope::Cluster,
        why: "server-side-apply the status",
    },
    Grant {
        api_group: api::GROUP,
        resources: &["runnerdeployments/finalizers"],
        verbs: &["update"],
        scope: GrantScope::Cluster,
        why: "set blockOwnerDeletion on owner references to a pool",
    },
    Grant {
        api_group: "batch",
        resources: &["jobs"],
        verbs: &["get", "list", "watch", "create", "delete"],
        scope: GrantScope::Cluster,
        why: "create one runner Job per waiting Forgejo job; delete the ones left behind",
    },
    Grant {
        api_group: "batch",
        resources: &["jobs/finalizers"],
        verbs: &["update"],
        scope: GrantScope::Cluster,
        why: "set blockOwnerDeletion on the runner Secret's owner reference to its Job",
    },
    Grant {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "delete"],
        scope: GrantScope::Cluster,
        why: "read the Forgejo token Secret; create and delete each runner's credential Secret",
    },
    Grant {
        api_group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: GrantScope::Cluster,
        why: "run each pool's managed cache server (spec.cache), owned by the pool",
    },
    Grant {
        api_group: "",
        resources: &["services", "persistentvolumeclaims", "configmaps"],
        verbs: &["get", "create", "patch", "delete"],
        scope: GrantScope::Cluster,
        why: "the cache server's Service and volume, and the runner config pointing at it",
    },
    Grant {
        api_group: "",
        resources: &["pods"],
        verbs: &["get", "list", "watch"],
        scope: GrantScope::Cluster,
        why: "see runner pods that cannot start (image pull errors, unschedulable)",
    },
    Grant {
        api_group: "",
        resources: &["events"],
        verbs: &["list"],
        scope: GrantScope::Cluster,
        why: "read why Kubernetes made no pod for a runner Job (its FailedCreate events)",
    },
    Grant {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        scope: GrantScope::Cluster,
        why: "publish events on pools",
    },
    Grant {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "list", "watch", "create", "update", "patch"],
        scope: GrantScope::OperatorNamespace,
        why: "leader election, so that one replica schedules",
    },
];
