//! Registry credentials as cluster objects (`berth registry login`).
//!
//! The servers use them to pin a tag to its digest when a deployment
//! starts; agents fetch the one for the registry they pull from. The
//! password is never logged or printed: [`Secret`]'s `Debug` hides it,
//! and listings carry only the registry and user name. The servers seal
//! it (AES-256-GCM, with a key kept outside the state) before proposing
//! it, so the log, the state and its snapshots hold only ciphertext.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Outcome};

/// Longest registry name, user name or password accepted.
pub const MAX_FIELD: usize = 4096;
/// Most registries the cluster keeps credentials for.
pub const MAX_REGISTRIES: usize = 256;

/// A string that must not show up in logs: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
}

/// A change to the stored registry credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    /// Store (or replace) the credentials for `registry` (`host[:port]`).
    Login {
        /// `host[:port]`.
        registry: String,
        /// The credentials.
        login: RegistryLogin,
    },
    /// Forget the credentials for `registry`.
    Logout {
        /// `host[:port]`.
        registry: String,
    },
}

/// Checks a login's fields; the error names the one that is wrong.
pub fn check_login(registry: &str, login: &RegistryLogin) -> Result<(), String> {
    let probe = format!("{registry}/x:y");
    match berth_model::image::ImageRef::parse(&probe) {
        Ok(r) if r.registry.as_deref() == Some(registry) => {}
        _ => {
            return Err(format!(
                "registry: {registry:?} is not a registry host (host[:port], e.g. \
                 registry.example.com or localhost:5000)"
            ));
        }
    }
    if login.username.is_empty() || login.username.len() > MAX_FIELD {
        return Err(format!("username: must be 1-{MAX_FIELD} bytes"));
    }
    if login.username.contains(':') {
        return Err("username: may not contain ':'".into());
    }
    // Sealed, a password grows to a little over twice its size.
    let max = if login.password.0.starts_with("sealed:") {
        3 * MAX_FIELD
    } else {
        MAX_FIELD
    };
    if login.password.0.is_empty() || login.password.0.len() > max {
        return Err(format!("password: must be 1-{MAX_FIELD} bytes"));
    }
    Ok(())
}

impl ClusterState {
    pub(crate) fn apply_registry(&mut self, cmd: RegistryCommand) -> Outcome {
        match cmd {
            RegistryCommand::Login { registry, login } => {
                if let Err(e) = check_login(&registry, &login) {
                    return Outcome::Rejected(e);
                }
                if !self.registries.contains_key(&registry)
                    && self.registries.len() >= MAX_REGISTRIES
                {
                    return Outcome::Rejected(format!(
                        "registry: the cluster already keeps credentials for {MAX_REGISTRIES} \
                         registries; log out of one first"
                    ));
                }
                self.registries.insert(registry, login);
                Outcome::Ok
            }
            RegistryCommand::Logout { registry } => {
                if self.registries.remove(&registry).is_some() {
                    Outcome::Ok
                } else {
                    Outcome::Rejected(format!("registry: not logged in to {registry}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(u: &str, p: &str) -> RegistryLogin {
        RegistryLogin {
            username: u.into(),
            password: Secret(p.into()),
        }
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let cmd = RegistryCommand::Login {
            registry: "localhost:5000".into(),
            login: login("alice", "hunter2"),
        };
        assert!(!format!("{cmd:?}").contains("hunter2"));
    }

    #[test]
    fn login_and_logout() {
        let mut s = ClusterState::default();
        let ok = s.apply_registry(RegistryCommand::Login {
            registry: "localhost:5000".into(),
            login: login("alice", "pw"),
        });
        assert_eq!(ok, Outcome::Ok);
        assert_eq!(s.registries["localhost:5000"].username, "alice");
        for (reg, l, field) in [
            ("busybox", login("a", "b"), "registry"),
            ("localhost:5000", login("", "b"), "username"),
            ("localhost:5000", login("a:b", "b"), "username"),
            ("localhost:5000", login("a", ""), "password"),
        ] {
            let out = s.apply_registry(RegistryCommand::Login {
                registry: reg.into(),
                login: l,
            });
            assert!(
                matches!(&out, Outcome::Rejected(e) if e.starts_with(field)),
                "{out:?}"
            );
        }
        let out = s.apply_registry(RegistryCommand::Logout {
            registry: "localhost:5000".into(),
        });
        assert_eq!(out, Outcome::Ok);
        assert!(s.registries.is_empty());
        let out = s.apply_registry(RegistryCommand::Logout {
            registry: "localhost:5000".into(),
        });
        assert!(matches!(out, Outcome::Rejected(_)));
    }
}
