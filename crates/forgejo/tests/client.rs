//! The client against the Forgejo stand-in, over real HTTP on loopback.
//!
//! One test binary (modules below) keeps link time down.

mod client {
    pub mod errors;
    pub mod fixtures;
    pub mod hooks;
    pub mod jobs;
    pub mod repositories;
    pub mod runners;
    pub mod tasks;
}

use std::time::Duration;

use forgejo::{Client, ClientOptions, Token};
use forgejo_stand_in::{StandIn, StandInConfig};

/// The API token every test uses; it must never show up in an error.
pub const TOKEN: &str = "f0rgej0-api-t0ken-5ecret-0123456789abcdef";

pub const V11: &str = "11.0.4+gitea-1.22.0";
pub const V13: &str = "13.0.2+gitea-1.22.0";
pub const V14: &str = "14.0.1+gitea-1.22.0";
pub const V15: &str = "15.0.3+gitea-1.22.0";

/// Fast retries so tests do not wait on backoff.
pub fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        max_attempts: 3,
        max_retry_time: Duration::from_secs(10),
        retry_base_delay: Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

/// A stand-in behaving as `version`, and a client for it.
pub fn start(version: &str) -> (StandIn, Client) {
    start_with(StandInConfig::with_token(version, TOKEN), options())
}

/// A stand-in with `config`, and a client with `options`.
pub fn start_with(config: StandInConfig, options: ClientOptions) -> (StandIn, Client) {
    let stand_in = StandIn::start(config);
    let client = Client::new(&stand_in.url(), Token::new(TOKEN), options).unwrap();
    (stand_in, client)
}

/// Handles the operator keeps across tasks must be cheap to clone and thread-safe.
#[test]
fn client_stand_in_and_error_are_send_sync_and_the_handles_clone() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn error_like<T: std::error::Error + Send + Sync + 'static>() {}
    shareable::<Client>();
    shareable::<StandIn>();
    shareable::<ClientOptions>();
    error_like::<forgejo::Error>();
}

/// `["a", "b"]` as owned strings.
pub fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The paths of the requests the stand-in received.
pub fn paths(stand_in: &StandIn) -> Vec<String> {
    stand_in.requests().into_iter().map(|r| r.path).collect()
}
