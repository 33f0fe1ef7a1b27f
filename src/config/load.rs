//! Reading a [`Config`] from its three sources, each over the one before: the
//! built-in defaults, a TOML file, `MSDB_` environment variables, then flags.
//!
//! Environment variables and `--set` flags name a setting by its path in the
//! file: `MSDB_SERVER__LISTEN` (sections joined by a double underscore; every
//! setting lives in a section, so `MSDB_` variables without one, such as the
//! command line's `MSDB_CONFIG` or `MSDB_URL`, are not settings) and
//! `--set server.listen=…` both set `[server] listen`. Values are read as TOML
//! (`100`, `true`, `["a", "b"]`) and otherwise taken as strings.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// The prefix of the environment variables that configure the server.
pub const ENV_PREFIX: &str = "MSDB_";

/// Where the settings come from.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// A TOML file.
    pub file: Option<PathBuf>,
    /// Environment variables; only those starting with `MSDB_` are read.
    pub env: Vec<(String, String)>,
    /// `path=value` settings from flags, applied last, in order.
    pub overrides: Vec<String>,
}

/// Settings that could not be read or are out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("`{setting}`: expected `path=value`")]
    NotAnAssignment { setting: String },
    #[error(transparent)]
    OutOfRange(#[from] ConfigError),
}

impl ConfigSource {
    /// This process's environment and a file, when given.
    pub fn from_process(file: Option<PathBuf>, overrides: Vec<String>) -> ConfigSource {
        ConfigSource {
            file,
            env: std::env::vars().collect(),
            overrides,
        }
    }

    /// Reads, merges and validates the settings.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the file, variable or flag at fault, or the setting
    /// out of range.
    pub fn load(&self) -> Result<Config, LoadError> {
        let mut merged = toml::Table::new();
        if let Some(path) = &self.file {
            merged = read_file(path)?;
        }
        for (name, value) in &self.env {
            let Some(path) = name
                .strip_prefix(ENV_PREFIX)
                .filter(|path| path.contains("__"))
            else {
                continue;
            };
            let path = path.to_ascii_lowercase().replace("__", ".");
            assign(
                &mut merged,
                &path,
                value,
                &format!("environment variable {name}"),
            )?;
        }
        for setting in &self.overrides {
            let (path, value) =
                setting
                    .split_once('=')
                    .ok_or_else(|| LoadError::NotAnAssignment {
                        setting: setting.clone(),
                    })?;
            assign(&mut merged, path.trim(), value, &format!("--set {setting}"))?;
        }
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|error: toml::de::Error| LoadError::Invalid {
                    origin: self.origin(),
                    message: error.to_string().trim().to_owned(),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn origin(&self) -> String {
        match &self.file {
            Some(path) => format!("configuration ({}, environment, flags)", path.display()),
            None => "configuration (environment, flags)".to_owned(),
        }
    }
}

fn read_file(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| LoadError::Invalid {
            origin: path.display().to_string(),
            message: error.to_string(),
        })
}

/// Sets `path` (dotted) in `table` to `raw`, read as a TOML value when it is one.
fn assign(table: &mut toml::Table, path: &str, raw: &str, origin: &str) -> Result<(), LoadError> {
    let invalid = |message: String| LoadError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    let value = format!("value = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut parsed| parsed.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments
        .pop()
        .filter(|last| !last.is_empty())
        .ok_or_else(|| invalid(format!("`{path}` is not a setting")))?;
    let mut current = table;
    for segment in segments {
        let entry = current
            .entry(segment.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| invalid(format!("`{segment}` in `{path}` is not a section")))?;
    }
    current.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Config, LoadError> {
        let file = file.map(|text| {
            let path = std::env::temp_dir().join(format!(
                "msdb-config-{}-{}.toml",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::write(&path, text).expect("temporary file");
            path
        });
        let loaded = ConfigSource {
            file: file.clone(),
            env: env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            overrides: flags.iter().map(|flag| (*flag).to_owned()).collect(),
        }
        .load();
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        loaded
    }

    #[test]
    fn nothing_given_is_the_embedded_default() {
        let others = [
            ("PATH", "/bin"),
            ("MSDB_CONFIG", "/etc/msdb.toml"),
            ("MSDB_URL", "http://127.0.0.1:7700"),
            ("MSDB_SYNC_SEED", "7"),
        ];
        let config = source(None, &others, &[]).expect("defaults load");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn flags_override_environment_which_overrides_the_file() {
        let file =
            "[server]\nlisten = \"127.0.0.1:1000\"\nmax_connections = 5\n[limits]\nburst = 7\n";
        let env = [
            ("MSDB_SERVER__LISTEN", "127.0.0.1:2000"),
            ("MSDB_LIMITS__BURST", "9"),
        ];
        let config = source(Some(file), &env, &["server.listen=127.0.0.1:3000"]).expect("loads");
        assert_eq!(config.server.listen.port(), 3000);
        assert_eq!(config.server.max_connections, 5);
        assert_eq!(config.limits.burst, 9);
    }

    #[test]
    fn a_power_mode_given_in_part_keeps_its_other_defaults() {
        let file = "[sync.power]\nlow_priority_tables = [\"events\"]\n[sync.power.low]\nnext_sync = 7200\ncompression = \"fast\"\n";
        let env = [("MSDB_SYNC__POWER__CRITICAL__LONG_POLL", "30")];
        let config = source(Some(file), &env, &[]).expect("loads");
        let power = &config.sync.power;
        let defaults = crate::power::PowerConfig::default();
        assert_eq!(power.low_priority_tables, ["events"]);
        assert_eq!(power.low.next_sync, std::time::Duration::from_secs(7200));
        assert_eq!(power.low.compression, crate::compress::Level::Fast);
        assert_eq!(power.low.batch_records, defaults.low.batch_records);
        assert_eq!(power.critical.long_poll, std::time::Duration::from_secs(30));
        assert_eq!(power.normal, defaults.normal);
        let error = source(Some("[sync.power.low]\nbatch_records = 0\n"), &[], &[])
            .expect_err("out of range");
        assert!(
            error
                .to_string()
                .contains("`sync.power.low.batch_records` must be between 1"),
            "{error}"
        );
        let error = source(Some("[sync.power.low]\nnext_sink = 1\n"), &[], &[])
            .expect_err("a misspelt setting");
        assert!(error.to_string().contains("next_sink"), "{error}");
    }

    #[test]
    fn access_rules_and_lists_are_read() {
        let file = "[access.notes]\nkind = \"owner\"\nfield = \"owner\"\n[access.tags]\nkind = \"read_only\"\n";
        let env = [(
            "MSDB_AUTH__ADMIN_KEYS",
            "[\"0123456789abcdef0\", \"fedcba98765432100\"]",
        )];
        let config = source(Some(file), &env, &[]).expect("loads");
        assert_eq!(config.auth.admin_keys.len(), 2);
        assert_eq!(
            config.access["notes"],
            crate::config::AccessRule::Owner {
                field: "owner".to_owned()
            }
        );
    }

    #[test]
    fn bad_settings_name_their_source() {
        let error =
            source(None, &[("MSDB_SERVER__LISTEN", "nowhere")], &[]).expect_err("bad address");
        assert!(error.to_string().contains("listen"), "{error}");
        let error = source(None, &[], &["server.nothing=1"]).expect_err("unknown setting");
        assert!(error.to_string().contains("nothing"), "{error}");
        let error = source(None, &[], &["auth.jwt_secret=short"]).expect_err("weak secret");
        assert!(matches!(
            error,
            LoadError::OutOfRange(ConfigError::WeakSecret { .. })
        ));
        let error =
            source(None, &[], &["server.listen=0.0.0.0:7700"]).expect_err("dev secrets exposed");
        assert!(matches!(
            error,
            LoadError::OutOfRange(ConfigError::DevelopmentSecretsExposed { .. })
        ));
        let error = source(Some("[server\n"), &[], &[]).expect_err("broken file");
        assert!(matches!(error, LoadError::Invalid { .. }));
        let error = source(None, &[], &["webhooks.allow_networks=[\"10.1.0.0/33\"]"])
            .expect_err("not a network");
        assert!(error.to_string().contains("allow_networks"), "{error}");
    }

    #[test]
    fn webhook_networks_are_read_as_networks() {
        let flags = ["webhooks.allow_networks=[\"10.1.0.0/16\", \"::1/128\"]"];
        let config = source(None, &[], &flags).expect("loads");
        let networks: Vec<String> = config
            .webhooks
            .allow_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(networks, ["10.1.0.0/16", "::1/128"]);
    }
}
