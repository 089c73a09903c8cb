//! `cascade`: the origin service and its tools. Parses the command line, sets up logging, runs the
//! subcommand (`cascade_origin::commands`) and, with `--json`, prints its report on stdout.

use std::process::ExitCode;

use cascade_origin::commands::Command;
use cascade_shared::config as env_names;
use clap::Parser;

// mimalloc: the store's hot path allocates one float vector per embedding read, and the batcher
// one row buffer per request; with glibc malloc `benches/store.rs` ran about 25% slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cascade's origin: recommendations from sharded embeddings, FAISS and a TorchScript ranker.
#[derive(Parser)]
#[command(name = "cascade", version, about)]
struct Cli {
    /// Print the command's report as JSON on stdout (the human summary stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
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

/// Panics go to the log (JSON when the log is), with the thread and location; a backtrace only
/// when `RUST_BACKTRACE` asks for one. Symbolizing it maps libtorch's symbol tables: the first
/// panic then costs about 110 MiB of resident memory for the rest of the process's life
/// (measured by the fault suite's ranker panic: 450 → 562 MiB with `RUST_BACKTRACE=1`, flat
/// without).
fn init_panic_log() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, location, %backtrace, "panic: {message}");
        } else {
            tracing::error!(thread, location, "panic: {message}");
        }
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    init_panic_log();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run(cli.json)) {
        Ok(report) => {
            if let (true, Some(report)) = (cli.json, report) {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
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
