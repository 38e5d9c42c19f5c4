//! The README's example parses and round-trips, defaults apply, and the generated CRD carries
//! the status subresource, printer columns and every validation rule the schema promises.

use api::{CacheMode, LabelScheme, RunnerDeployment, RunnerDeploymentSpec, Scope};
use kube::CustomResourceExt as _;
use serde_json::Value;

/// The first YAML document of kind RunnerDeployment in the README.
fn readme_example() -> String {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```yaml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: RunnerDeployment"))
        .expect("README has a yaml block with a RunnerDeployment");
    block
        .split("\n---\n")
        .find(|doc| doc.contains("kind: RunnerDeployment"))
        .expect("the block has a RunnerDeployment document")
        .to_owned()
}

#[test]
fn readme_example_round_trips_through_serde() {
    let text = readme_example();
    let rd: RunnerDeployment = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rd.spec.organization.as_deref(), Some("faro"));
    assert_eq!(rd.spec.max_runners, 4);
    assert!(rd.spec.job_template.is_some());
    rd.spec.validate().unwrap();

    let back: RunnerDeployment =
        serde_yaml::from_str(&serde_yaml::to_string(&rd).unwrap()).unwrap();
    assert_eq!(back, rd);
    // Nothing the user wrote is lost.
    let original: Value = serde_yaml::from_str(&text).unwrap();
    let written = serde_json::to_value(&rd).unwrap();
    for key in original["spec"].as_object().unwrap().keys() {
        assert_eq!(original["spec"][key], written["spec"][key], "spec.{key}");
    }
    let labels = rd.spec.runner_labels().unwrap();
    assert_eq!(labels.len(), 3);
    assert_eq!(
        labels[1].scheme,
        LabelScheme::Kubernetes {
            image: "ubuntu:22.04".into()
        }
    );
    assert_eq!(rd.spec.scope().unwrap(), Scope::Organization("faro".into()));
    let template = rd.spec.job_template.unwrap().pod_template().unwrap();
    assert!(template.spec.unwrap().node_selector.is_some());
}

#[test]
fn defaults_fill_optional_fields() {
    let spec: RunnerDeploymentSpec = serde_json::from_value(serde_json::json!({
        "forgejoServer": "https://code.example.com",
        "repository": "faro/app",
        "labels": "docker",
        "tokenSecretRef": {"name": "t"}
    }))
    .unwrap();
    assert_eq!(spec.poll_interval, "10s");
    assert_eq!(
        spec.poll_interval().unwrap(),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(spec.token_secret_ref.key, "token");
    assert_eq!(spec.max_runners, 10);
    assert_eq!(spec.runner_image, api::DEFAULT_RUNNER_IMAGE);
    assert_eq!(spec.ttl_seconds_after_finished, 300);
    assert_eq!(spec.active_deadline_seconds, 10800);
    assert_eq!(
        spec.scope().unwrap(),
        Scope::Repository {
            owner: "faro".into(),
            repo: "app".into()
        }
    );
}

#[test]
fn the_default_cache_mode_is_managed_only_with_the_default_image() {
    let mode = |runner_image: Option<&str>, cache: Value| {
        let mut value = serde_json::json!({
            "forgejoServer": "https://code.example.com",
            "organization": "faro",
            "labels": "docker",
            "tokenSecretRef": {"name": "t"},
            "cache": cache
        });
        if let Some(image) = runner_image {
            value["runnerImage"] = image.into();
        }
        serde_json::from_value::<RunnerDeploymentSpec>(value)
            .unwrap()
            .cache_mode()
    };
    let other = Some("registry.example/runner:1");
    assert_eq!(mode(None, Value::Null), CacheMode::Managed);
    assert_eq!(mode(other, Value::Null), CacheMode::Disabled);
    let managed = serde_json::json!({"mode": "Managed"});
    assert_eq!(mode(other, managed), CacheMode::Managed);
}

fn spec_with(change: impl FnOnce(&mut Value)) -> Result<(), api::SpecError> {
    let mut value = serde_json::json!({
        "forgejoServer": "https://code.example.com",
        "organization": "faro",
        "labels": "docker",
        "tokenSecretRef": {"name": "t"}
    });
    change(&mut value);
    let spec: RunnerDeploymentSpec = serde_json::from_value(value).unwrap();
    spec.validate()
}

#[test]
fn validate_refuses_what_the_schema_refuses() {
    assert!(spec_with(|_| {}).is_ok());
    assert!(spec_with(|v| v["forgejoServer"] = "ftp://x".into()).is_err());
    assert!(spec_with(|v| v["forgejoServer"] = "https://".into()).is_err());
    assert!(spec_with(|v| v["labels"] = "".into()).is_err());
    assert!(spec_with(|v| v["labels"] = "a b".into()).is_err());
    assert!(spec_with(|v| v["repository"] = "o/r".into()).is_err());
    assert!(
        spec_with(|v| {
            v.as_object_mut().unwrap().remove("organization");
        })
        .is_err()
    );
    assert!(spec_with(|v| v["pollInterval"] = "500ms".into()).is_err());
    assert!(spec_with(|v| v["pollInterval"] = "2h".into()).is_err());
    assert!(spec_with(|v| v["maxRunners"] = 0.into()).is_err());
    assert!(
        spec_with(|v| v["jobTemplate"] = serde_json::json!({"spec": {"containers": 3}})).is_err()
    );
}

/// A spec serving `scope` (a one-entry object such as `{"repository": "faro/app"}`).
fn spec_with_scope(scope: Value) -> Result<(), api::SpecError> {
    spec_with(|v| {
        v.as_object_mut().unwrap().remove("organization");
        v.as_object_mut()
            .unwrap()
            .extend(scope.as_object().unwrap().clone());
    })
}

#[test]
fn validate_refuses_names_that_would_change_the_request_path() {
    use api::SpecError;
    use serde_json::json;
    let error = spec_with_scope(json!({"repository": "../admin"})).unwrap_err();
    assert_eq!(error, SpecError::Repository("../admin".into()));
    assert_eq!(error.reason(), "InvalidSpec");
    assert!(
        error
            .to_string()
            .starts_with(r#"spec.repository: "../admin" is not owner/name: "#),
        "{error}"
    );
    for repository in [
        "faro/..",
        "faro/.",
        "faro/app/issues",
        "faro/app?x=1",
        "faro/app#x",
        "faro/app%2f..",
        "fa ro/app",
        "faro/app.git",
        "-faro/app",
    ] {
        assert_eq!(
            spec_with_scope(json!({"repository": repository})),
            Err(SpecError::Repository(repository.into())),
            "{repository}"
        );
    }
    for name in [
        "..", "../admin", "faro/x", "faro?", "-faro", "fa--ro", "faro.",
    ] {
        assert_eq!(
            spec_with_scope(json!({"organization": name})),
            Err(SpecError::Organization(name.into())),
            "{name}"
        );
        assert_eq!(
            spec_with_scope(json!({"user": name})),
            Err(SpecError::User(name.into())),
            "{name}"
        );
    }
    let error = spec_with_scope(json!({"organization": "../admin"})).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(r#"spec.organization: "../admin" is not a Forgejo organization name"#),
        "{error}"
    );
    for name in ["../t", "T", "t_1", "t.", ""] {
        let error = spec_with(|v| v["tokenSecretRef"]["name"] = name.into()).unwrap_err();
        assert_eq!(error, SpecError::TokenSecretName(name.into()));
        assert!(
            error.to_string().starts_with("spec.tokenSecretRef.name: "),
            "{error}"
        );
    }
    for key in ["..", "../token", "a/b", ""] {
        let error = spec_with(|v| v["tokenSecretRef"]["key"] = key.into()).unwrap_err();
        assert_eq!(error, SpecError::TokenSecretKey(key.into()));
        assert!(
            error.to_string().starts_with("spec.tokenSecretRef.key: "),
            "{error}"
        );
    }
    // What Forgejo and Kubernetes accept still passes.
    for repository in ["faro/app", "Fa.ro_1/my-app.v2", "a/c++", "a-b/.profile"] {
        assert_eq!(spec_with_scope(json!({"repository": repository})), Ok(()));
    }
    assert_eq!(spec_with_scope(json!({"user": "ana.b_c-d"})), Ok(()));
    assert_eq!(
        spec_with(|v| v["tokenSecretRef"] = json!({"name": "forgejo.token-1", "key": ".tok_en-1"})),
        Ok(())
    );
}

fn crd() -> Value {
    serde_json::to_value(RunnerDeployment::crd()).unwrap()
}

fn spec_schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn crd_has_status_subresource_short_name_and_printer_columns() {
    let crd = crd();
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "rd");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Server",
            "Scope",
            "Labels",
            "Waiting",
            "Oldest Wait",
            "Active",
            "Warm Idle",
            "Warm Busy",
            "Last Poll",
            "Ready",
            "Age"
        ]
    );
}

#[test]
fn crd_schema_carries_every_validation_rule() {
    let spec = spec_schema();
    let props = &spec["properties"];
    assert!(rules(&props["forgejoServer"])[0].contains("https?://"));
    assert_eq!(props["labels"]["minLength"], 1);
    assert!(rules(&props["labels"])[0].contains("docker"));
    assert!(rules(&spec)[0].contains("exists_one"));
    assert!(rules(&props["pollInterval"])[0].contains("duration('1s')"));
    assert!(rules(&props["pollInterval"])[0].contains("duration('1h')"));
    assert_eq!(props["pollInterval"]["default"], "10s");
    assert_eq!(props["maxRunners"]["minimum"], 1.0);
    assert_eq!(
        props["jobTemplate"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    let status = &crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(
        status["properties"]["conditions"]["x-kubernetes-list-type"],
        "map"
    );
}

#[test]
fn schema_label_pattern_and_parser_accept_the_same_entries() {
    // The CEL rule's regex (RE2 in the apiserver) and parse_labels are two writings of one
    // grammar; the regex crate's syntax matches RE2 for this pattern.
    let pattern = regex::Regex::new(api::LABELS_PATTERN).unwrap();
    let cases = [
        "docker",
        "ubuntu-22.04:docker://node:20-bullseye",
        "x:host",
        "k:kubernetes://alpine:3",
        " a , b:host ",
        "a:docker",
        "",
        "a b",
        "a:lxc://x",
        "a:kubernetes",
        "a,,b",
        "a,",
        ":host",
        "a:host:x",
        "a:docker:node",
        "a:docker://",
    ];
    for case in cases {
        assert_eq!(
            pattern.is_match(case),
            api::parse_labels(case).is_ok(),
            "pattern and parser disagree on {case:?}"
        );
    }
}

/// The CEL rules of a field, as `(negated, regex)`: each rule must be `self.matches('…')` or
/// `!self.matches('…')`, which is all these fields use; the regex crate reads RE2 syntax.
fn match_rules(node: &Value) -> Vec<(bool, regex::Regex)> {
    rules(node)
        .iter()
        .map(|rule| {
            let (negated, rest) = match rule.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, rule.as_str()),
            };
            let pattern = rest
                .strip_prefix("self.matches('")
                .and_then(|r| r.strip_suffix("')"))
                .unwrap_or_else(|| panic!("not a plain matches rule: {rule}"));
            assert!(!pattern.contains('\''), "{rule}");
            (
                negated,
                regex::Regex::new(&pattern.replace("\\\\", "\\")).unwrap(),
            )
        })
        .collect()
}

/// Whether the CRD's rules on `node` (and its length bounds) admit `value`.
fn schema_admits(node: &Value, value: &str) -> bool {
    let len = value.chars().count() as u64;
    let min = node["minLength"].as_u64().unwrap_or(0);
    let max = node["maxLength"].as_u64().unwrap_or(u64::MAX);
    let rules = match_rules(node);
    assert!(!rules.is_empty());
    len >= min
        && len <= max
        && rules
            .iter()
            .all(|(negated, re)| re.is_match(value) != *negated)
}

#[test]
fn crd_name_rules_carry_the_patterns() {
    use api::names::*;
    let spec = spec_schema();
    let props = &spec["properties"];
    let cel = |p: &str| p.replace('\\', "\\\\");
    for field in ["organization", "user"] {
        assert_eq!(
            rules(&props[field]),
            [format!("self.matches('{}')", cel(OWNER_NAME_PATTERN))],
            "{field}"
        );
    }
    assert_eq!(
        rules(&props["repository"]),
        [
            format!("self.matches('{}')", cel(REPOSITORY_PATTERN)),
            format!("!self.matches('{}')", cel(RESERVED_REPO_SUFFIX_PATTERN)),
        ]
    );
    let secret = &props["tokenSecretRef"]["properties"];
    assert_eq!(
        rules(&secret["name"]),
        [format!("self.matches('{}')", cel(SECRET_NAME_PATTERN))]
    );
    assert_eq!(
        rules(&secret["key"]),
        [format!("self.matches('{}')", cel(SECRET_KEY_PATTERN))]
    );
    assert_eq!(secret["name"]["maxLength"], 253);
    assert_eq!(secret["key"]["maxLength"], 253);
    // The repository pattern is the owner pattern, a slash and the repository name pattern.
    assert_eq!(
        REPOSITORY_PATTERN,
        format!(
            "{}/{}",
            OWNER_NAME_PATTERN.strip_suffix('$').unwrap(),
            REPO_NAME_PATTERN.strip_prefix('^').unwrap()
        )
    );
    // Every message says what is wanted.
    let message = |node: &Value, i: usize| {
        node["x-kubernetes-validations"][i]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(message(&props["organization"], 0).contains("Forgejo user or organization name"));
    assert!(message(&props["repository"], 0).starts_with("must be owner/name"));
    assert!(message(&props["repository"], 1).contains(".git"));
    assert!(message(&secret["name"], 0).contains("DNS subdomain"));
    assert!(message(&secret["key"], 0).starts_with("must be a Secret key"));
}

#[test]
fn crd_name_rules_and_validate_agree() {
    // The generated rules, run as the apiserver runs them, and validate() give the same
    // verdict on each value: bad names are refused by `kubectl apply` and by the controller.
    let spec = spec_schema();
    let props = &spec["properties"];
    let owners = [
        "faro", "a", "A1", "ana-b", "a.b", "a_b", "x.y-z_0", "..", ".", "../admin", "-a", "a-",
        "_a", "a.", "a--b", "a._b", "a/b", "a b", "ä", "a%2e", "a?b", "a#b", "a\n", "",
    ];
    for owner in owners {
        let valid = spec_with_scope(serde_json::json!({"organization": owner})).is_ok();
        assert_eq!(
            schema_admits(&props["organization"], owner),
            valid,
            "organization {owner:?}"
        );
        assert_eq!(
            schema_admits(&props["user"], owner),
            valid,
            "user {owner:?}"
        );
        assert_eq!(valid, api::names::is_owner_name(owner), "{owner:?}");
    }
    let repositories = [
        "faro/app",
        "a/b",
        "a/_",
        "a/c++",
        "a/...",
        "a/--",
        "a/.x",
        "a/x.",
        "a/a..b",
        "A.b/C_d",
        "../admin",
        "faro/..",
        "faro/.",
        "faro/-",
        "faro",
        "faro/",
        "/app",
        "a/b/c",
        "a//b",
        "faro/app.git",
        "faro/app.GIT",
        "faro/x.wiki",
        "faro/x.rss",
        "faro/x.atom",
        "faro/gitx",
        "faro/app?x",
        "faro/app#x",
        "faro/a%2f",
        "fa ro/app",
        "-faro/app",
        "faro/é",
        "faro/app\n",
    ];
    for repository in repositories {
        let valid = spec_with_scope(serde_json::json!({"repository": repository})).is_ok();
        assert_eq!(
            schema_admits(&props["repository"], repository),
            valid,
            "repository {repository:?}"
        );
    }
    let secret = &props["tokenSecretRef"]["properties"];
    let long_name = "a".repeat(254);
    let names = [
        "t",
        "forgejo-token",
        "a.b",
        "a-b.c-d",
        "0",
        "T",
        "-t",
        "t-",
        ".t",
        "t.",
        "a..b",
        "a_b",
        "../t",
        "a/b",
        "a b",
        "",
        long_name.as_str(),
    ];
    for name in names {
        let valid = spec_with(|v| v["tokenSecretRef"]["name"] = name.into()).is_ok();
        assert_eq!(schema_admits(&secret["name"], name), valid, "name {name:?}");
    }
    let long_key = "k".repeat(254);
    let keys = [
        "token",
        ".token",
        "a..b",
        "A_b-c.d",
        "-",
        "_",
        ".",
        "..",
        "..a",
        "a/b",
        "a b",
        "",
        long_key.as_str(),
    ];
    for key in keys {
        let valid = spec_with(|v| v["tokenSecretRef"]["key"] = key.into()).is_ok();
        assert_eq!(schema_admits(&secret["key"], key), valid, "key {key:?}");
    }
}

#[test]
fn privileged_templates_are_refused_unless_allowed() {
    use api::{PodPrivileges, SpecError};
    let spec = |template: Value| -> RunnerDeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "forgejoServer": "https://code.example.com",
            "organization": "faro",
            "labels": "docker",
            "tokenSecretRef": {"name": "t"},
            "jobTemplate": template,
        }))
        .unwrap()
    };
    let privileged = spec(serde_json::json!({"spec": {"containers": [
        {"name": "build", "securityContext": {"privileged": true}}
    ]}}));
    // validate() knows no policy: the schema-level checks pass.
    privileged.validate().unwrap();
    let error = privileged
        .check_pod_privileges(PodPrivileges::Baseline)
        .unwrap_err();
    assert_eq!(error.reason(), "PrivilegedTemplate");
    assert!(matches!(
        &error,
        SpecError::PrivilegedTemplate { field, .. }
            if field == "spec.jobTemplate.spec.containers[0].securityContext.privileged"
    ));
    assert!(error.to_string().contains("--allow-privileged-runners"));
    assert_eq!(PodPrivileges::default(), PodPrivileges::Baseline);
    privileged
        .check_pod_privileges(PodPrivileges::Privileged)
        .unwrap();

    // The README's template, no template, and a wrong template (reported as JobTemplate).
    let readme: api::RunnerDeployment = serde_yaml::from_str(&readme_example()).unwrap();
    readme
        .spec
        .check_pod_privileges(PodPrivileges::Baseline)
        .unwrap();
    let mut none = spec(Value::Null);
    none.job_template = None;
    none.check_pod_privileges(PodPrivileges::Baseline).unwrap();
    assert!(matches!(
        spec(serde_json::json!({"spec": {"containers": 3}}))
            .check_pod_privileges(PodPrivileges::Baseline),
        Err(SpecError::JobTemplate(_))
    ));
}
