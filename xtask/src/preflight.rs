//! The preflight of `demo`, `test`, `test-cluster`, `chaos`, `bench`, `image` and `cluster up`:
//! before any of them builds anything, it checks every tool and Debian package they need.
//! As root on a system with apt it installs the missing packages (the same list CI relies
//! on); elsewhere it fails within seconds and names the one command that installs them.
//!
//! The checks and the install go through [`System`], so the decisions are unit-tested with a
//! system that only pretends.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

/// A Debian package a task needs, with a file it installs (checked where dpkg is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Package {
    /// The Debian package's name.
    pub(crate) name: &'static str,
    /// A file the package installs.
    pub(crate) file: &'static str,
    /// What needs it, for the message.
    pub(crate) used_for: &'static str,
}

/// Every Debian package the local cluster, its node and the images need.
pub(crate) const PACKAGES: [Package; 10] = [
    package(
        "containerd",
        "/usr/bin/containerd",
        "the node's container runtime",
    ),
    package("runc", "/usr/sbin/runc", "the node's OCI runtime"),
    package(
        "containernetworking-plugins",
        "/usr/lib/cni/bridge",
        "the pod network",
    ),
    package("iproute2", "/usr/sbin/ip", "the node's bridge"),
    package("nftables", "/usr/sbin/nft", "kube-proxy's rules"),
    package(
        "busybox-static",
        "/bin/busybox",
        "the shell of the runner and label images",
    ),
    package("gcc", "/usr/bin/gcc", "the pause image"),
    package(
        "libc6-dev",
        "/usr/include/stdio.h",
        "static binaries (pause, operator, runner double)",
    ),
    package(
        "make",
        "/usr/bin/make",
        "jemalloc, the operator's allocator",
    ),
    package(
        "ca-certificates",
        "/etc/ssl/certs/ca-certificates.crt",
        "the operator image's CA bundle",
    ),
];

const fn package(name: &'static str, file: &'static str, used_for: &'static str) -> Package {
    Package {
        name,
        file,
        used_for,
    }
}

/// What the preflight asks of the machine; [`Machine`] is the real one.
pub(crate) trait System {
    /// Whether `package` is installed.
    fn installed(&self, package: &Package) -> bool;
    /// `go version`'s answer, or `None` when Go cannot run.
    fn go_version(&self) -> Option<String>;
    /// Why packages cannot be installed here (not root, no apt-get), or `None` if they can.
    fn cannot_install(&self) -> Option<String>;
    /// Installs the packages named.
    fn install(&mut self, names: &[&str]) -> Result<()>;
}

/// What the preflight did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything was there.
    Ready,
    /// These packages were installed.
    Installed(Vec<&'static str>),
}

/// Checks the machine and installs what is missing where it can; the error names what is
/// missing and how to install it.
pub(crate) fn ensure() -> Result<()> {
    match ensure_on(&mut Machine)? {
        Outcome::Ready => {}
        Outcome::Installed(names) => {
            println!("==> preflight: installed {}", names.join(", "));
        }
    }
    Ok(())
}

/// [`ensure`] on any [`System`].
pub(crate) fn ensure_on(system: &mut impl System) -> Result<Outcome> {
    if system.go_version().is_none() {
        bail!(
            "preflight: Go is missing: `go version` does not run. Go 1.26 or newer builds the \
             local cluster from the Go module proxy; install it and put `go` on PATH"
        );
    }
    let missing: Vec<&Package> = PACKAGES.iter().filter(|p| !system.installed(p)).collect();
    if missing.is_empty() {
        return Ok(Outcome::Ready);
    }
    let names: Vec<&'static str> = missing.iter().map(|p| p.name).collect();
    let command = install_command(&names);
    if let Some(why) = system.cannot_install() {
        let list: Vec<String> = missing
            .iter()
            .map(|p| format!("{} ({})", p.name, p.used_for))
            .collect();
        bail!(
            "preflight: missing Debian packages: {}; {why}, so they were not installed. \
             Install them with: {command}",
            list.join(", ")
        );
    }
    println!(
        "==> preflight: installing Debian packages: {}",
        names.join(" ")
    );
    system.install(&names)?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|p| !system.installed(p))
        .map(|p| p.name)
        .collect();
    if !still.is_empty() {
        bail!(
            "preflight: still missing after `{command}`: {}",
            still.join(", ")
        );
    }
    Ok(Outcome::Installed(names))
}

/// The one command that installs `names`.
fn install_command(names: &[&str]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
        names.join(" ")
    )
}

/// This machine: dpkg's database where there is one, else the package's file.
pub(crate) struct Machine;

impl System for Machine {
    fn installed(&self, package: &Package) -> bool {
        let dpkg = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package.name])
            .stderr(Stdio::null())
            .output();
        match dpkg {
            Ok(out) => String::from_utf8_lossy(&out.stdout).contains("install ok installed"),
            Err(_) => Path::new(package.file).exists(),
        }
    }

    fn go_version(&self) -> Option<String> {
        let out = Command::new("go").arg("version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn cannot_install(&self) -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("this is not root".to_owned());
        }
        let apt = Command::new("apt-get")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !apt.is_ok_and(|s| s.success()) {
            return Some("apt-get does not run here".to_owned());
        }
        None
    }

    fn install(&mut self, names: &[&str]) -> Result<()> {
        let apt = |args: &[&str]| -> Result<()> {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("apt-get {} failed ({status})", args.join(" "));
            }
            Ok(())
        };
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend_from_slice(names);
        apt(&args)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A machine that has `present`, may or may not install, and records what it was asked.
    struct Pretend {
        present: BTreeSet<&'static str>,
        go: bool,
        refuse: Option<&'static str>,
        installs: Vec<Vec<String>>,
        install_works: bool,
    }

    impl Pretend {
        fn with(present: &[&'static str]) -> Self {
            Self {
                present: present.iter().copied().collect(),
                go: true,
                refuse: None,
                installs: Vec::new(),
                install_works: true,
            }
        }
    }

    impl System for Pretend {
        fn installed(&self, package: &Package) -> bool {
            self.present.contains(package.name)
        }
        fn go_version(&self) -> Option<String> {
            self.go
                .then(|| "go version go1.26.0 linux/amd64".to_owned())
        }
        fn cannot_install(&self) -> Option<String> {
            self.refuse.map(str::to_owned)
        }
        fn install(&mut self, names: &[&str]) -> Result<()> {
            self.installs
                .push(names.iter().map(|n| (*n).to_owned()).collect());
            if self.install_works {
                for package in PACKAGES.iter().filter(|p| names.contains(&p.name)) {
                    self.present.insert(package.name);
                }
            }
            Ok(())
        }
    }

    fn all_names() -> Vec<&'static str> {
        PACKAGES.iter().map(|p| p.name).collect()
    }

    #[test]
    fn a_complete_machine_installs_nothing() {
        let mut machine = Pretend::with(&all_names());
        assert_eq!(ensure_on(&mut machine).ok(), Some(Outcome::Ready));
        assert!(machine.installs.is_empty());
    }

    #[test]
    fn missing_packages_are_installed_in_one_call_and_checked_after() {
        let mut present = all_names();
        present.retain(|n| !["containerd", "busybox-static"].contains(n));
        let mut machine = Pretend::with(&present);
        let outcome = ensure_on(&mut machine).ok();
        assert_eq!(
            outcome,
            Some(Outcome::Installed(vec!["containerd", "busybox-static"]))
        );
        assert_eq!(machine.installs, vec![vec!["containerd", "busybox-static"]]);
    }

    #[test]
    fn a_machine_that_cannot_install_is_told_the_one_command() {
        let mut machine = Pretend::with(&["gcc", "make"]);
        machine.refuse = Some("this is not root");
        let err = ensure_on(&mut machine).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(machine.installs.is_empty());
        assert!(err.contains("this is not root"), "{err}");
        assert!(
            err.contains("sudo apt-get install -y --no-install-recommends containerd runc"),
            "{err}"
        );
        assert!(
            err.contains("busybox-static (the shell of the runner"),
            "{err}"
        );
        assert!(!err.contains("gcc ("), "gcc is there: {err}");
    }

    #[test]
    fn an_install_that_leaves_a_package_missing_fails_naming_it() {
        let mut machine = Pretend::with(&[]);
        machine.install_works = false;
        let err = ensure_on(&mut machine).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("still missing") && e.contains("containerd")),
            "{err:?}"
        );
    }

    #[test]
    fn missing_go_fails_before_any_package_is_installed() {
        let mut machine = Pretend::with(&[]);
        machine.go = false;
        let err = ensure_on(&mut machine).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("Go is missing")),
            "{err:?}"
        );
        assert!(machine.installs.is_empty());
    }
}
