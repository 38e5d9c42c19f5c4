//! `GET /api/v1/repositories/{id}` (every Forgejo release, `repo.GetByID`): a repository the
//! stand-in knows, in Forgejo's `Repository` shape; 404 for an id it does not know or one
//! whose owner does not exist, as Forgejo answers for a repository the token cannot see.

use super::super::state::RepositoryRecord;
use super::*;

/// The id a path names (`repositories/{id}`), as sent.
pub(super) fn parse_repository_path(segments: &[String]) -> Option<&str> {
    match segments {
        [collection, id] if collection == "repositories" => Some(id),
        _ => None,
    }
}

/// Serves a repository request whose token was checked.
pub(super) fn serve(state: &State, method: &Method, id: &str, access: Access) -> Reply {
    if method != Method::GET {
        return method_not_allowed(state);
    }
    // Forgejo reads an id that is not a number as 0, which no repository has.
    let found = id.parse::<i64>().ok().and_then(|id| state.repository(id));
    match found {
        Some(repository) if state.owner_exists(&repository.owner) => Reply::json(
            StatusCode::OK,
            repository_json(&state.base_url, &repository, access == Access::Full),
        ),
        _ => not_found(state),
    }
}

/// Forgejo's `Repository` JSON: the fields that name it, and the cheap ones it always sends
/// (the stand-in's repositories are public, not forks, mirrors or templates).
fn repository_json(base_url: &str, repository: &RepositoryRecord, write: bool) -> Value {
    let RepositoryRecord {
        id,
        owner_id,
        owner,
        name,
    } = repository;
    let full_name = format!("{owner}/{name}");
    json!({
        "id": id,
        "owner": {
            "id": owner_id,
            "login": owner,
            "login_name": "",
            "full_name": "",
            "username": owner,
        },
        "name": name,
        "full_name": full_name,
        "description": "",
        "empty": false,
        "private": false,
        "fork": false,
        "template": false,
        "parent": null,
        "mirror": false,
        "archived": false,
        "internal": false,
        "html_url": format!("{base_url}/{full_name}"),
        "url": format!("{base_url}/api/v1/repos/{full_name}"),
        "clone_url": format!("{base_url}/{full_name}.git"),
        "default_branch": "main",
        "permissions": { "admin": write, "push": write, "pull": true },
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::webhooks::Webhooks;
    use super::super::super::{StandInConfig, StandInJob};
    use super::*;

    /// A state whose owners are `owners` (`None`: every name exists).
    fn state(owners: Option<&[&str]>) -> State {
        let config = StandInConfig {
            owners: owners.map(|owners| owners.iter().map(|o| (*o).to_owned()).collect()),
            ..StandInConfig::with_token("11.0.4+gitea-1.22.0", "t")
        };
        let (webhooks, _dispatcher) = Webhooks::new();
        State::new(config, "http://forgejo.test".into(), webhooks)
    }

    fn get(state: &mut State, id: &str) -> (StatusCode, Value) {
        let path = format!("/api/v1/repositories/{id}");
        let reply = route(state, &Method::GET, &path, None, Access::ReadOnly, b"");
        (reply.status, reply.json.unwrap_or_default())
    }

    #[test]
    fn a_known_repository_reads_as_forgejos_repository() {
        let mut state = state(None);
        let app = state.add_job(StandInJob::new("acme/app", "build", &["docker"]));
        let web = state.add_job(StandInJob::new("umbrella/web", "build", &["docker"]));

        let (status, json) = get(&mut state, &web.repo_id.to_string());
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["id"], web.repo_id);
        assert_eq!(
            (json["owner"]["login"].as_str(), json["name"].as_str()),
            (Some("umbrella"), Some("web"))
        );
        assert_eq!(json["owner"]["id"], web.owner_id);
        assert_eq!(json["full_name"], "umbrella/web");
        assert_eq!(json["html_url"], "http://forgejo.test/umbrella/web");
        assert_eq!(json["private"], false);
        assert_eq!(json["permissions"]["push"], false, "a read-only token");
        assert_eq!(
            get(&mut state, &app.repo_id.to_string()).1["full_name"],
            "acme/app"
        );
    }

    #[test]
    fn an_unknown_id_a_missing_owner_or_another_method_is_refused() {
        let mut state = state(Some(&["acme"]));
        let app = state.add_job(StandInJob::new("acme/app", "build", &["docker"]));
        let ghost = state.add_job(StandInJob::new("ghost/app", "build", &["docker"]));

        assert_eq!(get(&mut state, &app.repo_id.to_string()).0, StatusCode::OK);
        for id in [
            ghost.repo_id.to_string(),
            "999".into(),
            "0".into(),
            "app".into(),
        ] {
            assert_eq!(get(&mut state, &id).0, StatusCode::NOT_FOUND, "{id}");
        }
        let path = format!("/api/v1/repositories/{}", app.repo_id);
        let delete = route(&mut state, &Method::DELETE, &path, None, Access::Full, b"");
        assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
        let anonymous = route(&mut state, &Method::GET, &path, None, Access::Missing, b"");
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
}
