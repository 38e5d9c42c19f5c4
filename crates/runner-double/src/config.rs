//! The `-c FILE` config: the `cache` keys the operator writes (docs/forgejo.md, "Caches"); every
//! other key of the real runner's config is accepted and ignored.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the config file could not be used. No variant carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not there (the message the real runner prints).
    #[error("open {0}: no such file or directory")]
    Missing(PathBuf),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// `cache.secret_url` is not a `file:` URL.
    #[error("{path}: cache.secret_url: only file: URLs are supported")]
    SecretScheme { path: PathBuf },
    /// The secret file named by `cache.secret_url` could not be read.
    #[error("{path}: reading the cache secret file {file}: {source}")]
    SecretFile {
        path: PathBuf,
        file: PathBuf,
        source: std::io::Error,
    },
}

/// The shared cache secret (HMAC key). Its `Debug` is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes, taken verbatim (a trailing newline is part of it).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    // By hand: serde's default "invalid type" errors quote a number or bool they refuse,
    // which would print an inline secret such as `secret: 12345`. Any scalar is taken.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The config file; only `cache` matters to the double.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The `cache` section.
    pub cache: CacheConfig,
}

/// The `cache` section, for the runner's proxy and for `cache-server`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// `cache.enabled` (default true).
    pub enabled: Option<bool>,
    /// `cache.external_server`: the shared server's URL.
    pub external_server: Option<String>,
    /// `cache.secret`, or after loading the content of `cache.secret_url`.
    pub secret: Option<Secret>,
    /// `cache.secret_url`: `file:` URL of the secret.
    pub secret_url: Option<String>,
    /// `cache.host`: the host put in the proxy's URL (`cache-server`: only printed).
    pub host: Option<String>,
    /// `cache.port`: the server's port.
    pub port: Option<u16>,
    /// `cache.proxy_port`: the runner's cache proxy's port (0 or absent: a free one).
    pub proxy_port: Option<u16>,
    /// `cache.actions_cache_url_override`: the proxy's URL given to steps instead of
    /// `http://{host}:{proxy_port}`.
    pub actions_cache_url_override: Option<String>,
    /// `cache.dir`: where the server keeps its entries.
    pub dir: Option<PathBuf>,
}

impl CacheConfig {
    /// Whether the cache is on (`cache.enabled`, true when absent).
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The external server, if one is set and not empty.
    pub fn external_server(&self) -> Option<&str> {
        self.external_server.as_deref().filter(|s| !s.is_empty())
    }
}

impl Config {
    /// Reads and parses `path`, and reads the secret `cache.secret_url` names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        if let Some(url) = config.cache.secret_url.as_deref().filter(|u| !u.is_empty()) {
            let file = secret_file(url).ok_or_else(|| ConfigError::SecretScheme {
                path: path.to_owned(),
            })?;
            // Read verbatim: both roles read the same file, so a newline is in both keys.
            let bytes = std::fs::read(&file).map_err(|source| ConfigError::SecretFile {
                path: path.to_owned(),
                file: file.clone(),
                source,
            })?;
            config.cache.secret = Some(Secret::new(bytes));
        }
        Ok(config)
    }

    /// Parses the YAML text; an empty file is the default config.
    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
}

/// The path of a `file:` URL (`file:/p` or `file:///p`), or None for another scheme.
fn secret_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    Some(PathBuf::from(rest.strip_prefix("//").unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_pod_config_parses_and_unknown_keys_are_ignored() {
        let config = Config::parse(
            "log:\n  level: info\ncache:\n  enabled: true\n  external_server: \"http://10.96.0.12:4000/\"\n  host: \"172.17.0.1\"\n  other: 1\n",
        )
        .unwrap();
        assert!(config.cache.enabled());
        assert_eq!(
            config.cache.external_server(),
            Some("http://10.96.0.12:4000/")
        );
        assert_eq!(config.cache.host.as_deref(), Some("172.17.0.1"));
        assert!(config.cache.secret.is_none());
        assert_eq!(config.cache.proxy_port, None);
        let config = Config::parse(
            "cache:\n  proxy_port: 4001\n  actions_cache_url_override: \"http://proxy:4001\"\n",
        )
        .unwrap();
        assert_eq!(config.cache.proxy_port, Some(4001));
        assert_eq!(
            config.cache.actions_cache_url_override.as_deref(),
            Some("http://proxy:4001")
        );
    }

    #[test]
    fn server_pod_config_parses() {
        let config = Config::parse(
            "log:\n  level: info\ncache:\n  dir: /var/lib/c\n  port: 4000\n  host: \"172.17.0.1\"\n  other: 1\n",
        )
        .unwrap();
        assert_eq!(config.cache.port, Some(4000));
        assert_eq!(config.cache.dir, Some(PathBuf::from("/var/lib/c")));
        assert_eq!(config.cache.host.as_deref(), Some("172.17.0.1"));
        assert!(config.cache.secret.is_none());
        assert!(Config::parse("").unwrap().cache.port.is_none());
    }

    #[test]
    fn cache_is_enabled_by_default_and_an_empty_file_is_the_default() {
        assert!(Config::parse("").unwrap().cache.enabled());
        assert!(
            Config::parse("runner:\n  capacity: 1\n")
                .unwrap()
                .cache
                .enabled()
        );
        assert!(
            !Config::parse("cache:\n  enabled: false\n")
                .unwrap()
                .cache
                .enabled()
        );
    }

    #[test]
    fn an_inline_secret_of_any_scalar_is_taken_and_never_shown() {
        let config = Config::parse("cache:\n  secret: 12345\n  port: 4000\n").unwrap();
        let secret = config.cache.secret.unwrap();
        assert_eq!(secret.bytes(), b"12345");
        assert!(!format!("{secret:?}").contains("12345"));
        let error = Config::parse("cache:\n  secret: [12345]\n").unwrap_err();
        assert!(!error.contains("12345"), "{error}");
    }

    #[test]
    fn secret_url_takes_file_urls_and_reads_them_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let config_path = dir.path().join("config.yaml");
        for url in [
            format!("file:{}", secret.display()),
            format!("file://{}", secret.display()),
        ] {
            std::fs::write(&config_path, format!("cache:\n  secret_url: \"{url}\"\n")).unwrap();
            let config = Config::load(&config_path).unwrap();
            assert_eq!(config.cache.secret.unwrap().bytes(), b"s3cr3t\n");
        }
        std::fs::write(&config_path, "cache:\n  secret_url: \"https://x/secret\"\n").unwrap();
        assert!(matches!(
            Config::load(&config_path),
            Err(ConfigError::SecretScheme { .. })
        ));
        assert!(matches!(
            Config::load(&dir.path().join("absent.yaml")),
            Err(ConfigError::Missing(_))
        ));
    }
}
