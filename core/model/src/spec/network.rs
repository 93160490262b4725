//! How an app's instances are networked: on the host's network, each in
//! a network namespace of its own on the node's bridge (through CNI), or
//! with no network; and the namespace its names live in.

use serde::{Deserialize, Serialize};

use super::{AppSpec, FieldError, quoted, valid_name};

/// An app's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network (ports are host ports).
    Host,
    /// A network namespace per instance on the node's bridge, set up by
    /// the CNI plugins; ports are container ports, mapped to host ports
    /// where asked.
    Bridge,
    /// A network namespace with only loopback.
    None,
}

impl Network {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::Bridge => "bridge",
            Network::None => "none",
        }
    }
}

/// The namespace apps live in when the spec names none.
pub const DEFAULT_NAMESPACE: &str = "default";

pub(super) fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

pub(super) fn is_default_namespace(s: &str) -> bool {
    s == DEFAULT_NAMESPACE
}

impl AppSpec {
    /// The network mode in force: the spec's, else bridge when a port has
    /// a container port, else host.
    pub fn network(&self) -> Network {
        self.network.unwrap_or_else(|| {
            if self.ports.iter().any(|p| p.container.is_some()) {
                Network::Bridge
            } else {
                Network::Host
            }
        })
    }

    /// The rules of `network`, `namespace` and the ports under them.
    pub(super) fn validate_network(&self, p: &mut Vec<FieldError>) {
        if !valid_name(&self.namespace) {
            p.push(FieldError::new(
                "namespace",
                format!(
                    "{} is not a valid namespace ([a-z0-9-], 1-63 characters, starting and ending with a letter or digit)",
                    quoted(&self.namespace)
                ),
            ));
        }
        let mode = self.network();
        if mode == Network::None && !self.ports.is_empty() {
            p.push(FieldError::new("ports", "network: none has no ports"));
            return;
        }
        let mut containers: std::collections::BTreeMap<u16, usize> = Default::default();
        for (i, port) in self.ports.iter().enumerate() {
            match (mode, port.host, port.container) {
                (Network::Host, None, _) => p.push(FieldError::new(
                    format!("ports[{i}].host"),
                    "required with network: host (the port the app listens on)",
                )),
                (Network::Host, _, Some(_)) => p.push(FieldError::new(
                    format!("ports[{i}].container"),
                    "only with network: bridge (on the host's network the app listens on its host port)",
                )),
                (Network::Bridge, _, None) => p.push(FieldError::new(
                    format!("ports[{i}].container"),
                    "required with network: bridge (the port the app listens on in its own network namespace)",
                )),
                (Network::Bridge, _, Some(0)) => p.push(FieldError::new(
                    format!("ports[{i}].container"),
                    "must be between 1 and 65535",
                )),
                (Network::Bridge, _, Some(c)) => {
                    if let Some(first) = containers.get(&c) {
                        p.push(FieldError::new(
                            format!("ports[{i}].container"),
                            format!("{c} is already used by ports[{first}]"),
                        ));
                    } else {
                        containers.insert(c, i);
                    }
                }
                _ => {}
            }
        }
    }
}
