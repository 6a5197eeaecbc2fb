//! `meridian run`: the proxy in front of the configured cluster, until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_config::{Config, Environment};
use meridian_control::discovery::{self, Credentials};
use meridian_proxy::{Proxy, ProxySettings};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub fn main(config_path: Option<&Path>) -> ExitCode {
    init_logging();
    let config = match Config::load(config_path, &Environment::from_process()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("meridian: the configuration is not valid:\n{errors}");
            return ExitCode::from(2);
        }
    };
    let threads: Option<usize> = std::env::var("MERIDIAN_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut builder = if threads == Some(0) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = threads.filter(|&n| n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meridian: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    let settings = ProxySettings::from_config(&config).context("cannot prepare the proxy")?;
    let credentials = Credentials::from_config(&config)
        .context("no [[users]] configured: Meridian needs one to log in to the servers")?;
    let view = discovery::observe_roles(&config, &credentials, Duration::from_secs(5)).await?;
    match view.primary.and_then(|id| view.node(id)) {
        Some(primary) => tracing::info!(node = %primary.name, "primary found"),
        None => tracing::warn!(
            "no node answered as a writable primary; transactions will fail until one does"
        ),
    }
    let (_view_tx, view_rx) = watch::channel(Arc::new(view));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(listen = %config.listen, "accepting clients");
    let proxy = Proxy::new(settings, view_rx);
    proxy.run(listener, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes at the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

/// A proxy holds two sockets per active client: raise the soft limit on open files to the
/// hard limit so that thousands of clients fit.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
