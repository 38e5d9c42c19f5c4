//! The cache server's entries, on disk under `--dir` as the real server keeps them there:
//! reserved, filled chunk by chunk, committed, then found by key and version and
//! downloaded. Each entry belongs to the repository that reserved it (the signed
//! `Forgejo-Cache-Repo`), so one repository never sees another's.
//!
//! Layout (the double's; the real server keeps a bolt database next to `cache/`):
//! `D/cache/` first, as the real server makes it (and fails on it when `D` is not
//! writable), `D/cache/uploads/<id>/<start>` for the chunks of an entry not committed yet,
//! `D/cache/archives/<id>` for a committed entry, and `D/index.json` for what the entries
//! are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::disk::{self, DiskError};

/// Why a store operation was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such entry for this repository.
    #[error("cache {0} not found")]
    NotFound(i64),
    /// The key and version are already reserved (the words of the real server).
    #[error("already exist")]
    Exists,
    /// The entry is committed: no more chunks, no second commit.
    #[error("cache {0} is already committed")]
    Committed(i64),
    /// The uploaded chunks do not make one run of bytes from 0.
    #[error("cache {id}: the chunks leave a gap or overlap at byte {at}")]
    Gap { id: i64, at: u64 },
    /// The bytes uploaded are not the size reserved.
    #[error("cache {id}: {uploaded} bytes uploaded, {reserved} reserved")]
    Size {
        id: i64,
        uploaded: u64,
        reserved: u64,
    },
    /// The disk refused a read or write.
    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl StoreError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Disk(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why the store cannot be opened: the server then exits at once.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A directory could not be made (`mkdir D/cache: permission denied`).
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The index is not the double's.
    #[error("{}: {message}", path.display())]
    Index { path: PathBuf, message: String },
}

/// Who asks: the signed repository and write isolation key.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The repository's full name.
    pub repo: &'a str,
    /// The write isolation key, empty when none.
    pub write_isolation_key: &'a str,
}

/// What the index says of one entry; its bytes are in files.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    repo: String,
    write_isolation_key: String,
    key: String,
    version: String,
    size: Option<u64>,
    committed: bool,
}

impl Entry {
    /// Whether `scope` may read it: same repository, and written without isolation or
    /// with the reader's own key.
    fn readable_by(&self, scope: Scope<'_>) -> bool {
        self.repo == scope.repo
            && (self.write_isolation_key.is_empty()
                || self.write_isolation_key == scope.write_isolation_key)
    }
}

/// `D/index.json`: ids grow, so a higher id is a newer entry.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    next_id: i64,
    entries: BTreeMap<i64, Entry>,
}

/// All entries, under one directory.
pub struct Store {
    index_file: PathBuf,
    uploads: PathBuf,
    archives: PathBuf,
    index: Index,
}

impl Store {
    /// Opens the store under `dir`: makes `dir/cache` first (the real server's first
    /// write, so an unwritable `dir` fails there), then reads what an earlier run left.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let cache = dir.join("cache");
        disk::mkdir_all(&cache)?;
        let uploads = cache.join("uploads");
        let archives = cache.join("archives");
        disk::mkdir_all(&uploads)?;
        disk::mkdir_all(&archives)?;
        let index_file = dir.join("index.json");
        let index = if index_file.exists() {
            let bytes = disk::read(&index_file)?;
            serde_json::from_slice(&bytes).map_err(|e| OpenError::Index {
                path: index_file.clone(),
                message: e.to_string(),
            })?
        } else {
            Index::default()
        };
        Ok(Self {
            index_file,
            uploads,
            archives,
            index,
        })
    }

    fn save(&self) -> Result<(), StoreError> {
        // An index of strings and numbers always serializes.
        let bytes = serde_json::to_vec_pretty(&self.index).unwrap_or_default();
        disk::write_atomically(&self.index_file, &bytes)?;
        Ok(())
    }

    /// The newest committed entry of `version` matching the first key that matches:
    /// exactly, else as a prefix. Returns its id and key.
    pub fn find(&self, scope: Scope<'_>, keys: &[String], version: &str) -> Option<(i64, String)> {
        let candidates = || {
            self.index
                .entries
                .iter()
                .rev()
                .filter(|(_, e)| e.committed && e.version == version && e.readable_by(scope))
        };
        keys.iter().find_map(|wanted| {
            candidates()
                .find(|(_, e)| &e.key == wanted)
                .or_else(|| candidates().find(|(_, e)| e.key.starts_with(wanted.as_str())))
                .map(|(id, e)| (*id, e.key.clone()))
        })
    }

    /// Reserves `key` (lower-cased by the caller) at `version`; returns the new id.
    pub fn reserve(
        &mut self,
        scope: Scope<'_>,
        key: &str,
        version: &str,
        size: Option<u64>,
    ) -> Result<i64, StoreError> {
        let taken = self.index.entries.values().any(|e| {
            e.repo == scope.repo
                && e.write_isolation_key == scope.write_isolation_key
                && e.key == key
                && e.version == version
        });
        if taken {
            return Err(StoreError::Exists);
        }
        let id = self.index.next_id + 1;
        self.index.next_id = id;
        self.index.entries.insert(
            id,
            Entry {
                repo: scope.repo.to_owned(),
                write_isolation_key: scope.write_isolation_key.to_owned(),
                key: key.to_owned(),
                version: version.to_owned(),
                size,
                committed: false,
            },
        );
        if let Err(e) = self.save() {
            self.index.entries.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    fn pending(&self, scope: Scope<'_>, id: i64) -> Result<&Entry, StoreError> {
        let entry = self
            .index
            .entries
            .get(&id)
            .filter(|e| e.repo == scope.repo)
            .ok_or(StoreError::NotFound(id))?;
        if entry.committed {
            return Err(StoreError::Committed(id));
        }
        Ok(entry)
    }

    /// Stores a chunk that starts at byte `start`.
    pub fn upload(
        &mut self,
        scope: Scope<'_>,
        id: i64,
        start: u64,
        chunk: &[u8],
    ) -> Result<(), StoreError> {
        self.pending(scope, id)?;
        let dir = self.uploads.join(id.to_string());
        disk::mkdir_all(&dir)?;
        disk::write_atomically(&dir.join(start.to_string()), chunk)?;
        Ok(())
    }

    /// The chunks of entry `id` by start, read whole.
    fn chunks(&self, id: i64) -> Result<BTreeMap<u64, Vec<u8>>, StoreError> {
        let dir = self.uploads.join(id.to_string());
        let mut chunks = BTreeMap::new();
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            // Nothing uploaded: an empty entry.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(chunks),
            Err(e) => return Err(DiskError::new("open", &dir, &e).into()),
        };
        for file in listing {
            let file = file.map_err(|e| DiskError::new("readdir", &dir, &e))?;
            // Only chunk files are named by a number; a `.partial` is an unfinished write.
            if let Some(start) = file.file_name().to_str().and_then(|n| n.parse().ok()) {
                chunks.insert(start, disk::read(&file.path())?);
            }
        }
        Ok(chunks)
    }

    /// Joins the chunks into the archive; they must run from 0 without gaps and make the
    /// reserved size when one was given.
    pub fn commit(&mut self, scope: Scope<'_>, id: i64) -> Result<(), StoreError> {
        let reserved = self.pending(scope, id)?.size;
        let mut archive = BytesMut::new();
        for (start, chunk) in self.chunks(id)? {
            let at = archive.len() as u64;
            if start != at {
                return Err(StoreError::Gap { id, at });
            }
            archive.extend_from_slice(&chunk);
        }
        let uploaded = archive.len() as u64;
        if let Some(reserved) = reserved.filter(|s| *s != uploaded) {
            return Err(StoreError::Size {
                id,
                uploaded,
                reserved,
            });
        }
        disk::write_atomically(&self.archives.join(id.to_string()), &archive)?;
        if let Some(entry) = self.index.entries.get_mut(&id) {
            entry.committed = true;
        }
        if let Err(e) = self.save() {
            if let Some(entry) = self.index.entries.get_mut(&id) {
                entry.committed = false;
            }
            return Err(e);
        }
        // The chunks are in the archive now; leftovers only take space.
        let _ = std::fs::remove_dir_all(self.uploads.join(id.to_string()));
        Ok(())
    }

    /// A committed entry's bytes.
    pub fn archive(&self, scope: Scope<'_>, id: i64) -> Result<Bytes, StoreError> {
        self.index
            .entries
            .get(&id)
            .filter(|e| e.committed && e.readable_by(scope))
            .ok_or(StoreError::NotFound(id))?;
        Ok(Bytes::from(disk::read(
            &self.archives.join(id.to_string()),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: Scope<'static> = Scope {
        repo: "faro/app",
        write_isolation_key: "",
    };

    fn committed(store: &mut Store, scope: Scope<'_>, key: &str, data: &[u8]) -> i64 {
        let id = store
            .reserve(scope, key, "v1", Some(data.len() as u64))
            .unwrap();
        store.upload(scope, id, 0, data).unwrap();
        store.commit(scope, id).unwrap();
        id
    }

    #[test]
    fn exact_key_first_then_the_newest_prefix_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let exact = committed(&mut store, APP, "deps-linux", b"a");
        let newer = committed(&mut store, APP, "deps-linux-2", b"b");
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            store.find(APP, &keys(&["deps-linux"]), "v1"),
            Some((exact, "deps-linux".into()))
        );
        assert_eq!(
            store.find(APP, &keys(&["nothing", "deps-"]), "v1"),
            Some((newer, "deps-linux-2".into()))
        );
        assert_eq!(store.find(APP, &keys(&["deps-linux"]), "v2"), None);
        let other = Scope {
            repo: "faro/other",
            write_isolation_key: "",
        };
        assert_eq!(store.find(other, &keys(&["deps-linux"]), "v1"), None);
        assert_eq!(
            store.archive(other, exact),
            Err(StoreError::NotFound(exact))
        );
    }

    #[test]
    fn chunks_must_join_without_gaps_to_the_reserved_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = store.reserve(APP, "k", "v1", Some(6)).unwrap();
        assert_eq!(store.reserve(APP, "k", "v1", None), Err(StoreError::Exists));
        store.upload(APP, id, 3, b"def").unwrap();
        assert_eq!(store.commit(APP, id), Err(StoreError::Gap { id, at: 0 }));
        assert_eq!(store.archive(APP, id), Err(StoreError::NotFound(id)));
        store.upload(APP, id, 0, b"abc").unwrap();
        store.commit(APP, id).unwrap();
        assert_eq!(
            store.archive(APP, id).unwrap(),
            Bytes::from_static(b"abcdef")
        );
        assert_eq!(store.commit(APP, id), Err(StoreError::Committed(id)));
        assert_eq!(
            store.upload(APP, id, 6, b"g"),
            Err(StoreError::Committed(id))
        );
        let short = store.reserve(APP, "short", "v1", Some(9)).unwrap();
        store.upload(APP, short, 0, b"abc").unwrap();
        assert!(matches!(
            store.commit(APP, short),
            Err(StoreError::Size { uploaded: 3, .. })
        ));
    }

    #[test]
    fn an_isolated_write_is_read_by_its_own_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let pr = Scope {
            repo: "faro/app",
            write_isolation_key: "pr-3",
        };
        let id = committed(&mut store, pr, "k", b"x");
        assert_eq!(store.find(APP, &["k".into()], "v1"), None);
        assert_eq!(store.find(pr, &["k".into()], "v1"), Some((id, "k".into())));
        let shared = committed(&mut store, APP, "shared", b"y");
        assert_eq!(
            store.find(pr, &["shared".into()], "v1"),
            Some((shared, "shared".into()))
        );
    }

    /// The entries are files under the directory: a server started again on it (a new
    /// pod on the same volume) finds and serves what the last one committed, and goes on
    /// with the ids and with an upload it had not committed.
    #[test]
    fn entries_are_kept_under_dir_and_outlive_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let (saved, pending) = {
            let mut store = Store::open(dir.path()).unwrap();
            let saved = committed(&mut store, APP, "deps", b"kept on disk");
            let pending = store.reserve(APP, "half", "v1", Some(4)).unwrap();
            store.upload(APP, pending, 0, b"ha").unwrap();
            (saved, pending)
        };
        assert!(dir.path().join("cache").is_dir());
        assert!(dir.path().join("index.json").is_file());
        assert_eq!(
            std::fs::read(dir.path().join(format!("cache/archives/{saved}"))).unwrap(),
            b"kept on disk"
        );

        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.find(APP, &["deps".into()], "v1"),
            Some((saved, "deps".into()))
        );
        assert_eq!(
            store.archive(APP, saved).unwrap(),
            Bytes::from_static(b"kept on disk")
        );
        store.upload(APP, pending, 2, b"lf").unwrap();
        store.commit(APP, pending).unwrap();
        assert_eq!(
            store.archive(APP, pending).unwrap(),
            Bytes::from_static(b"half")
        );
        assert!(!dir.path().join(format!("cache/uploads/{pending}")).exists());
        let next = store.reserve(APP, "next", "v1", None).unwrap();
        assert!(next > pending, "ids go on from the index: {next}");
    }

    /// `D/cache` is the first thing made: a `D` where no directory can be made fails
    /// there, with Go's words, before anything is served. (A regular file stands for an
    /// unwritable directory, which root, running the tests, could write anyway.)
    #[test]
    fn a_dir_where_cache_cannot_be_made_fails_to_open_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("volume");
        std::fs::write(&file, "").unwrap();
        let error = Store::open(&file).err().expect("opened on a file");
        assert_eq!(
            error.to_string(),
            format!("mkdir {}: not a directory", file.display())
        );

        let dir = root.path().join("broken");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("index.json"), "not json").unwrap();
        let error = Store::open(&dir).err().expect("opened a broken index");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", dir.join("index.json").display())),
            "{error}"
        );
    }
}
