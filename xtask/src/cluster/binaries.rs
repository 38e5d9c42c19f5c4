//! The Go-built control-plane binaries: built once per pinned version set from the wrapper
//! modules in `xtask/controlplane/{etcd,kube}` into a cache outside the repository, so a
//! `cargo clean` or a second checkout does not cost another multi-minute Go build. A binary
//! added to the list later is built alone into the existing set (Go's build cache makes that
//! a matter of seconds to a few minutes), not the whole set again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::build_cache::cache_root;

/// The Go-built binaries of one pinned version set.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) bin_dir: PathBuf,
}

impl Binaries {
    /// The binary `name` of this set.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
    /// The kubectl built from the same Kubernetes release as the apiserver.
    pub(crate) fn kubectl(&self) -> PathBuf {
        self.path("kubectl")
    }
}

/// etcd, from the etcd wrapper module.
const ETCD: &str = "etcd";
/// How long a cold etcd build took on a 2-core machine, until one here is recorded.
const ETCD_MEASURED: &str = "3 min cold on a busy 2-core machine (measured 2026-12)";
/// How long a cold build of the Kubernetes binaries took on a 2-core machine.
const KUBE_MEASURED: &str = "25 min cold on a busy 2-core machine (measured 2026-12)";

/// The Kubernetes binaries, each `k8s.io/kubernetes/cmd/<name>` of the kube wrapper module
/// (and a `tool` line of its go.mod).
const KUBE_BINARIES: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
];

/// Version of `module` in a wrapper's `require` line.
pub(super) fn required_version(go_mod: &Path, module: &str) -> Result<String> {
    let text =
        fs::read_to_string(go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(module))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
        })
        .ok_or_else(|| anyhow!("{} does not require {module}", go_mod.display()))
}

/// Builds the pinned control-plane binaries once; returns where they are.
pub(crate) fn ensure_binaries(workspace_root: &Path) -> Result<Binaries> {
    let wrapper = workspace_root.join("xtask").join("controlplane");
    let kube_mod = wrapper.join("kube");
    let etcd_mod = wrapper.join("etcd");
    let k8s = required_version(&kube_mod.join("go.mod"), "k8s.io/kubernetes")?;
    let etcd = required_version(&etcd_mod.join("go.mod"), "go.etcd.io/etcd/server/v3")?;
    let key = format!("{k8s}-etcd{}", etcd.trim_start_matches('v'));
    let dir = cache_root()?.join("controlplane").join(&key);
    let bin_dir = dir.join("bin");
    let bins = Binaries {
        bin_dir: bin_dir.clone(),
    };
    let missing = |name: &&str| !bin_dir.join(name).is_file();
    let etcd_missing = missing(&ETCD);
    let kube_missing: Vec<&str> = KUBE_BINARIES.iter().copied().filter(missing).collect();
    if !etcd_missing && kube_missing.is_empty() {
        return Ok(bins);
    }

    let go_version = go_version()?;
    let what: Vec<&str> = etcd_missing
        .then_some(ETCD)
        .into_iter()
        .chain(kube_missing.iter().copied())
        .collect();
    eprintln!(
        "cluster: building {} (Kubernetes {k8s}, etcd {etcd}) from source with {go_version} into {}",
        what.join(", "),
        bin_dir.display()
    );
    eprintln!("cluster: this happens once per version and binary, then the binaries are reused");

    let partial = dir.join(format!("bin.partial-{}", std::process::id()));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;

    if etcd_missing {
        go_build(
            &etcd_mod,
            ETCD,
            ETCD_MEASURED,
            &[
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                &partial.join(ETCD).display().to_string(),
                "go.etcd.io/etcd/server/v3",
            ],
        )?;
    }
    if !kube_missing.is_empty() {
        build_kube(&kube_mod, &k8s, &kube_missing, &partial)?;
    }

    // One rename per binary into the set: a binary is either complete there or absent, and
    // the ones already there (maybe running) stay as they are.
    fs::create_dir_all(&bin_dir)?;
    for name in &what {
        let (from, to) = (partial.join(name), bin_dir.join(name));
        fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    fs::remove_dir(&partial).with_context(|| format!("removing {}", partial.display()))?;
    Ok(bins)
}

/// `go version`'s answer, trimmed; an error saying Go is needed when it cannot run.
pub(super) fn go_version() -> Result<String> {
    let go_version = Command::new("go")
        .arg("version")
        .output()
        .context("running `go version`: Go is needed to build the local control plane")?;
    if !go_version.status.success() {
        bail!(
            "`go version` failed: {}",
            String::from_utf8_lossy(&go_version.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&go_version.stdout)
        .trim()
        .to_owned())
}

/// Builds the Kubernetes binaries `names` (`k8s.io/kubernetes/cmd/<name>`) of release `k8s`
/// into `out_dir`, in one `go build`.
fn build_kube(kube_mod: &Path, k8s: &str, names: &[&str], out_dir: &Path) -> Result<()> {
    let ldflags = kube_ldflags(kube_mod, k8s)?;
    let ldflags = format!("-ldflags={ldflags}");
    let out = format!("{}/", out_dir.display());
    let packages: Vec<String> = names
        .iter()
        .map(|name| format!("k8s.io/kubernetes/cmd/{name}"))
        .collect();
    let mut args = vec!["-trimpath", &ldflags, "-o", &out];
    args.extend(packages.iter().map(String::as_str));
    go_build(kube_mod, &names.join(", "), KUBE_MEASURED, &args)
}

/// Version stamping as the Kubernetes release build does (hack/lib/version.sh), so that
/// `kubectl version` shows the real server version. The module proxy does not carry the
/// git commit, so gitCommit stays empty; the build date is the release's module time.
fn kube_ldflags(kube_mod: &Path, k8s: &str) -> Result<String> {
    let time = go_output(
        kube_mod,
        &[
            "list",
            "-m",
            "-f",
            "{{.Time.UTC.Format \"2006-01-02T15:04:05Z\"}}",
            "k8s.io/kubernetes",
        ],
    )?;
    let (major, minor) = {
        let mut it = k8s.trim_start_matches('v').split('.');
        (
            it.next().unwrap_or("").to_owned(),
            it.next().unwrap_or("").to_owned(),
        )
    };
    let mut ldflags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (k, v) in [
            ("gitVersion", k8s),
            ("gitMajor", major.as_str()),
            ("gitMinor", minor.as_str()),
            ("gitTreeState", "archive"),
            ("buildDate", time.trim()),
        ] {
            ldflags.push_str(&format!(" -X {pkg}.{k}={v}"));
        }
    }
    Ok(ldflags)
}

fn go_command(module_dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(module_dir)
        .env("CGO_ENABLED", "0")
        // The wrapper's go.mod/go.sum are committed; never let a build rewrite them.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off")
        .stdin(Stdio::null());
    cmd
}

pub(super) fn go_output(module_dir: &Path, args: &[&str]) -> Result<String> {
    let out = go_command(module_dir)
        .args(args)
        .output()
        .with_context(|| format!("running go {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "go {} failed in {}: {}",
            args.join(" "),
            module_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `go build` of `what`, saying how long the last build of it took here (else
/// `measured_elsewhere`) and, each minute, how far it is.
pub(super) fn go_build(
    module_dir: &Path,
    what: &str,
    measured_elsewhere: &str,
    args: &[&str],
) -> Result<()> {
    let step = format!("go build {what}");
    let last = crate::timings::last(&step);
    eprintln!(
        "cluster: {step} ({}) ...",
        crate::timings::expectation(&step, measured_elsewhere)
    );
    let started = Instant::now();
    let mut child = go_command(module_dir)
        .arg("build")
        .args(args)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning go build")?;
    let mut next_note = Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= next_note {
            let of = last.map(|s| format!(" of about {s}s")).unwrap_or_default();
            eprintln!(
                "cluster:   still building {what} ({}s{of})",
                started.elapsed().as_secs()
            );
            next_note += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        bail!(
            "go build {what} failed ({status}) in {}",
            module_dir.display()
        );
    }
    crate::timings::record(&step, started.elapsed());
    eprintln!("cluster: built {what} in {}s", started.elapsed().as_secs());
    Ok(())
}
