//! Kubeconfigs of the local cluster's components and of the operator. Built as
//! [`kube::config::Kubeconfig`] values rather than YAML templates, so a misspelt field or a
//! wrong nesting is a compile error, not a component that cannot authenticate.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

use super::pki::write_private;

/// The one cluster entry's name in every kubeconfig written here.
const CLUSTER_NAME: &str = "local";

/// How a client checks the server's certificate.
pub(super) enum ServerTrust {
    /// Against this CA certificate (PEM).
    Ca(Vec<u8>),
    /// Not at all: a component serving a self-signed certificate of its own.
    Insecure,
}

/// A kubeconfig with one cluster, one user and one context, the current one.
fn single(
    server: &str,
    trust: ServerTrust,
    context: &str,
    user: &str,
    namespace: Option<&str>,
    auth: AuthInfo,
) -> Kubeconfig {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (certificate_authority_data, insecure_skip_tls_verify) = match trust {
        ServerTrust::Ca(pem) => (Some(b64.encode(pem)), None),
        ServerTrust::Insecure => (None, Some(true)),
    };
    Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: CLUSTER_NAME.to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data,
                insecure_skip_tls_verify,
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        contexts: vec![NamedContext {
            name: context.to_owned(),
            context: Some(KubeContext {
                cluster: CLUSTER_NAME.to_owned(),
                user: Some(user.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..KubeContext::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(context.to_owned()),
        auth_infos: vec![NamedAuthInfo {
            name: user.to_owned(),
            auth_info: Some(auth),
            ..NamedAuthInfo::default()
        }],
        ..Kubeconfig::default()
    }
}

/// Writes `config` as YAML, readable by its owner only (it holds keys or tokens).
fn write(path: &Path, config: &Kubeconfig) -> Result<()> {
    write_private(path, &serde_yaml::to_string(config)?)
}

/// Writes a kubeconfig that authenticates as `user` with `<pki>/<user>.{crt,key}`. The server
/// is verified against our CA if `verify_server`; otherwise (a component serving a
/// self-signed certificate of its own) it is not verified.
pub(super) fn write_kubeconfig_cert(
    path: &Path,
    server: &str,
    pki: &Path,
    user: &str,
    verify_server: bool,
) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let read = |f: String| fs::read(pki.join(&f)).with_context(|| format!("reading {f}"));
    let trust = if verify_server {
        ServerTrust::Ca(read("ca.crt".into())?)
    } else {
        ServerTrust::Insecure
    };
    let auth = AuthInfo {
        client_certificate_data: Some(b64.encode(read(format!("{user}.crt"))?)),
        client_key_data: Some(b64.encode(read(format!("{user}.key"))?).into()),
        ..AuthInfo::default()
    };
    let config = single(server, trust, &format!("{user}@local"), user, None, auth);
    write(path, &config)
}

/// Writes a kubeconfig that authenticates as `user` with a bearer `token`, verifying the
/// server against `ca` (PEM), in context `context` whose default namespace is `namespace`.
pub(super) fn write_kubeconfig_token(
    path: &Path,
    server: &str,
    ca: Vec<u8>,
    context: &str,
    user: &str,
    namespace: &str,
    token: &str,
) -> Result<()> {
    let auth = AuthInfo {
        token: Some(token.to_owned().into()),
        ..AuthInfo::default()
    };
    let config = single(
        server,
        ServerTrust::Ca(ca),
        context,
        user,
        Some(namespace),
        auth,
    );
    write(path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_yaml(path: &Path) -> serde_yaml::Value {
        serde_yaml::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn cert_kubeconfig_has_the_fields_of_the_old_template() {
        let dir = tempfile::tempdir().unwrap();
        for (f, content) in [("ca.crt", "CA"), ("admin.crt", "CRT"), ("admin.key", "KEY")] {
            fs::write(dir.path().join(f), content).unwrap();
        }
        let path = dir.path().join("admin.kubeconfig");
        write_kubeconfig_cert(&path, "https://10.244.0.1:6443", dir.path(), "admin", true).unwrap();
        let y = read_yaml(&path);
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(y["apiVersion"], "v1");
        assert_eq!(y["kind"], "Config");
        assert_eq!(y["current-context"], "admin@local");
        let cluster = &y["clusters"][0];
        assert_eq!(cluster["name"], "local");
        assert_eq!(cluster["cluster"]["server"], "https://10.244.0.1:6443");
        assert_eq!(
            cluster["cluster"]["certificate-authority-data"],
            b64.encode("CA").as_str()
        );
        assert!(cluster["cluster"].get("insecure-skip-tls-verify").is_none());
        let context = &y["contexts"][0];
        assert_eq!(context["name"], "admin@local");
        assert_eq!(context["context"]["cluster"], "local");
        assert_eq!(context["context"]["user"], "admin");
        assert!(context["context"].get("namespace").is_none());
        let user = &y["users"][0];
        assert_eq!(user["name"], "admin");
        assert_eq!(
            user["user"]["client-certificate-data"],
            b64.encode("CRT").as_str()
        );
        assert_eq!(user["user"]["client-key-data"], b64.encode("KEY").as_str());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // kube itself reads it back.
        Kubeconfig::read_from(&path).unwrap();
    }

    #[test]
    fn unverified_and_token_kubeconfigs() {
        let dir = tempfile::tempdir().unwrap();
        for (f, content) in [("cm.crt", "CRT"), ("cm.key", "KEY")] {
            fs::write(dir.path().join(f), content).unwrap();
        }
        let path = dir.path().join("health.kubeconfig");
        write_kubeconfig_cert(&path, "https://127.0.0.1:1", dir.path(), "cm", false).unwrap();
        let y = read_yaml(&path);
        assert_eq!(
            y["clusters"][0]["cluster"]["insecure-skip-tls-verify"],
            true
        );
        assert!(
            y["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );

        let path = dir.path().join("operator.kubeconfig");
        write_kubeconfig_token(
            &path,
            "https://10.244.0.1:6443",
            b"CA".to_vec(),
            "operator",
            "sa",
            "ns",
            "TOKEN",
        )
        .unwrap();
        let y = read_yaml(&path);
        assert_eq!(y["current-context"], "operator");
        assert_eq!(y["contexts"][0]["context"]["user"], "sa");
        assert_eq!(y["contexts"][0]["context"]["namespace"], "ns");
        assert_eq!(y["users"][0]["name"], "sa");
        assert_eq!(y["users"][0]["user"]["token"], "TOKEN");
        assert!(y["users"][0]["user"].get("client-key-data").is_none());
    }
}
