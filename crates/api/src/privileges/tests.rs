use serde_json::{Value, json};

use super::*;

fn check(template: Value) -> Result<(), SpecError> {
    let template: PodTemplateSpec = serde_json::from_value(template).unwrap();
    check_pod_template(&template, PodPrivileges::Baseline)
}

#[test]
fn replacing_the_dind_sidecars_image_is_refused_but_tuning_it_is_not() {
    let field = refused(json!({"spec": {"containers": [
        {"name": "runner"},
        {"name": "dind", "image": "anything:latest"},
    ]}}));
    assert_eq!(field, "spec.jobTemplate.spec.containers[1].image");
    assert_eq!(
        check(json!({"spec": {"containers": [
            {"name": "dind", "resources": {"limits": {"memory": "2Gi"}}},
        ]}})),
        Ok(())
    );
}

/// The refused field, after checking the message says how to allow it.
fn refused(template: Value) -> String {
    let parsed: PodTemplateSpec = serde_json::from_value(template.clone()).unwrap();
    assert_eq!(
        check_pod_template(&parsed, PodPrivileges::Privileged),
        Ok(()),
        "the privileged policy allows everything"
    );
    let error = check(template).expect_err("refused");
    assert_eq!(error.reason(), "PrivilegedTemplate");
    let message = error.to_string();
    assert!(message.contains(ALLOW_PRIVILEGED_FLAG), "{message}");
    match error {
        SpecError::PrivilegedTemplate { field, .. } => {
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
            field
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn container(security_context: Value) -> Value {
    json!({"name": "build", "image": "alpine", "securityContext": security_context})
}

#[test]
fn allows_ordinary_templates() {
    let allowed = [
        json!({}),
        json!({"metadata": {"labels": {"team": "ci"}}}),
        json!({"spec": {"containers": []}}),
        json!({"spec": {
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
            "tolerations": [{"key": "ci", "operator": "Exists"}],
            "containers": [{
                "name": "runner",
                "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                "env": [{"name": "A", "value": "b"}],
                "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 0}],
                "securityContext": {
                    "privileged": false,
                    "allowPrivilegeEscalation": false,
                    "runAsNonRoot": true,
                    "capabilities": {"add": ["NET_BIND_SERVICE", "cap_chown", "SYS_CHROOT"],
                                     "drop": ["ALL"]}
                }
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "hostPID": false, "hostNetwork": false, "hostIPC": false
        }}),
        json!({"spec": {"serviceAccountName": "default"}}),
        json!({"spec": {"serviceAccountName": "default", "automountServiceAccountToken": true}}),
        json!({"spec": {"serviceAccountName": "", "automountServiceAccountToken": true}}),
        json!({"spec": {"automountServiceAccountToken": true}}),
        json!({"spec": {"serviceAccountName": "ci", "automountServiceAccountToken": false}}),
        json!({"spec": {"serviceAccount": "ci", "automountServiceAccountToken": false}}),
        json!({"spec": {"volumes": [{"name": "t", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "vault"}}
        ]}}]}}),
    ];
    for template in allowed {
        assert_eq!(check(template.clone()), Ok(()), "{template}");
    }
}

#[test]
fn refuses_privileged_containers_of_every_kind() {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let template = json!({"spec": {list: [
            container(json!({})),
            container(json!({"privileged": true})),
        ]}});
        assert_eq!(
            refused(template),
            format!("spec.jobTemplate.spec.{list}[1].securityContext.privileged")
        );
    }
}

#[test]
fn refuses_privilege_escalation() {
    let template = json!({"spec": {"containers": [
        container(json!({"allowPrivilegeEscalation": true}))
    ]}});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.containers[0].securityContext.allowPrivilegeEscalation"
    );
}

#[test]
fn refuses_capabilities_beyond_baseline() {
    for capability in [
        "SYS_ADMIN",
        "CAP_SYS_ADMIN",
        "sys_admin",
        "NET_ADMIN",
        "ALL",
    ] {
        let template = json!({"spec": {"initContainers": [
            container(json!({"capabilities": {"add": ["CHOWN", capability]}}))
        ]}});
        assert_eq!(
            refused(template),
            "spec.jobTemplate.spec.initContainers[0].securityContext.capabilities.add[1]",
            "{capability}"
        );
    }
}

#[test]
fn refuses_host_namespaces() {
    for field in ["hostPID", "hostNetwork", "hostIPC"] {
        let template = json!({"spec": {field: true}});
        assert_eq!(refused(template), format!("spec.jobTemplate.spec.{field}"));
    }
}

#[test]
fn refuses_host_path_volumes() {
    let template = json!({"spec": {"volumes": [
        {"name": "cache", "emptyDir": {}},
        {"name": "root", "hostPath": {"path": "/"}}
    ]}});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.volumes[1].hostPath"
    );
}

#[test]
fn refuses_host_ports() {
    let template = json!({"spec": {"containers": [
        {"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 80, "hostPort": 80}]}
    ]}});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.containers[0].ports[1].hostPort"
    );
}

#[test]
fn refuses_windows_host_processes() {
    let template = json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": true}}}});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.securityContext.windowsOptions.hostProcess"
    );
    let template = json!({"spec": {"containers": [
        container(json!({"windowsOptions": {"hostProcess": true}}))
    ]}});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.containers[0].securityContext.windowsOptions.hostProcess"
    );
}

#[test]
fn refuses_other_service_accounts_with_a_token() {
    for automount in [json!(null), json!(true)] {
        let mut template = json!({"spec": {"serviceAccountName": "cluster-admin"}});
        if !automount.is_null() {
            template["spec"]["automountServiceAccountToken"] = automount;
        }
        assert_eq!(
            refused(template),
            "spec.jobTemplate.spec.serviceAccountName"
        );
    }
    let template = json!({"spec": {"serviceAccount": "ci"}});
    assert_eq!(refused(template), "spec.jobTemplate.spec.serviceAccount");
    // Not mounted, but projected by hand.
    let template = json!({"spec": {
        "serviceAccountName": "ci",
        "automountServiceAccountToken": false,
        "volumes": [{"name": "t", "projected": {"sources": [
            {"configMap": {"name": "ca"}},
            {"serviceAccountToken": {"path": "token"}}
        ]}}]
    }});
    assert_eq!(
        refused(template),
        "spec.jobTemplate.spec.volumes[0].projected.sources[1].serviceAccountToken"
    );
}

#[test]
fn the_message_names_field_problem_and_flag() {
    let template = json!({"spec": {"containers": [container(json!({"privileged": true}))]}});
    let message = check(template).unwrap_err().to_string();
    assert_eq!(
        message,
        "spec.jobTemplate.spec.containers[0].securityContext.privileged: container \"build\" \
         is privileged; runner pod templates may not ask for host privileges unless the \
         operator is started with --allow-privileged-runners"
    );
}
