//! `cascade`: the origin service and its tools. Parses the command line, sets up logging, and
//! hands over to `cascade_origin::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_origin::commands;
use cascade_origin::config::Config;
use cascade_origin::generate::GenSpec;
use cascade_shared::config as env_names;
use cascade_shared::embedding::ValueEncoding;
use clap::{Parser, Subcommand};

// mimalloc: the store's hot path allocates one float vector per embedding read, and the batcher
// one row buffer per request; with glibc malloc `benches/store.rs` ran about 25% slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cascade's origin: recommendations from sharded embeddings, FAISS and a TorchScript ranker.
#[derive(Parser)]
#[command(name = "cascade", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (with no configuration: the embedded default on 127.0.0.1:8080).
    Serve {
        /// TOML config file (also $CASCADE_CONFIG); environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Bulk-load embeddings (a bundle's, or generated ones) into the Redis shards, then verify them.
    Load {
        /// Bundle folder.
        #[arg(long, env = env_names::BUNDLE, default_value = "data/bundle")]
        bundle: PathBuf,
        /// Generate clustered data instead: `users=N,items=M,dim=D[,clusters=K][,seed=S]`.
        #[arg(long, value_parser = |s: &str| GenSpec::parse(s))]
        generate: Option<GenSpec>,
        /// Comma-separated shard URLs, in shard order.
        #[arg(long, env = env_names::REDIS_SHARDS, value_delimiter = ',')]
        redis: Vec<String>,
        /// Vectors per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Load users only (items are served from the bundle).
        #[arg(long)]
        users_only: bool,
        /// Store values as float16 (half the memory; readers accept both).
        #[arg(long)]
        f16: bool,
        /// With --generate: also write the data as a bundle folder here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: copy the model and its reference scores from this bundle (same dim).
        #[arg(long)]
        model_from: Option<PathBuf>,
        /// --redis names seed nodes of a Redis Cluster (default: independent shards).
        #[arg(long)]
        cluster: bool,
    },
    /// Rank every user's top list offline and write it to the Redis shards (resumable).
    Precompute {
        /// Bundle folder.
        #[arg(long, env = env_names::BUNDLE, default_value = "data/bundle")]
        bundle: PathBuf,
        /// Comma-separated shard URLs, in shard order.
        #[arg(long, env = env_names::REDIS_SHARDS, value_delimiter = ',')]
        redis: Vec<String>,
        /// This worker's part of the users, `i/N` (also `--shard i/N`).
        #[arg(long, alias = "shard", default_value = "0/1", value_parser = commands::precompute::parse_part)]
        part: (usize, usize),
        /// Items per list.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// List time to live, seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        /// Checkpoint file: resume from it, and update it after every chunk.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Stop after this many users in this run.
        #[arg(long)]
        max_users: Option<usize>,
    },
    /// Move keys from one shard list to another (only those whose shard changed), resumably, then
    /// verify every key is on its shard exactly once with an unchanged checksum.
    Reshard {
        /// The shard list the keys are on now (comma-separated, in order).
        #[arg(long, value_delimiter = ',', required = true)]
        from: Vec<String>,
        /// The new shard list.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Checkpoint file: resume from it, and update it after every batch.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Keys per SCAN/MIGRATE batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Stop (resumably) after moving this many keys in this run.
        #[arg(long)]
        max_moves: Option<u64>,
    },
    /// FAISS index tools.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Memory and shard counts for a deployment.
    Plan {
        /// Users.
        #[arg(long)]
        users: u64,
        /// Items.
        #[arg(long)]
        items: u64,
        /// Embedding dimensions.
        #[arg(long, default_value_t = 128)]
        dim: u64,
        /// Store values as float16.
        #[arg(long)]
        f16: bool,
        /// Usable memory per Redis node, GiB.
        #[arg(long, default_value_t = 64)]
        node_memory_gib: u64,
        /// Peak retrieval queries per second, for the FAISS node count.
        #[arg(long, default_value_t = 0)]
        qps: u64,
        /// Cores per retrieval node.
        #[arg(long, default_value_t = 16)]
        cores_per_node: u64,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Train and write `items.faiss` into the bundle.
    Build {
        /// Bundle folder.
        #[arg(long, env = env_names::BUNDLE, default_value = "data/bundle")]
        bundle: PathBuf,
        /// FAISS factory string, or `auto`.
        #[arg(long, default_value = "auto")]
        factory: String,
    },
    /// Recall@K against exact search, and latency, for each nprobe (queries: the bundle's users).
    Eval {
        /// Bundle folder.
        #[arg(long, env = env_names::BUNDLE, default_value = "data/bundle")]
        bundle: PathBuf,
        /// FAISS factory string, `auto`, or `file` (the bundle's items.faiss).
        #[arg(long, default_value = "auto")]
        factory: String,
        /// nprobe values to try.
        #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
        nprobe: Vec<usize>,
        /// Number of queries.
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// K of recall@K.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// Threads searching at once for the throughput figure.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Search float16-rounded vectors (as `load --f16` stores them) against float32 truth.
        #[arg(long)]
        f16: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_names::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var(env_names::LOG_FORMAT).is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), &|name| std::env::var(name).ok())?;
            commands::serve::run(config).await
        }
        Command::Load { bundle, generate, redis, batch, users_only, f16, out, model_from, cluster } => {
            let encoding = if f16 { ValueEncoding::F16 } else { ValueEncoding::F32 };
            let args = commands::load::LoadArgs {
                bundle,
                generate,
                shards: redis,
                batch,
                users_only,
                encoding,
                out,
                model_from,
                cluster,
            };
            commands::load::run(args).await.map(|_| ())
        }
        Command::Precompute { bundle, redis, part, top, ttl_secs, checkpoint, max_users } => {
            anyhow::ensure!(ttl_secs > 0, "--ttl-secs must be positive");
            let args = commands::precompute::PrecomputeArgs {
                bundle,
                shards: redis,
                part,
                top,
                ttl: std::time::Duration::from_secs(ttl_secs),
                checkpoint,
                max_users,
            };
            commands::precompute::run(args).await.map(|_| ())
        }
        Command::Reshard { from, to, checkpoint, batch, max_moves } => {
            let args = commands::reshard::ReshardArgs { from, to, checkpoint, batch, max_moves };
            commands::reshard::run(args).await.map(|_| ())
        }
        Command::Index { command: IndexCommand::Build { bundle, factory } } => {
            tokio::task::spawn_blocking(move || commands::index::build(&bundle, &factory)).await?
        }
        Command::Index { command: IndexCommand::Eval { bundle, factory, nprobe, queries, k, threads, json, f16 } } => {
            let args = commands::index::EvalArgs { bundle, factory, nprobes: nprobe, queries, k, threads, f16 };
            let report = tokio::task::spawn_blocking(move || commands::index::eval(&args)).await??;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = json {
                std::fs::write(&path, &text)?;
            }
            println!("{text}");
            Ok(())
        }
        Command::Plan { users, items, dim, f16, node_memory_gib, qps, cores_per_node } => {
            anyhow::ensure!(
                dim > 0 && users + items > 0 && node_memory_gib > 0,
                "--users/--items, --dim and --node-memory-gib must be positive"
            );
            anyhow::ensure!(cores_per_node > 0, "--cores-per-node must be positive");
            let node_memory = node_memory_gib << 30;
            let input = commands::plan::PlanInput { users, items, dim, f16, node_memory, qps, cores_per_node };
            print!("{}", commands::plan::render(input));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            // 64 (EX_USAGE) for configuration mistakes, 1 for everything else.
            if error.downcast_ref::<cascade_origin::config::ConfigError>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
