//! The cache server's entries, kept in memory: reserved, filled chunk by chunk, committed,
//! then found by key and version and downloaded. Each entry belongs to the repository that
//! reserved it (the signed `Forgejo-Cache-Repo`), so one repository never sees another's.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use http::StatusCode;

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
}

impl StoreError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Who asks: the signed repository and write isolation key.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The repository's full name.
    pub repo: &'a str,
    /// The write isolation key, empty when none.
    pub write_isolation_key: &'a str,
}

struct Entry {
    repo: String,
    write_isolation_key: String,
    key: String,
    version: String,
    size: Option<u64>,
    chunks: BTreeMap<u64, Bytes>,
    archive: Option<Bytes>,
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

/// All entries; ids grow, so a higher id is a newer entry.
#[derive(Default)]
pub struct Store {
    next_id: i64,
    entries: BTreeMap<i64, Entry>,
}

impl Store {
    /// The newest committed entry of `version` matching the first key that matches:
    /// exactly, else as a prefix. Returns its id and key.
    pub fn find(&self, scope: Scope<'_>, keys: &[String], version: &str) -> Option<(i64, String)> {
        let candidates = || {
            self.entries.iter().rev().filter(|(_, e)| {
                e.archive.is_some() && e.version == version && e.readable_by(scope)
            })
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
        let taken = self.entries.values().any(|e| {
            e.repo == scope.repo
                && e.write_isolation_key == scope.write_isolation_key
                && e.key == key
                && e.version == version
        });
        if taken {
            return Err(StoreError::Exists);
        }
        self.next_id += 1;
        self.entries.insert(
            self.next_id,
            Entry {
                repo: scope.repo.to_owned(),
                write_isolation_key: scope.write_isolation_key.to_owned(),
                key: key.to_owned(),
                version: version.to_owned(),
                size,
                chunks: BTreeMap::new(),
                archive: None,
            },
        );
        Ok(self.next_id)
    }

    fn pending(&mut self, scope: Scope<'_>, id: i64) -> Result<&mut Entry, StoreError> {
        let entry = self
            .entries
            .get_mut(&id)
            .filter(|e| e.repo == scope.repo)
            .ok_or(StoreError::NotFound(id))?;
        if entry.archive.is_some() {
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
        chunk: Bytes,
    ) -> Result<(), StoreError> {
        self.pending(scope, id)?.chunks.insert(start, chunk);
        Ok(())
    }

    /// Joins the chunks into the archive; they must run from 0 without gaps and make the
    /// reserved size when one was given.
    pub fn commit(&mut self, scope: Scope<'_>, id: i64) -> Result<(), StoreError> {
        let entry = self.pending(scope, id)?;
        let mut archive = BytesMut::new();
        for (start, chunk) in &entry.chunks {
            let at = archive.len() as u64;
            if *start != at {
                return Err(StoreError::Gap { id, at });
            }
            archive.extend_from_slice(chunk);
        }
        let uploaded = archive.len() as u64;
        if let Some(reserved) = entry.size.filter(|s| *s != uploaded) {
            return Err(StoreError::Size {
                id,
                uploaded,
                reserved,
            });
        }
        entry.chunks.clear();
        entry.archive = Some(archive.freeze());
        Ok(())
    }

    /// A committed entry's bytes.
    pub fn archive(&self, scope: Scope<'_>, id: i64) -> Result<Bytes, StoreError> {
        self.entries
            .get(&id)
            .filter(|e| e.readable_by(scope))
            .and_then(|e| e.archive.clone())
            .ok_or(StoreError::NotFound(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: Scope<'static> = Scope {
        repo: "faro/app",
        write_isolation_key: "",
    };

    fn committed(store: &mut Store, scope: Scope<'_>, key: &str, data: &'static [u8]) -> i64 {
        let id = store
            .reserve(scope, key, "v1", Some(data.len() as u64))
            .unwrap();
        store
            .upload(scope, id, 0, Bytes::from_static(data))
            .unwrap();
        store.commit(scope, id).unwrap();
        id
    }

    #[test]
    fn exact_key_first_then_the_newest_prefix_match() {
        let mut store = Store::default();
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
        let mut store = Store::default();
        let id = store.reserve(APP, "k", "v1", Some(6)).unwrap();
        assert_eq!(store.reserve(APP, "k", "v1", None), Err(StoreError::Exists));
        store
            .upload(APP, id, 3, Bytes::from_static(b"def"))
            .unwrap();
        assert_eq!(store.commit(APP, id), Err(StoreError::Gap { id, at: 0 }));
        store
            .upload(APP, id, 0, Bytes::from_static(b"abc"))
            .unwrap();
        store.commit(APP, id).unwrap();
        assert_eq!(
            store.archive(APP, id).unwrap(),
            Bytes::from_static(b"abcdef")
        );
        assert_eq!(store.commit(APP, id), Err(StoreError::Committed(id)));
        let short = store.reserve(APP, "short", "v1", Some(9)).unwrap();
        store
            .upload(APP, short, 0, Bytes::from_static(b"abc"))
            .unwrap();
        assert!(matches!(
            store.commit(APP, short),
            Err(StoreError::Size { uploaded: 3, .. })
        ));
    }

    #[test]
    fn an_isolated_write_is_read_by_its_own_key_only() {
        let mut store = Store::default();
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
}
