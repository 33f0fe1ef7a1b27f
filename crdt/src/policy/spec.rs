//! Declarative policy descriptions and the registry of named custom policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::ClientId;
use crate::error::PolicyError;
use crate::policy::{ClientPriority, LastWriterWins, Manual, Max, MergePolicy, Min, SetUnion, Sum};

/// A policy as configuration and REST users describe it.
///
/// In JSON: `{"kind": "last_writer_wins"}`,
/// `{"kind": "client_priority", "ranking": ["admin", "tablet"]}`, `{"kind": "max"}`,
/// `{"kind": "custom", "name": "longest_text"}`, …
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    #[default]
    LastWriterWins,
    ClientPriority {
        ranking: Vec<ClientId>,
    },
    Max,
    Min,
    Sum,
    SetUnion,
    Manual,
    /// A policy registered by name in a [`PolicyRegistry`].
    Custom {
        name: String,
    },
}

impl PolicySpec {
    /// The policy this describes.
    ///
    /// # Errors
    ///
    /// [`PolicyError::UnknownCustom`] for a custom name `registry` does not know.
    pub fn build(&self, registry: &PolicyRegistry) -> Result<Arc<dyn MergePolicy>, PolicyError> {
        Ok(match self {
            PolicySpec::LastWriterWins => Arc::new(LastWriterWins),
            PolicySpec::ClientPriority { ranking } => {
                Arc::new(ClientPriority::new(ranking.iter().cloned()))
            }
            PolicySpec::Max => Arc::new(Max),
            PolicySpec::Min => Arc::new(Min),
            PolicySpec::Sum => Arc::new(Sum),
            PolicySpec::SetUnion => Arc::new(SetUnion),
            PolicySpec::Manual => Arc::new(Manual),
            PolicySpec::Custom { name } => registry.get(name)?,
        })
    }
}

/// Custom merge policies registered by name, so that configuration and REST users
/// can select them with [`PolicySpec::Custom`].
#[derive(Clone, Default)]
pub struct PolicyRegistry {
    policies: BTreeMap<String, Arc<dyn MergePolicy>>,
}

impl std::fmt::Debug for PolicyRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_set().entries(self.policies.keys()).finish()
    }
}

impl PolicyRegistry {
    /// An empty registry.
    pub fn new() -> PolicyRegistry {
        PolicyRegistry::default()
    }

    /// Registers `policy` under its own name.
    ///
    /// # Errors
    ///
    /// [`PolicyError::AlreadyRegistered`] when the name is taken.
    pub fn register(&mut self, policy: Arc<dyn MergePolicy>) -> Result<(), PolicyError> {
        let name = policy.name().to_owned();
        if self.policies.contains_key(&name) {
            return Err(PolicyError::AlreadyRegistered { name });
        }
        self.policies.insert(name, policy);
        Ok(())
    }

    /// The policy registered as `name`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::UnknownCustom`] when there is none.
    pub fn get(&self, name: &str) -> Result<Arc<dyn MergePolicy>, PolicyError> {
        self.policies
            .get(name)
            .cloned()
            .ok_or_else(|| PolicyError::UnknownCustom {
                name: name.to_owned(),
            })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Custom;
    use crate::policy::Resolution;
    use crate::value::Value;

    #[test]
    fn specs_read_from_json_and_build() {
        let registry = PolicyRegistry::new();
        for (json, name) in [
            (r#"{"kind":"last_writer_wins"}"#, "last_writer_wins"),
            (
                r#"{"kind":"client_priority","ranking":["admin"]}"#,
                "client_priority",
            ),
            (r#"{"kind":"max"}"#, "max"),
            (r#"{"kind":"min"}"#, "min"),
            (r#"{"kind":"sum"}"#, "sum"),
            (r#"{"kind":"set_union"}"#, "set_union"),
            (r#"{"kind":"manual"}"#, "manual"),
        ] {
            let spec: PolicySpec = serde_json::from_str(json).expect("valid spec");
            assert_eq!(spec.build(&registry).expect("builds").name(), name);
        }
    }

    #[test]
    fn custom_policies_are_found_by_name() {
        let mut registry = PolicyRegistry::new();
        let keep_first = Custom::new("keep_first", |_| Resolution::settled(Value::Null));
        registry
            .register(Arc::new(keep_first.clone()))
            .expect("new name");
        let spec = PolicySpec::Custom {
            name: "keep_first".into(),
        };
        assert_eq!(
            spec.build(&registry).expect("registered").name(),
            "keep_first"
        );
        assert_eq!(
            registry.register(Arc::new(keep_first)),
            Err(PolicyError::AlreadyRegistered {
                name: "keep_first".into()
            })
        );
        let unknown = PolicySpec::Custom {
            name: "nope".into(),
        };
        assert_eq!(
            unknown.build(&registry).err(),
            Some(PolicyError::UnknownCustom {
                name: "nope".into()
            })
        );
    }
}
