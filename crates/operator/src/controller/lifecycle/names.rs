//! Repository names by id: the jobs listing gives a job's `repo_id` only, and the metrics
//! and the task listing want `owner/name`. Read once per repository and process.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many names are read per reconcile; the rest wait for the next one.
const READS_PER_RECONCILE: usize = 10;
/// How long a name that could not be read is not asked again: Forgejo refused (the token
/// lacks `read:repository`, or cannot see the repository).
const REFUSED_RETRY: Duration = Duration::from_secs(600);
/// The same after any other failure.
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// More names than this are forgotten all at once (a bound, far above real use).
const MAX_NAMES: usize = 10_000;

/// A name, or when reading it last failed and when to try again.
#[derive(Debug, Clone)]
enum Name {
    Known(String),
    Failed { retry_at: Instant },
}

/// Repository names by (Forgejo server, repository id), shared by the pools.
#[derive(Debug, Default)]
pub struct RepositoryNames {
    names: Mutex<HashMap<(String, i64), Name>>,
}

impl RepositoryNames {
    /// The name (`owner/name`) of repository `id` on `server`, if known.
    pub fn get(&self, server: &str, id: i64) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        match names.get(&(server.to_owned(), id)) {
            Some(Name::Known(name)) => Some(name.clone()),
            _ => None,
        }
    }

    /// Makes the names of `ids` known: a repository-scope pool's jobs are all of its
    /// `repository`; others are read from Forgejo, a few per call.
    pub async fn resolve(
        &self,
        client: &forgejo::Client,
        server: &str,
        repository: Option<&str>,
        ids: &[i64],
    ) {
        let now = Instant::now();
        let unknown: Vec<i64> = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            if names.len() > MAX_NAMES {
                names.clear();
            }
            let mut unknown = HashSet::new();
            for &id in ids {
                let key = (server.to_owned(), id);
                match (names.get(&key), repository) {
                    (Some(Name::Known(_)), _) => {}
                    (_, Some(repository)) => {
                        names.insert(key, Name::Known(repository.to_owned()));
                    }
                    (Some(Name::Failed { retry_at }), None) if *retry_at > now => {}
                    _ => {
                        unknown.insert(id);
                    }
                }
            }
            unknown.into_iter().take(READS_PER_RECONCILE).collect()
        };
        for id in unknown {
            let name = match client.repository_by_id(id).await {
                Ok(name) => Name::Known(name.full_name()),
                Err(error) => {
                    let refused = matches!(
                        error,
                        forgejo::Error::Forbidden { .. } | forgejo::Error::NotFound { .. }
                    );
                    tracing::debug!(repo_id = id, %error, "job metrics: the repository's name cannot be read; its id labels its jobs");
                    let wait = if refused { REFUSED_RETRY } else { FAILED_RETRY };
                    Name::Failed {
                        retry_at: Instant::now() + wait,
                    }
                }
            };
            self.names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((server.to_owned(), id), name);
        }
    }
}
