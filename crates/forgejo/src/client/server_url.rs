//! The server URL a client is made for: validated, normalized, and never a link-local or
//! metadata address.

use super::*;

/// Refuses a URL whose host is a link-local or metadata IP address (names are checked when
/// resolved, by the transport's resolver).
pub(super) fn refuse_link_local(url: &Url) -> Result<()> {
    let address = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if transport::is_link_local_or_metadata(address) {
        return Err(Error::ForbiddenAddress {
            host: url.host_str().unwrap_or_default().to_owned(),
            address,
        });
    }
    Ok(())
}

/// Validates and normalizes the server URL (http/https, a host, no credentials, query or fragment).
pub(super) fn parse_server(server: &str) -> Result<Url> {
    let trimmed = server.trim();
    let invalid = |url: String, reason: &str| Error::InvalidUrl {
        url,
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(trimmed).map_err(|e| {
        let shown = if trimmed.contains('@') {
            "(not shown: it may contain credentials)".to_owned()
        } else {
            trimmed.chars().take(200).collect()
        };
        invalid(shown, &format!("it does not parse ({e})"))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(invalid(
            url.to_string(),
            "it must not contain credentials (the token comes from the Secret)",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(url.to_string(), "the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(url.to_string(), "it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            url.to_string(),
            "it must not have a query or fragment",
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}
