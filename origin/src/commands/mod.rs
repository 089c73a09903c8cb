//! The `cascade` subcommands. Each is a thin function over the library: its arguments are a
//! `clap::Args` struct in its own file, and it returns a typed report that `main` prints as JSON
//! with `--json` (the human summary goes to stderr either way).

pub mod generated;
pub mod index;
pub mod items;
pub mod keys;
pub mod load;
pub mod plan;
pub mod precompute;
pub mod report;
pub mod reshard;
pub mod serve;

use clap::Subcommand;
use serde::Serialize;

/// Every subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (with no configuration: the embedded default on 127.0.0.1:8080).
    Serve(serve::ServeArgs),
    /// Bulk-load embeddings (a bundle's, or generated ones) into the Redis shards, then verify them.
    Load(load::LoadArgs),
    /// Rank every user's top list offline and write it to the Redis shards (resumable).
    Precompute(precompute::PrecomputeArgs),
    /// Move keys from one shard list to another (only those whose shard changed), resumably, then
    /// verify every key is on its shard exactly once with an unchanged checksum.
    Reshard(reshard::ReshardArgs),
    /// FAISS index tools.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// The item catalogue of a running origin.
    #[command(subcommand)]
    Items(items::ItemsCommand),
    /// Memory and shard counts for a deployment.
    Plan(plan::PlanArgs),
    /// Print the visitor-token key derived from CASCADE_SECRET (for the site's login service).
    TokenKey(keys::TokenKeyArgs),
    /// Click-through per A/B variant, from the feature log.
    Report(report::ReportArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves; checked in as
    /// docs/openapi.json), or with --edge the Worker's (docs/edge-openapi.json).
    Openapi {
        /// The Worker's public API instead of the origin's.
        #[arg(long)]
        edge: bool,
    },
}

/// `cascade config …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate a configuration file as `serve` would (with the CASCADE_* environment
    /// over it); a bad value exits with status 64 and names the field.
    Check {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

/// What a command printed for machines: its report, when it has one.
pub type Report = Option<serde_json::Value>;

fn report(value: impl Serialize) -> anyhow::Result<Report> {
    Ok(Some(serde_json::to_value(value)?))
}

impl Command {
    /// Runs the command and returns its report (`json`: the caller prints the report as JSON, so
    /// the command prints no human text on stdout).
    pub async fn run(self, json: bool) -> anyhow::Result<Report> {
        match self {
            Command::Serve(args) => serve::run(args).await.map(|()| None),
            Command::Load(args) => report(load::run(args).await?),
            Command::Precompute(args) => report(precompute::run(args).await?),
            Command::Reshard(args) => report(reshard::run(args).await?),
            Command::Report(args) => report(report::run(&args)?),
            Command::Items(items::ItemsCommand::Import(args)) => report(items::import(args).await?),
            Command::Index(index::IndexCommand::Build(args)) => {
                let built = tokio::task::spawn_blocking(move || index::build(&args.bundle, &args.factory)).await??;
                report(built)
            }
            Command::Index(index::IndexCommand::Eval(args)) => {
                let path = args.out.clone();
                let figures = tokio::task::spawn_blocking(move || index::eval(&args)).await??;
                if let Some(path) = path {
                    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
                }
                // Eval's figures are its output: printed whether or not --json is given.
                println!("{}", serde_json::to_string_pretty(&figures)?);
                Ok(None)
            }
            Command::TokenKey(args) => {
                let key = keys::run(args)?;
                if !json {
                    println!("{}", key.visitor_token_key_hex);
                }
                report(key)
            }
            Command::Config(ConfigCommand::Check { file }) => {
                let config = crate::config::Config::load(Some(&file), &|name| std::env::var(name).ok())?;
                if !json {
                    println!("{}: valid ({:?} mode, listen {})", file.display(), config.mode, config.listen);
                }
                report(serde_json::json!({"file": file, "valid": true, "mode": format!("{:?}", config.mode)}))
            }
            Command::Openapi { edge } => {
                let text = if edge {
                    crate::http::openapi::edge_document_text()
                } else {
                    crate::http::openapi::document_text()
                };
                print!("{text}");
                Ok(None)
            }
            Command::Plan(args) => {
                let input = args.input()?;
                if !json {
                    print!("{}", plan::render(input));
                }
                report(plan::plan(input))
            }
        }
    }
}
