//! A repository by its id (`GET /repositories/{id}`, in every Forgejo release): the jobs
//! listing gives a job's `repo_id` only, and the repository's task listing is addressed by
//! owner and name. Nothing is cached here: the caller knows how long a name may be kept (a
//! rename or a transfer keeps the id).

use super::*;
use crate::RepositoryName;
use crate::types::RepositoryWire;

/// What a 403 on a repository by id means.
const REPOSITORY_FORBIDDEN: &str =
    "the token needs the read:repository scope to read a repository by its id";

/// What a 404 on a repository by id means.
const REPOSITORY_NOT_FOUND: &str = "no repository has that id, or the token cannot see it (Forgejo answers 404 for a private repository the token's user has no access to, and from Forgejo 15 for one a public-only or repository-specific token does not cover); the token needs the read:repository scope";

impl Client {
    /// `GET /repositories/{id}`: the owner and name of repository `id` (a job's `repo_id`).
    ///
    /// Reads Forgejo's `owner.login` and `name`, or `full_name` when those are missing; an
    /// answer for another id, or without usable names, is [`Error::InvalidResponse`]. A 404
    /// ([`Error::NotFound`]: no such id, or one the token cannot see) and a 403
    /// ([`Error::Forbidden`]) name the path, so the id, and the token scope
    /// `read:repository`. Each call sends one request (nothing is cached), counted as
    /// `get_repository` for the observer.
    pub async fn repository_by_id(&self, id: i64) -> Result<RepositoryName> {
        let id_segment = id.to_string();
        let operation =
            Operation::get("get_repository", REPOSITORY_FORBIDDEN).not_found(REPOSITORY_NOT_FOUND);
        let call = self.call(operation, &["repositories", &id_segment], None, None)?;
        let answer = self.send(&call).await?;
        let wire: RepositoryWire = self.decode(&call, &answer)?;
        if wire.id != id {
            let detail = format!("it describes repository {}, not {id}", wire.id);
            return Err(self.invalid(&call, &answer, detail));
        }
        wire.into_name().ok_or_else(|| {
            let detail = "it has neither an owner login and a name nor a full_name of the form owner/name that can address the repository";
            self.invalid(&call, &answer, detail.into())
        })
    }
}
