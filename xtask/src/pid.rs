//! Process ids as the kernel reads them, and signals sent to one process by its recorded
//! pid (the cluster's components, leftovers of the node, the benchmark's operator).

use rustix::process::{Pid, Signal};

/// `pid` as the kernel's process id; `None` for 0 and values beyond `i32`, which name no
/// single process (kill(2) would read them as "my process group" or "everyone").
pub(crate) fn kernel_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw)
}

/// Sends `sig` to process `pid`; errors (e.g. already gone) are ignored, as callers check
/// liveness themselves.
pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = kernel_pid(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
