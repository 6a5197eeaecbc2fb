//! `synapse`: reads its settings, connects to the cluster, migrates the schema on the primary
//! and serves the API until SIGINT or SIGTERM.
//!
//! Exit codes: 0 after a clean shutdown; 2 for a bad setting; 1 when the database cannot be
//! migrated or the address cannot be listened on.

use std::process::ExitCode;

use meridian_client::PoolManager;
use synapse::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SYNAPSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("synapse: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run() -> Result<(), (u8, String)> {
    let config = Config::from_env().map_err(|e| (2, e.to_string()))?;
    // Errors of the pool manager's construction are all about its settings (nodes are
    // connected lazily); they never show a password.
    let db = PoolManager::from_env()
        .await
        .map_err(|e| (2, e.to_string()))?;
    synapse::migrate(&db)
        .await
        .map_err(|e| (1, format!("cannot migrate the database: {e}")))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| (1, format!("cannot listen on {}: {e}", config.listen)))?;
    tracing::info!(listen = %config.listen, "serving");
    synapse::serve(listener, db.clone(), shutdown_signal())
        .await
        .map_err(|e| (1, format!("serving failed: {e}")))?;
    db.close().await;
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
        // Without handlers the process still stops, on the signals' default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
