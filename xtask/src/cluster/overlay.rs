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
    write_overlay(
        workspace_root,
        "overlay",
        &workspace_root.join("deploy"),
        operator_image,
        served_namespace,
    )
}

/// Writes `target/cluster/<name>/`: the kustomization `deploy_dir` (an absolute path, e.g.
/// an earlier release's `deploy/`) adjusted as [`write_local_overlay`] describes.
pub(crate) fn write_overlay(
    workspace_root: &Path,
    name: &str,
    deploy_dir: &Path,
    operator_image: &str,
    served_namespace: &str,
) -> Result<PathBuf> {
    let dir = state_dir(workspace_root);
    let state = running_state(&dir)?;
    let overlay = dir.join(name);
    fs::create_dir_all(&overlay)?;
    let (image, tag) = operator_image
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
        "resources": [relative_path(&overlay, deploy_dir)?],
        "images": [{"name": crate::image::PUBLISHED_OPERATOR_IMAGE, "newName": image, "newTag": tag}],
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

/// `to` as a path relative to the directory `from` (both absolute): kustomize takes
/// resources by relative path.
fn relative_path(from: &Path, to: &Path) -> Result<String> {
    if !from.is_absolute() || !to.is_absolute() {
        bail!(
            "{} and {} must both be absolute",
            from.display(),
            to.display()
        );
    }
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(parts.join("/"))
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

#[cfg(test)]
mod tests {
    use super::relative_path;
    use std::path::Path;

    #[test]
    fn relative_path_climbs_to_the_common_parent() {
        let path = relative_path(
            Path::new("/w/main/target/cluster/overlay"),
            Path::new("/w/main/deploy"),
        );
        assert_eq!(path.ok().as_deref(), Some("../../../deploy"));
        let path = relative_path(
            Path::new("/w/main/target/cluster/previous"),
            Path::new("/root/.cache/frc/src/deploy"),
        );
        assert_eq!(
            path.ok().as_deref(),
            Some("../../../../../root/.cache/frc/src/deploy")
        );
    }
}
