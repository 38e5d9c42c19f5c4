//! A repository as `GET /repositories/{id}` returns it (`modules/structs/repo.go`,
//! `Repository`), reduced to what addresses it: the jobs listing gives a job's `repo_id`
//! only, and a repository's task listing is at `repos/{owner}/{name}/…`.

use super::*;

/// A repository's id and the names that address it (`repos/{owner}/{name}/…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryName {
    /// The repository's id (a job's `repo_id`).
    pub id: i64,
    /// The user or organization that owns it (Forgejo's `owner.login`).
    pub owner: String,
    /// The repository's name.
    pub name: String,
}

impl RepositoryName {
    /// `owner/name`, as Forgejo's `full_name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// The wire shape: the fields read of Forgejo's `Repository` (it sends many more).
#[derive(Deserialize)]
pub(crate) struct RepositoryWire {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub owner: Option<OwnerWire>,
}

/// The wire shape of the repository's `owner` (Forgejo's `User`).
#[derive(Deserialize)]
pub(crate) struct OwnerWire {
    #[serde(default)]
    pub login: String,
}

impl RepositoryWire {
    /// The owner and name: `owner.login` and `name`, else `full_name` split at its `/`;
    /// `None` when neither gives two usable names.
    pub(crate) fn into_name(self) -> Option<RepositoryName> {
        let login = self.owner.map(|owner| owner.login).unwrap_or_default();
        let (owner, name) = if usable(&login) && usable(&self.name) {
            (login, self.name)
        } else {
            let (owner, name) = self.full_name.split_once('/')?;
            (owner.to_owned(), name.to_owned())
        };
        (usable(&owner) && usable(&name)).then_some(RepositoryName {
            id: self.id,
            owner,
            name,
        })
    }
}

/// Whether a name can be one path segment, as every Forgejo owner and repository name can:
/// not empty, not `.` or `..`, no `/` and no control characters.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: serde_json::Value) -> Option<RepositoryName> {
        serde_json::from_value::<RepositoryWire>(json)
            .unwrap()
            .into_name()
    }

    #[test]
    fn owner_login_and_name_are_read_and_full_name_is_the_fallback() {
        let both = read(serde_json::json!({
            "id": 77, "name": "app", "full_name": "acme/app",
            "owner": { "id": 12, "login": "acme", "full_name": "ACME Inc." },
            "private": true, "html_url": "https://code.example.com/acme/app",
        }));
        let expected = RepositoryName {
            id: 77,
            owner: "acme".into(),
            name: "app".into(),
        };
        assert_eq!(both, Some(expected.clone()));
        assert_eq!(expected.full_name(), "acme/app");
        assert_eq!(expected.to_string(), "acme/app");

        let no_owner =
            read(serde_json::json!({ "id": 77, "full_name": "acme/app", "owner": null }));
        assert_eq!(no_owner, Some(expected));
    }

    #[test]
    fn names_that_cannot_address_a_repository_are_refused() {
        for json in [
            serde_json::json!({ "id": 1 }),
            serde_json::json!({ "id": 1, "name": "app", "owner": { "login": "" } }),
            serde_json::json!({ "id": 1, "full_name": "acme" }),
            serde_json::json!({ "id": 1, "full_name": "acme/" }),
            serde_json::json!({ "id": 1, "full_name": "acme/a/b" }),
            serde_json::json!({ "id": 1, "name": "..", "owner": { "login": "acme" } }),
            serde_json::json!({ "id": 1, "name": "a\nb", "owner": { "login": "acme" } }),
        ] {
            assert_eq!(read(json.clone()), None, "{json}");
        }
        assert!(serde_json::from_str::<RepositoryWire>(r#"{"name":"app"}"#).is_err());
    }
}
