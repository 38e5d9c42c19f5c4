//! The cluster's certificates: one CA, serving certificates for the apiserver and the
//! kubelet, a client certificate per component and the ServiceAccount signing key. Made
//! with rcgen in-process, so `up` needs neither openssl nor cfssl.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::node;

/// CA, apiserver serving cert, client certs and the ServiceAccount signing key, in `<dir>/pki`.
pub(super) fn generate_pki(dir: &Path) -> Result<PathBuf> {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki)?;
    let issuer = write_ca(&pki)?;
    let leaf = |name: &str, params: CertificateParams| write_leaf(&pki, &issuer, name, params);

    leaf("apiserver", apiserver_serving()?)?;
    leaf("admin", client("admin", "system:masters"))?;
    // The controller-manager runs every controller under its own identity
    // (--use-service-account-credentials=false), so it needs more than the bootstrap
    // system:kube-controller-manager role grants: give it the masters group.
    leaf(
        "controller-manager",
        client("system:kube-controller-manager", "system:masters"),
    )?;
    leaf(
        "scheduler",
        client("system:kube-scheduler", "system:kube-scheduler"),
    )?;
    // The Node authorizer and NodeRestriction know a kubelet by this name and group.
    leaf(
        "kubelet",
        client(&format!("system:node:{}", node::NODE_NAME), "system:nodes"),
    )?;
    // kube-proxy's own identity: the bootstrap ClusterRoleBinding system:node-proxier grants
    // this user exactly what it reads (Services, EndpointSlices, Nodes) and its events.
    leaf(
        "kube-proxy",
        client("system:kube-proxy", "system:node-proxier"),
    )?;
    // The apiserver's identity towards the kubelet (logs, exec).
    leaf(
        "apiserver-kubelet-client",
        client("kube-apiserver-kubelet-client", "system:masters"),
    )?;
    leaf("kubelet-serving", kubelet_serving()?)?;

    let sa = KeyPair::generate()?;
    write_private(&pki.join("sa.key"), &sa.serialize_pem())?;
    fs::write(pki.join("sa.pub"), sa.public_key_pem())?;
    Ok(pki)
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// Writes `ca.crt` and `ca.key`; returns the issuer that signs every other certificate.
pub(super) fn write_ca(pki: &Path) -> Result<Issuer<'static, KeyPair>> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("forgejo-runner-controller-local-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    fs::write(pki.join("ca.crt"), ca_cert.pem())?;
    write_private(&pki.join("ca.key"), &ca_key.serialize_pem())?;
    Ok(Issuer::new(ca_params, ca_key))
}

/// Writes `<name>.crt`, signed by `issuer`, and its new key `<name>.key`.
pub(super) fn write_leaf(
    pki: &Path,
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    params: CertificateParams,
) -> Result<()> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    fs::write(pki.join(format!("{name}.crt")), cert.pem())?;
    write_private(&pki.join(format!("{name}.key")), &key.serialize_pem())?;
    Ok(())
}

/// Serving certificate parameters for `names` (IP addresses or DNS names).
pub(super) fn serving(
    names: Vec<String>,
    cn: &str,
    org: Option<&str>,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = dn(cn, org);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// The apiserver's serving certificate: every address and name pods or this machine use.
fn apiserver_serving() -> Result<CertificateParams> {
    serving(
        vec![
            "127.0.0.1".to_owned(),
            node::NODE_IP.to_string(),
            // The `kubernetes` Service's ClusterIP, first of SERVICE_CLUSTER_IP_RANGE (no
            // endpoints are written for it: pods use the node IP, see up.rs).
            "10.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ],
        "kube-apiserver",
        None,
    )
}

/// The kubelet's serving certificate (the apiserver verifies it against the CA).
fn kubelet_serving() -> Result<CertificateParams> {
    serving(
        vec![
            node::NODE_IP.to_string(),
            "127.0.0.1".to_owned(),
            node::NODE_NAME.to_owned(),
        ],
        &format!("system:node:{}", node::NODE_NAME),
        Some("system:nodes"),
    )
}

/// Client certificate parameters for user `cn` in group `org`.
fn client(cn: &str, org: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, Some(org));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

/// Writes a file readable by its owner only.
pub(super) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
