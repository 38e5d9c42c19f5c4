//! The README's example parses and round-trips, defaults apply, and the generated CRD carries
//! the status subresource, printer columns and every validation rule the schema promises.

use api::{LabelScheme, RunnerDeployment, RunnerDeploymentSpec, Scope};
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
    assert_eq!(spec.poll_interval, "30s");
    assert_eq!(
        spec.poll_interval().unwrap(),
        std::time::Duration::from_secs(30)
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
            "Active",
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
    assert_eq!(props["pollInterval"]["default"], "30s");
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
