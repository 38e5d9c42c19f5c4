//! The volume shape the controller's pods share: one key of a Secret as a file (runner
//! credentials, the cache's HMAC secret).

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume};

/// A volume of one key of the Secret `secret`, as the file `path`, with `mode`.
pub(crate) fn secret_file_volume(
    volume: &str,
    secret: &str,
    key: &str,
    path: &str,
    mode: i32,
) -> Volume {
    Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: path.to_owned(),
                mode: None,
            }]),
            default_mode: Some(mode),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}
