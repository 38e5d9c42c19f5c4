//! File operations of the cache server, with errors worded as the real server's (Go's
//! `*PathError`: `mkdir /data/cache: permission denied`), so that what a pod's status
//! quotes reads the same with the double and with forgejo-runner.

use std::io;
use std::path::{Path, PathBuf};

/// A failed file operation: Go's `op path: reason`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} {}: {reason}", path.display())]
pub struct DiskError {
    /// The operation, as Go names it (`mkdir`, `open`, `rename`, …).
    pub op: &'static str,
    /// The path it failed on.
    pub path: PathBuf,
    /// The system's reason, in Go's words.
    pub reason: String,
}

impl DiskError {
    /// `op` on `path` failed with `error`.
    pub fn new(op: &'static str, path: &Path, error: &io::Error) -> Self {
        Self {
            op,
            path: path.to_owned(),
            reason: reason(error),
        }
    }
}

/// The reason of `error` as Go prints an errno: the C library's text with its first letter
/// lowered ("permission denied"), without Rust's "(os error 13)".
pub fn reason(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match (error.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Makes `dir` and its missing parents (Go's `os.MkdirAll`); the error names the
/// directory that could not be made.
pub fn mkdir_all(dir: &Path) -> Result<(), DiskError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(DiskError::new(
                "mkdir",
                dir,
                &io::Error::from_raw_os_error(ENOTDIR),
            ));
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        // Made meanwhile by someone else: as good.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(DiskError::new("mkdir", dir, &e)),
    }
}

/// Linux's "Not a directory".
const ENOTDIR: i32 = 20;

/// Writes `bytes` to `path` whole or not at all: a temporary file next to it, renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes).map_err(|e| DiskError::new("open", &partial, &e))?;
    std::fs::rename(&partial, path).map_err(|e| DiskError::new("rename", &partial, &e))
}

/// Reads `path` whole.
pub fn read(path: &Path) -> Result<Vec<u8>, DiskError> {
    std::fs::read(path).map_err(|e| DiskError::new("open", path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_reasons_read_as_go_prints_them() {
        assert_eq!(
            reason(&io::Error::from_raw_os_error(13)),
            "permission denied"
        );
        assert_eq!(
            reason(&io::Error::from_raw_os_error(30)),
            "read-only file system"
        );
        assert_eq!(
            DiskError::new(
                "mkdir",
                Path::new("/data/cache"),
                &io::Error::from_raw_os_error(13)
            )
            .to_string(),
            "mkdir /data/cache: permission denied"
        );
    }

    #[test]
    fn mkdir_all_makes_parents_and_names_the_directory_it_could_not_make() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/cache");
        mkdir_all(&deep).unwrap();
        assert!(deep.is_dir());
        mkdir_all(&deep).unwrap();

        // A regular file where a directory should be: refused whoever runs the test (root
        // too), and named as Go's MkdirAll names it: the path that is not a directory.
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        for dir in [file.join("cache"), file.clone()] {
            let error = mkdir_all(&dir).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("mkdir {}: not a directory", file.display())
            );
        }
    }

    #[test]
    fn a_write_is_whole_or_absent() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("index.json");
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(read(&path).unwrap(), b"{}");
        assert!(!root.path().join("index.json.partial").exists());
        let missing = root.path().join("absent");
        assert_eq!(
            read(&missing).unwrap_err().to_string(),
            format!("open {}: no such file or directory", missing.display())
        );
    }
}
