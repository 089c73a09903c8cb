//! `cascade serve`: build the app from the configuration, listen, stop on SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::app::App;
use crate::brownout::Brownout;
use crate::config::{Config, Mode};
use crate::http::server::{self, ServerLimits};
use crate::http::{AppState, router};

/// Serve the HTTP API (with no configuration: the embedded default on 127.0.0.1:8080).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (also $CASCADE_CONFIG); environment variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The HTTP state for an app: its recommender, caches and credentials.
pub async fn build_state(app: &App) -> anyhow::Result<AppState> {
    let serving = Arc::new(app.serving().await?);
    if let Err(error) = serving.catalogue().refresh().await {
        tracing::error!(%error, "catalogue store unreachable at start; hidden items are served until it answers");
    }
    let variants = app.variants(Arc::clone(&serving)).await?;
    for arm in variants.arms().iter().filter(|arm| !arm.name.is_empty()) {
        tracing::info!(variant = %arm.name, weight = arm.weight, bundle = arm.serving.current().bundle().id(), "variant");
    }
    let state = AppState::new(
        serving,
        Arc::new(app.caches()),
        Arc::new(app.auth()),
        Arc::clone(&app.metrics),
        &app.config.serving,
    );
    let purger = crate::edge_purge::EdgePurge::new(&app.config.edge, app.metrics.edge_purges.clone());
    let tracer = crate::otel::Tracer::start(&app.config.tracing, app.metrics.trace_spans_dropped.clone());
    Ok(state.with_variants(variants).with_edge_purge(purger).with_tracer(tracer))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &|name| std::env::var(name).ok())?;
    if config.mode == Mode::Development {
        tracing::info!("development mode");
    }
    let listen = config.listen;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(config.serving.header_read_timeout_ms),
        max_connections: config.serving.max_connections,
        pace_after_refusals: config.serving.pace_after_refusals,
    };
    let app = App::new(config)?;
    let state = build_state(&app).await?.with_config_file(args.config.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "cascade origin listening");
    let watch = tokio::spawn(watch_health(Arc::clone(&state.serving)));
    let hangup = tokio::spawn(reload_on_hangup(state.clone()));
    // A catalogue shared through Redis: other processes' changes within a second.
    let catalogue = Arc::clone(state.serving.catalogue());
    let shared = catalogue.is_shared().then(|| tokio::spawn(catalogue.watch(Duration::from_secs(1))));
    let (lag, on) = (state.metrics.runtime_lag.clone(), state.metrics.brownout.clone());
    let probe = tokio::spawn(Brownout::watch(Arc::downgrade(state.serving.brownout()), lag, on));
    server::serve(listener, router(state), limits, shutdown_signal()).await?;
    watch.abort();
    probe.abort();
    hangup.abort();
    if let Some(shared) = shared {
        shared.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Checks the components every second, so a shard that went away or came back empty is noticed
/// (and its missing ids counted as such) without waiting for someone to ask `/readyz`.
async fn watch_health(serving: Arc<crate::app::Serving>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = serving.current().health().await;
    }
}

/// SIGHUP re-reads the configuration file's `[rules]` (as `POST /admin/rules` does).
async fn reload_on_hangup(state: AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hangup.recv().await.is_some() {
            if let Err(error) = crate::http::admin::reload_rules_from(state.config_file.as_deref(), &state) {
                tracing::error!(%error, "SIGHUP: rules not reloaded");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
