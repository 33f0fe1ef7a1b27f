//! The `mobilesyncdb` command.
//!
//! - `mobilesyncdb serve` runs the sync server (in memory, on 127.0.0.1:7700,
//!   with development credentials unless configured).
//! - `mobilesyncdb token` mints a client token with the configured secret.
//! - `mobilesyncdb export` / `import` move tables to and from a running server.
//! - `mobilesyncdb schema check` / `schema diff` validate schema documents and
//!   show what changes from one version to the next.
//! - `mobilesyncdb demo` loads the seeded demo data set into memory and prints
//!   what it holds.

mod cli;

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::ClientId;
use mobilesyncdb::dataset::{Dataset, DatasetSpec};
use mobilesyncdb::engine::{Database, Direction, Query};
use tracing_subscriber::EnvFilter;

/// See the `jemalloc` feature in Cargo.toml for why.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "mobilesyncdb",
    version,
    about = "A sync server for offline-first mobile apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(cli::ServeArgs),
    /// Mint a client token (JWT) for a user's device with the configured secret.
    Token(cli::TokenArgs),
    /// Export tables from a running server to a file.
    Export(cli::ExportArgs),
    /// Import an export file into a running server.
    Import(cli::ImportArgs),
    /// Check a data directory offline: every file, where it is damaged, and
    /// whether the server starts on it.
    Check(cli::DataDirArgs),
    /// Cut a damaged data directory at its first damage (what follows is moved
    /// aside, never deleted) so the server starts on it again.
    Repair(cli::DataDirArgs),
    /// Validate schema documents and compare versions, offline.
    Schema(cli::SchemaArgs),
    /// Load the seeded demo data set into memory and print statistics.
    Demo {
        /// Size of the data set in JSON bytes: 100kb, 1mb, 10mb or 100mb.
        #[arg(long, default_value = "10mb", value_parser = parse_size)]
        size: usize,
        /// Seed of the generator: the same seed gives the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.to_ascii_lowercase();
    let (number, unit) = lower.split_at(
        lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len()),
    );
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 10mb"))?;
    let scale = match unit {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        _ => return Err(format!("unknown unit in `{text}`: use kb or mb")),
    };
    Ok(number * scale)
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    let default_level = match command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    match command {
        Command::Serve(args) => cli::serve(args),
        Command::Token(args) => cli::token(args),
        Command::Export(args) => cli::export(args),
        Command::Import(args) => cli::import(args),
        Command::Check(args) => cli::check(args),
        Command::Repair(args) => cli::repair(args),
        Command::Schema(args) => cli::schema(args),
        Command::Demo { size, seed } => demo(size, seed),
    }
}

fn demo(size: usize, seed: u64) -> anyhow::Result<()> {
    let dataset = Dataset::generate(DatasetSpec {
        seed,
        target_json_bytes: size,
    });
    let database = Database::new(EngineConfig::default()).context("default configuration")?;
    let started = Instant::now();
    dataset
        .load_into(&database, &ClientId::from("demo-loader"))
        .context("loading the demo data set")?;
    let elapsed = started.elapsed();
    println!(
        "loaded {} records ({} bytes of JSON) in {:.0} ms",
        dataset.record_count(),
        dataset.json_bytes(),
        elapsed.as_secs_f64() * 1e3
    );
    for table in &dataset.tables {
        println!(
            "  {:<16} {:>7} records",
            table.schema.name,
            table.rows.len()
        );
    }
    let stats = database.stats();
    println!(
        "latest seq {}, change log {} entries",
        stats.latest_seq, stats.change_log_entries
    );
    let memory = stats.memory;
    let megabytes = |bytes: usize| bytes as f64 / 1e6;
    println!(
        "memory {:.1} MB ({:.2}x the JSON): documents {:.1}, rows {:.1}, records {:.1}, indexes {:.1}, change log {:.1}, cache {:.1}",
        megabytes(memory.total),
        memory.total as f64 / dataset.json_bytes() as f64,
        megabytes(memory.documents),
        megabytes(memory.rows),
        megabytes(memory.records),
        megabytes(memory.indexes),
        megabytes(memory.change_log),
        megabytes(memory.doc_cache),
    );
    let latest = Query::new().order_by("sent_at", Direction::Desc).limit(2);
    let plan = database.explain("messages", &latest)?;
    println!("the 2 latest messages ({plan}):");
    let schema = dataset.table("messages").map(|table| table.schema.clone());
    for row in database.query("messages", &latest)?.rows {
        if let Some(schema) = &schema {
            println!("  {}", serde_json::Value::Object(row.to_json(schema)));
        }
    }
    Ok(())
}
