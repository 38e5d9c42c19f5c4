//! Putting the operator into the local cluster: a kustomize overlay of `deploy/` with the
//! local image and the apiserver address pods can reach, and a kubeconfig with only the
//! operator's generated RBAC, so tests exercise exactly the grants that ship.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use super::binaries::ensure_binaries;
use super::kubeconfig::write_kubeconfig_token;
use super::kubectl::kubectl;
use super::state::{running_state, state_dir};
use crate::node;

/// Namespace and ServiceAccount of the operator, as generated into `deploy/`.
const OPERATOR_NAMESPACE: &str = "forgejo-runner-system";
const OPERATOR_SERVICE_ACCOUNT: &str = "forgejo-runner-controller";

/// The namespace whose pools the in-cluster operator of the test overlay serves.
pub const IN_CLUSTER_TEST_NAMESPACE: &str = "frc-in-cluster";

/// [`write_local_overlay`] for the cluster tier: the operator serves
/// [`IN_CLUSTER_TEST_NAMESPACE`] only, so it leaves other tests' pools alone.
pub fn write_test_overlay(workspace_root: &Path, operator_image: &str) -> Result<PathBuf> {
    write_local_overlay(workspace_root, operator_image, IN_CLUSTER_TEST_NAMESPACE)
}

/// Writes `target/cluster/overlay/`: `deploy/` with the local operator image, the apiserver
/// address pods can reach (the node IP: the `kubernetes` Service has no endpoints, so
/// kube-proxy refuses its ClusterIP) and one served namespace.
pub fn write_local_overlay(
    workspace_root: &Path,
    operator_image: &str,
    served_namespace: &str,
) -> Result<PathBuf> {
    let dir = state_dir(workspace_root);
    let state = running_state(&dir)?;
    let overlay = dir.join("overlay");
    fs::create_dir_all(&overlay)?;
    let (name, tag) = operator_image
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("image reference {operator_image} has no tag"))?;
    let patch = serde_json::json!([
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_HOST", "value": node::NODE_IP.to_string()}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_PORT", "value": state.apiserver_port.to_string()}},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": format!("--namespace={served_namespace}")},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": "--log-level=info,operator=debug"},
    ]);
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../../deploy"],
        "images": [{"name": crate::image::PUBLISHED_OPERATOR_IMAGE, "newName": name, "newTag": tag}],
        "patches": [{
            "target": {"kind": "Deployment", "name": "forgejo-runner-controller"},
            "patch": serde_json::to_string(&patch)?,
        }],
    });
    fs::write(
        overlay.join("kustomization.yaml"),
        serde_yaml::to_string(&kustomization)?,
    )?;
    Ok(overlay)
}

/// Applies deploy/ (`kubectl apply --server-side -k deploy/`), waits for CRDs Established,
/// and writes a kubeconfig for the operator's ServiceAccount (only its generated RBAC).
/// Returns that kubeconfig's path.
pub fn install_operator_identity(
    workspace_root: &Path,
    admin_kubeconfig: &Path,
) -> Result<PathBuf> {
    install_identity_from(
        workspace_root,
        admin_kubeconfig,
        &workspace_root.join("deploy"),
    )
}

/// [`install_operator_identity`] from the kustomization in `kustomize_dir` (e.g. an overlay).
pub(crate) fn install_identity_from(
    workspace_root: &Path,
    admin_kubeconfig: &Path,
    kustomize_dir: &Path,
) -> Result<PathBuf> {
    let bins = ensure_binaries(workspace_root)?;
    let dir = state_dir(workspace_root);
    let state = running_state(&dir)?;

    let kustomize = kustomize_dir.display().to_string();
    kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            &kustomize,
        ],
    )?;
    kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    )?;
    let token = kubectl(
        &bins,
        admin_kubeconfig,
        &[
            "create",
            "token",
            OPERATOR_SERVICE_ACCOUNT,
            "-n",
            OPERATOR_NAMESPACE,
            "--duration=24h",
        ],
    )?;
    let token = token.trim();
    if token.is_empty() {
        bail!("kubectl create token returned an empty token");
    }
    let ca = fs::read(dir.join("pki").join("ca.crt"))?;
    let path = dir.join("operator.kubeconfig");
    write_kubeconfig_token(
        &path,
        &state.server,
        ca,
        "operator",
        OPERATOR_SERVICE_ACCOUNT,
        OPERATOR_NAMESPACE,
        token,
    )?;
    eprintln!(
        "cluster: operator identity system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT} in {}",
        path.display()
    );
    Ok(path)
}
