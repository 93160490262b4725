//! How an app's containers are confined: `user` (overrides the image's
//! `User`), `read_only_root`, and `seccomp` (`default`: Docker's default
//! profile; `unconfined`: the explicit opt-out).

use serde::{Deserialize, Serialize};

use super::{AppSpec, FieldError, quoted};

/// Longest `user`, in characters.
pub const MAX_USER: usize = 64;

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// The default profile (what Docker's default refuses is refused).
    #[default]
    Default,
    /// No seccomp filter at all.
    Unconfined,
}

pub(super) fn is_default_seccomp(s: &Seccomp) -> bool {
    *s == Seccomp::Default
}

impl AppSpec {
    pub(super) fn validate_security(&self, p: &mut Vec<FieldError>) {
        if let Some(u) = &self.user {
            let ok = !u.is_empty()
                && u.len() <= MAX_USER
                && u.split(':').count() <= 2
                && u.split(':').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
                });
            if !ok {
                p.push(FieldError::new(
                    "user",
                    format!(
                        "{} is not a user (uid, uid:gid, name or name:group; at most {MAX_USER} characters)",
                        quoted(u)
                    ),
                ));
            }
        }
    }
}
