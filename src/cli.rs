//! The server's subcommands: serve, token, export, import, check, repair, schema.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mobilesyncdb::api;
use mobilesyncdb::config::{Config, ConfigSource, DEV_ADMIN_KEY};
use mobilesyncdb::schema::{SchemaDiff, SchemaDoc, SchemaDocError};
use tracing::{info, warn};

/// Where the configuration comes from: a file, `MSDB_*` variables, flags.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// A TOML configuration file.
    #[arg(long, short = 'c', env = "MSDB_CONFIG")]
    config: Option<PathBuf>,
    /// Set any setting by its path in the file, for example `--set limits.burst=50`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    settings: Vec<String>,
}

impl ConfigArgs {
    fn load(&self, mut extra: Vec<String>) -> anyhow::Result<Config> {
        let mut overrides = self.settings.clone();
        overrides.append(&mut extra);
        ConfigSource::from_process(self.config.clone(), overrides)
            .load()
            .context("invalid configuration")
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The address to listen on (`server.listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Keep data in this directory (`storage.data_dir`): every acknowledged
    /// write survives a crash. Without it, data lives in memory only.
    #[arg(long, env = "MSDB_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// A data directory to inspect offline.
#[derive(Args, Debug)]
pub struct DataDirArgs {
    /// The data directory (the server must not be running on it for `repair`).
    #[arg(long)]
    data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Schema documents to check or compare (TOML or JSON files).
#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Show what changes from one schema document to another.
    Diff {
        /// The schema document of the current version.
        old: PathBuf,
        /// The schema document of the next version.
        new: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a schema document.
    Check {
        /// The schema document.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The user the token is for.
    #[arg(long)]
    user: String,
    /// The device the token is for (one sync session per device).
    #[arg(long)]
    device: String,
    /// Lifetime in seconds (default `auth.token_ttl`).
    #[arg(long)]
    ttl: Option<u64>,
}

/// A running server and an admin key.
#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7700", env = "MSDB_URL")]
    url: String,
    /// An admin key (default: the development key).
    #[arg(long, env = "MSDB_ADMIN_KEY", default_value = DEV_ADMIN_KEY, hide_default_value = true)]
    admin_key: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The file to write.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Tables to export, comma-separated (default: all).
    #[arg(long)]
    tables: Option<String>,
    /// `ndjson` or `binary`.
    #[arg(long, default_value = "ndjson")]
    format: String,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The export file to import.
    #[arg(long, short = 'i')]
    input: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `mobilesyncdb serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let extra = args
        .listen
        .iter()
        .map(|listen| format!("server.listen=\"{listen}\""))
        .collect();
    let mut config = args.config.load(extra)?;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = Some(dir);
    }
    let keeping = match &config.storage.data_dir {
        Some(dir) => format!("data in {}, fsync {}", dir.display(), config.storage.fsync),
        None => "in memory".to_owned(),
    };
    runtime()?.block_on(async move {
        let development = config.auth.uses_development_secrets();
        let handle = api::start(config).await?;
        let url = handle.url();
        info!(%url, "mobilesyncdb {} serving ({keeping})", env!("CARGO_PKG_VERSION"));
        if development {
            warn!("development credentials in use: set auth.admin_keys and auth.jwt_secret before exposing this server");
            eprintln!("\n  MobileSyncDB on {url} ({keeping})\n");
            eprintln!("  admin key (development):  {DEV_ADMIN_KEY}");
            eprintln!("  a client token:           mobilesyncdb token --user alice --device phone-1");
            eprintln!("  try:                      curl {url}/health\n");
        }
        shutdown_signal().await;
        info!("shutdown requested");
        handle.shutdown().await;
        info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// `mobilesyncdb token`.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = args.config.load(Vec::new())?;
    let auth = api::Authenticator::new(&config.auth);
    let (token, _) = auth
        .mint(&args.user, &args.device, args.ttl.map(Duration::from_secs))
        .map_err(|problem| anyhow::anyhow!(problem.detail))?;
    println!("{token}");
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")
}

fn bar(length: Option<u64>, verb: &str) -> ProgressBar {
    let bar = length.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    let template = if length.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{msg} {spinner} {bytes} ({bytes_per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(verb.to_owned());
    bar
}

async fn refused(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|problem| problem.get("detail")?.as_str().map(str::to_owned))
        .unwrap_or(body);
    anyhow::anyhow!("the server answered {status}: {detail}")
}

/// `mobilesyncdb export`.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut url = format!(
            "{}/v1/export?format={}",
            args.remote.url.trim_end_matches('/'),
            args.format
        );
        if let Some(tables) = &args.tables {
            url.push_str(&format!("&tables={tables}"));
        }
        let mut response = client()?
            .get(&url)
            .bearer_auth(&args.remote.admin_key)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        );
        let progress = bar(None, "exporting");
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the export stream broke off")?
        {
            file.write_all(&chunk).context("cannot write the file")?;
            progress.inc(chunk.len() as u64);
        }
        file.flush().context("cannot write the file")?;
        progress.finish_with_message(format!("exported to {}", args.output.display()));
        Ok(())
    })
}

/// `mobilesyncdb import`.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let content_type = if bytes.starts_with(b"MSDB") {
        "application/vnd.mobilesyncdb.export"
    } else if bytes.first() == Some(&b'{') {
        "application/x-ndjson"
    } else {
        bail!("{} is not an export file", args.input.display());
    };
    runtime()?.block_on(async move {
        let url = format!("{}/v1/import", args.remote.url.trim_end_matches('/'));
        let progress = bar(Some(bytes.len() as u64), "importing");
        // Pieces of the file share its one buffer; the bar moves as they are sent.
        let piece = 256 << 10;
        let file = bytes::Bytes::from(bytes);
        let length = file.len() as u64;
        let chunks: Vec<bytes::Bytes> = (0..file.len())
            .step_by(piece)
            .map(|start| file.slice(start..(start + piece).min(file.len())))
            .collect();
        let counted = progress.clone();
        let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
            counted.inc(chunk.len() as u64);
            Ok::<_, std::io::Error>(chunk)
        }));
        let response = client()?
            .post(&url)
            .bearer_auth(&args.remote.admin_key)
            .header("content-type", content_type)
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            progress.abandon();
            return Err(refused(response).await);
        }
        let body = response.bytes().await.context("the answer broke off")?;
        let report: serde_json::Value =
            serde_json::from_slice(&body).context("unreadable answer")?;
        progress.finish_with_message("imported");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        Ok(())
    })
}

/// `mobilesyncdb check`: reads a data directory and reports every file;
/// exits with an error when the server would refuse to start on it.
pub fn check(args: DataDirArgs) -> anyhow::Result<()> {
    let report = mobilesyncdb::storage::check(&args.data_dir)
        .with_context(|| format!("cannot check {}", args.data_dir.display()))?;
    print_report(&report, args.json)?;
    if !report.healthy() {
        bail!(
            "{} problem(s): the server will not start on this directory; `mobilesyncdb repair --data-dir {}` cuts the data at the damage",
            report.problems.len(),
            args.data_dir.display()
        );
    }
    Ok(())
}

/// `mobilesyncdb repair`: cuts a damaged data directory at its first damage,
/// moving what follows aside, and reports what it did.
pub fn repair(args: DataDirArgs) -> anyhow::Result<()> {
    let (report, actions) = mobilesyncdb::storage::repair(&args.data_dir)
        .with_context(|| format!("cannot repair {}", args.data_dir.display()))?;
    if actions.is_empty() {
        println!("nothing to repair");
    }
    for action in &actions {
        println!("{action}");
    }
    print_report(&report, args.json)?;
    if !report.healthy() {
        bail!("the directory still has problems after the repair");
    }
    Ok(())
}

fn print_report(report: &mobilesyncdb::storage::CheckReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("data directory {}", report.dir.display());
    for file in &report.files {
        let damage = file.damage.as_ref().map_or(String::new(), |damage| {
            format!(
                "; damage at byte {} ({}), {} bytes after it{}",
                damage.offset,
                damage.problem,
                damage.bytes_after,
                damage.intact_after.map_or(String::new(), |at| format!(
                    ", intact frames again from byte {at}"
                ))
            )
        });
        println!(
            "  {:<8} {}  {} bytes, {} frames{}{}: {}",
            file.kind,
            file.path.display(),
            file.bytes,
            file.frames,
            if file.unreadable > 0 {
                format!(", {} unreadable", file.unreadable)
            } else {
                String::new()
            },
            damage,
            file.verdict
        );
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    if report.healthy() {
        println!("ok: the server starts on this directory");
    }
    Ok(())
}

/// `mobilesyncdb schema`: validates schema documents and compares versions,
/// without a server.
pub fn schema(args: SchemaArgs) -> anyhow::Result<()> {
    match args.command {
        SchemaCommand::Diff { old, new, json } => {
            let diff = SchemaDiff::between(&read_schema(&old)?, &read_schema(&new)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                println!("{diff}");
            }
        }
        SchemaCommand::Check { file } => {
            let doc = read_schema(&file)?;
            println!(
                "ok: version {}, {} table{}",
                doc.version,
                doc.tables.len(),
                if doc.tables.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// A valid schema document from `path`.
fn read_schema(path: &Path) -> anyhow::Result<SchemaDoc> {
    let doc = SchemaDoc::read(path).map_err(|error| match error {
        // The error names the file already.
        SchemaDocError::Read { .. } => anyhow::Error::new(error),
        error => anyhow::Error::new(error)
            .context(format!("{}: invalid schema document", path.display())),
    })?;
    doc.validate()
        .with_context(|| format!("{}: invalid schema document", path.display()))?;
    Ok(doc)
}
