//! Repositories by id: the stand-in knows a repository once something names it (a job's
//! `owner/repo`, a request's path, a runner's scope), when [`State::repo_id`] gives it the
//! next id, as Forgejo's `GET /repositories/{id}` finds one.

use super::State;

/// A repository the stand-in knows: its id and names, and its owner's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepositoryRecord {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
}

impl State {
    /// The repository whose id is `id`, if one was given it.
    pub fn repository(&self, id: i64) -> Option<RepositoryRecord> {
        // Few repositories, looked up once per name by the operator: a scan is enough.
        let ((owner, name), _) = self.repo_ids.iter().find(|(_, repo_id)| **repo_id == id)?;
        Some(RepositoryRecord {
            id,
            owner_id: self.owner_ids.get(owner).copied().unwrap_or_default(),
            owner: owner.clone(),
            name: name.clone(),
        })
    }
}
