//! Per-table access rules, applied to every read, query, pull and push a client
//! token makes. Admin keys reach everything.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use mobilesyncdb_crdt::Value;

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::config::AccessRule;
use crate::engine::{Database, Filter, FullAccess, Row, RowAccess};

/// The prefix of the durable settings holding access rules set through the API.
const SETTING_PREFIX: &str = "access/";

/// The rules of every table, changed at runtime by admins.
#[derive(Debug, Default)]
pub struct AccessRules {
    rules: RwLock<BTreeMap<String, AccessRule>>,
}

/// What a caller may do with one table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reach {
    /// Every row.
    All,
    /// Rows whose field at `position` holds `user`.
    Owned { position: usize },
    /// Nothing.
    None,
}

impl AccessRules {
    pub fn new(rules: BTreeMap<String, AccessRule>) -> AccessRules {
        AccessRules {
            rules: RwLock::new(rules),
        }
    }

    pub fn get(&self, table: &str) -> Option<AccessRule> {
        self.read().get(table).cloned()
    }

    /// Rules from the configuration, overlaid with the rules set through the
    /// API that `db` kept (those are later decisions, so they win).
    pub fn restored(rules: BTreeMap<String, AccessRule>, db: &Database) -> AccessRules {
        let mut rules = rules;
        for (key, value) in db.settings(SETTING_PREFIX) {
            let table = &key[SETTING_PREFIX.len()..];
            match serde_json::from_str(&value) {
                Ok(rule) => {
                    rules.insert(table.to_owned(), rule);
                }
                Err(error) => {
                    tracing::warn!(table, %error, "a kept access rule cannot be read; the configured one applies");
                }
            }
        }
        AccessRules::new(rules)
    }

    /// Sets a table's rule, kept with the data so it survives a restart.
    ///
    /// # Errors
    ///
    /// The engine's error when the data directory refuses writes; the rule is
    /// then unchanged.
    pub fn set(&self, db: &Database, table: &str, rule: AccessRule) -> Result<(), Problem> {
        let value = serde_json::to_string(&rule).expect("access rules serialize");
        db.put_setting(&format!("{SETTING_PREFIX}{table}"), Some(value))?;
        self.rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(table.to_owned(), rule);
        Ok(())
    }

    pub fn all(&self) -> BTreeMap<String, AccessRule> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, AccessRule>> {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The caller's view for reads (gets, queries, pulls).
    pub fn reader(&self, principal: &Principal, db: &Database) -> Arc<dyn RowAccess> {
        self.view(principal, db, false)
    }

    /// The caller's view for writes (creates, patches, deletes, pushes): a
    /// read-only table admits no row.
    pub fn writer(&self, principal: &Principal, db: &Database) -> Arc<dyn RowAccess> {
        self.view(principal, db, true)
    }

    fn view(&self, principal: &Principal, db: &Database, writing: bool) -> Arc<dyn RowAccess> {
        let Principal::User { user, .. } = principal else {
            return Arc::new(FullAccess);
        };
        // Only tables with a rule are reachable, so the view is built from the
        // rules (a handful), not from every table's schema.
        let tables = self
            .read()
            .iter()
            .map(|(table, rule)| {
                let reach = match rule {
                    AccessRule::Shared => Reach::All,
                    AccessRule::ReadOnly if !writing => Reach::All,
                    AccessRule::Owner { field } => db
                        .field_position(table, field)
                        .map_or(Reach::None, |position| Reach::Owned { position }),
                    AccessRule::ReadOnly | AccessRule::Private => Reach::None,
                };
                (table.clone(), reach)
            })
            .collect();
        Arc::new(UserAccess {
            user: user.clone(),
            tables,
        })
    }

    /// Whether the caller may see the table at all: a table it may not see is
    /// answered as missing.
    ///
    /// # Errors
    ///
    /// [`Problem::no_table`].
    pub fn check_visible(&self, principal: &Principal, table: &str) -> Result<(), Problem> {
        match (principal, self.get(table)) {
            (Principal::Admin, _) => Ok(()),
            (_, Some(AccessRule::Private) | None) => Err(Problem::no_table(table)),
            _ => Ok(()),
        }
    }

    /// Whether the caller may write the table.
    ///
    /// # Errors
    ///
    /// [`Problem::no_table`] for a table it may not see, 403 `read_only` for one
    /// it may only read.
    pub fn check_writable(&self, principal: &Principal, table: &str) -> Result<(), Problem> {
        self.check_visible(principal, table)?;
        match (principal, self.get(table)) {
            (Principal::User { .. }, Some(AccessRule::ReadOnly)) => Err(Problem::forbidden(
                "read_only",
                format!("table `{table}` is read-only for client tokens"),
            )),
            _ => Ok(()),
        }
    }

    /// The filter a query by this caller gets: its own rows of an owned table.
    pub fn query_filter(&self, principal: &Principal, table: &str) -> Option<Filter> {
        let Principal::User { user, .. } = principal else {
            return None;
        };
        match self.get(table) {
            Some(AccessRule::Owner { field }) => Some(Filter::eq(field, user.as_str())),
            _ => None,
        }
    }

    /// The owner field of an owned table, for filling it in on create.
    pub fn owner_field(&self, table: &str) -> Option<String> {
        match self.get(table) {
            Some(AccessRule::Owner { field }) => Some(field),
            _ => None,
        }
    }
}

/// A client token's view of the tables.
#[derive(Debug)]
struct UserAccess {
    user: String,
    tables: BTreeMap<String, Reach>,
}

impl RowAccess for UserAccess {
    fn admits(&self, table: &str, row: &Row) -> bool {
        match self.tables.get(table) {
            Some(Reach::All) => true,
            Some(Reach::Owned { position, .. }) => {
                matches!(row.get(*position), Value::Str(owner) if *owner == *self.user)
            }
            Some(Reach::None) | None => false,
        }
    }

    fn admits_all(&self, table: &str) -> bool {
        matches!(self.tables.get(table), Some(Reach::All))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::crdt::ClientId;
    use crate::schema::{FieldSpec, FieldType, TableSchema};

    fn database() -> Database {
        let db = Database::new(EngineConfig::default()).expect("database");
        db.create_table(
            TableSchema::new("notes", "id")
                .field(FieldSpec::new("owner", FieldType::String))
                .field(FieldSpec::new("text", FieldType::String))
                .index("owner"),
        )
        .expect("table");
        db
    }

    fn user(name: &str) -> Principal {
        Principal::User {
            user: name.into(),
            device: "d".into(),
        }
    }

    #[test]
    fn owners_reach_only_their_rows() {
        let db = database();
        let rules = AccessRules::new(BTreeMap::from([(
            "notes".to_owned(),
            AccessRule::Owner {
                field: "owner".into(),
            },
        )]));
        let origin = ClientId::from("test");
        let fields = |id: &str, owner: &str| {
            BTreeMap::from([
                ("id".to_owned(), Value::str(id)),
                ("owner".to_owned(), Value::str(owner)),
            ])
        };
        let alice = rules.writer(&user("alice"), &db);
        db.writer(alice.as_ref())
            .insert("notes", fields("a1", "alice"), &origin)
            .expect("own row");
        let refused = db
            .writer(alice.as_ref())
            .insert("notes", fields("b1", "bob"), &origin)
            .expect_err("someone else's row");
        assert_eq!(refused.code(), "access_denied");
        db.insert("notes", fields("b2", "bob"), &origin)
            .expect("admin");
        let hidden = db
            .writer(alice.as_ref())
            .delete("notes", "b2", &origin)
            .expect_err("hidden row");
        assert_eq!(hidden.code(), "not_found");
        let reader = rules.reader(&user("alice"), &db);
        let row = db.get("notes", "b2").expect("get").expect("row");
        assert!(!reader.admits("notes", &row));
        assert!(rules.check_visible(&user("alice"), "notes").is_ok());
        assert!(rules.check_visible(&user("alice"), "other").is_err());
    }
}
