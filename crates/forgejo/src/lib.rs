//! forgejo
