//! The KEDA operator, for comparing with it (`bench --vs-keda`, issue 16): built once per
//! version from the wrapper module `xtask/controlplane/keda` (see the README there) into
//! `${FRC_CACHE_DIR:-$HOME/.cache/forgejo-runner-controller}/keda/<version>/bin/keda-operator`,
//! with the same Go build helpers as the control plane (`binaries.rs`). Its CRDs are not
//! copied into the repository: they are applied from the module cache
//! (`<module dir>/config/crd/bases`).
//!
//! Out of the cluster, the operator runs as a plain process against a kubeconfig
//! ([`Keda::command`]): `WATCH_NAMESPACE` and `KEDA_CLUSTER_OBJECT_NAMESPACE` must be set
//! (it exits without them), and its gRPC metrics service refuses to start without
//! `ca.crt`, `tls.crt` and `tls.key` in `--cert-dir` ([`write_grpc_certs`]).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::binaries::{go_build, go_output, go_version, required_version};
use super::pki::{serving, write_ca, write_leaf};
use crate::build_cache::cache_root;

/// KEDA's Go module.
pub(crate) const KEDA_MODULE: &str = "github.com/kedacore/keda/v2";

/// The CRD files the operator needs before it starts: it watches every one of these kinds
/// (the eventing ones too) and its manager fails on a kind the apiserver does not know.
pub(crate) const KEDA_CRDS: [&str; 6] = [
    "keda.sh_scaledjobs.yaml",
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
    "keda.sh_clustertriggerauthentications.yaml",
    "eventing.keda.sh_cloudeventsources.yaml",
    "eventing.keda.sh_clustercloudeventsources.yaml",
];

/// A built KEDA operator and where its CRDs are.
#[derive(Debug, Clone)]
pub(crate) struct Keda {
    /// The release, e.g. `v2.21.0`.
    pub(crate) version: String,
    /// The `keda-operator` binary.
    pub(crate) operator: PathBuf,
    /// `config/crd/bases` of the module in the Go module cache (every file in [`KEDA_CRDS`]).
    pub(crate) crd_dir: PathBuf,
}

/// How to run the operator out of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct OperatorRun<'a> {
    /// The kubeconfig it uses (`KUBECONFIG`).
    pub(crate) kubeconfig: &'a Path,
    /// `ca.crt`, `tls.crt`, `tls.key` for its gRPC metrics service ([`write_grpc_certs`]).
    pub(crate) cert_dir: &'a Path,
    /// Namespaces it watches, comma-separated; empty: all.
    pub(crate) watch_namespace: &'a str,
    /// Where ClusterTriggerAuthentication Secrets live (and its leader-election namespace).
    pub(crate) object_namespace: &'a str,
    /// `/healthz` and `/readyz`.
    pub(crate) probe_addr: SocketAddr,
}

impl Keda {
    /// The operator as a plain process: no leader election, no certificate rotation or
    /// webhook/APIService patching, no Prometheus endpoint, everything on loopback.
    pub(crate) fn command(&self, run: &OperatorRun<'_>) -> Command {
        let mut cmd = Command::new(&self.operator);
        cmd.env("KUBECONFIG", run.kubeconfig)
            .env("WATCH_NAMESPACE", run.watch_namespace)
            .env("KEDA_CLUSTER_OBJECT_NAMESPACE", run.object_namespace)
            .env("POD_NAMESPACE", run.object_namespace)
            .args(operator_args(run));
        cmd
    }
}

fn operator_args(run: &OperatorRun<'_>) -> Vec<String> {
    vec![
        "--leader-elect=false".into(),
        "--enable-cert-rotation=false".into(),
        format!("--cert-dir={}", run.cert_dir.display()),
        // The metrics service is for keda-metrics-apiserver, which does not run here.
        "--metrics-service-bind-address=127.0.0.1:0".into(),
        "--enable-prometheus-metrics=false".into(),
        format!("--health-probe-bind-address={}", run.probe_addr),
        "--zap-log-level=info".into(),
        "--zap-encoder=console".into(),
    ]
}

/// [`Keda::command`] as a shell line, for people.
pub(crate) fn command_line(keda: &Keda, run: &OperatorRun<'_>) -> String {
    let cmd = keda.command(run);
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        let value = value.unwrap_or_default().to_string_lossy();
        let value = if value.is_empty() { "''".into() } else { value };
        line.push_str(&format!("{}={value} ", key.to_string_lossy()));
    }
    line.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        line.push_str(" \\\n    ");
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Writes a throwaway CA and a serving certificate for 127.0.0.1/localhost into `dir` as
/// `ca.crt`, `tls.crt` and `tls.key`, the files the operator's gRPC metrics service loads.
pub(crate) fn write_grpc_certs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let issuer = write_ca(dir)?;
    let names = ["127.0.0.1", "localhost", "keda-operator"].map(str::to_owned);
    let mut params = serving(names.to_vec(), "keda-operator", None)?;
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    write_leaf(dir, &issuer, "tls", params)
}

/// Builds the pinned KEDA operator once; returns it and its CRD directory.
pub(crate) fn ensure_keda(workspace_root: &Path) -> Result<Keda> {
    let module = workspace_root
        .join("xtask")
        .join("controlplane")
        .join("keda");
    let version = required_version(&module.join("go.mod"), KEDA_MODULE)?;
    let dir = cache_root()?.join("keda").join(&version);
    let bin_dir = dir.join("bin");
    let operator = bin_dir.join("keda-operator");

    if !operator.is_file() {
        let go_version = go_version()?;
        eprintln!(
            "keda: building the KEDA operator {version} from source with {go_version} into {}",
            bin_dir.display()
        );
        let partial = dir.join(format!("bin.partial-{}", std::process::id()));
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        fs::create_dir_all(&partial)?;
        go_build(
            &module,
            "keda-operator",
            "about 6 min cold on 2 cores (measured 2026-12)",
            &[
                "-trimpath",
                &format!("-ldflags=-s -w -X {KEDA_MODULE}/version.Version={version}"),
                "-o",
                &partial.join("keda-operator").display().to_string(),
                &format!("{KEDA_MODULE}/cmd/operator"),
            ],
        )?;
        if bin_dir.exists() {
            fs::remove_dir_all(&bin_dir)?;
        }
        fs::rename(&partial, &bin_dir)
            .with_context(|| format!("moving {} to {}", partial.display(), bin_dir.display()))?;
    }

    let crd_dir = module_dir(&module)?
        .join("config")
        .join("crd")
        .join("bases");
    if let Some(missing) = KEDA_CRDS.iter().find(|f| !crd_dir.join(f).is_file()) {
        bail!("KEDA {version} has no {missing} in {}", crd_dir.display());
    }
    Ok(Keda {
        version,
        operator,
        crd_dir,
    })
}

/// KEDA's module directory in the Go module cache (downloaded if it is not there).
fn module_dir(wrapper: &Path) -> Result<PathBuf> {
    let dir = go_output(wrapper, &["mod", "download", "-json", KEDA_MODULE])?;
    let info: serde_json::Value =
        serde_json::from_str(&dir).context("reading `go mod download -json`")?;
    match info.get("Dir").and_then(serde_json::Value::as_str) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => bail!("`go mod download -json {KEDA_MODULE}` names no directory: {dir}"),
    }
}

/// `cargo xtask keda`: builds (once) the operator, writes gRPC certificates under
/// `target/keda/certs` and prints how to run it against the local cluster.
pub fn print_keda(workspace_root: &Path) -> Result<()> {
    let keda = ensure_keda(workspace_root)?;
    let cert_dir = workspace_root.join("target").join("keda").join("certs");
    write_grpc_certs(&cert_dir)?;
    let kubeconfig = super::state::admin_kubeconfig_path(workspace_root);
    let run = OperatorRun {
        kubeconfig: &kubeconfig,
        cert_dir: &cert_dir,
        watch_namespace: "",
        object_namespace: "keda",
        probe_addr: SocketAddr::from(([127, 0, 0, 1], 18081)),
    };
    println!("KEDA {}: {}", keda.version, keda.operator.display());
    println!(
        "CRDs: {}/{{{}}}",
        keda.crd_dir.display(),
        KEDA_CRDS.join(",")
    );
    println!(
        "Against the local cluster (apply the CRDs first, create namespace {}):",
        run.object_namespace
    );
    println!("{}", command_line(&keda, &run));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_certs_are_the_three_files_keda_loads() {
        let dir = tempfile::tempdir().unwrap();
        write_grpc_certs(dir.path()).unwrap();
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            let text = fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{f}: {text}");
        }
    }

    #[test]
    fn the_command_sets_what_the_operator_exits_without() {
        let keda = Keda {
            version: "v2.21.0".into(),
            operator: "/cache/keda-operator".into(),
            crd_dir: "/mod/config/crd/bases".into(),
        };
        let run = OperatorRun {
            kubeconfig: Path::new("/k/admin.kubeconfig"),
            cert_dir: Path::new("/k/certs"),
            watch_namespace: "",
            object_namespace: "keda",
            probe_addr: SocketAddr::from(([127, 0, 0, 1], 18081)),
        };
        let cmd = keda.command(&run);
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_owned())))
            .collect();
        for key in [
            "KUBECONFIG",
            "WATCH_NAMESPACE",
            "KEDA_CLUSTER_OBJECT_NAMESPACE",
        ] {
            assert!(envs.iter().any(|(k, v)| k == key && v.is_some()), "{key}");
        }
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert!(args.contains(&"--cert-dir=/k/certs".into()));
        assert!(command_line(&keda, &run).contains("WATCH_NAMESPACE=''"));
    }
}
