//! `meridian run`: the proxy in front of the configured cluster, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use meridian_config::{Config, CoordinationConfig, Environment};
use meridian_control::archiving;
use meridian_control::coordination::{
    self as coordinator, CoordinationSettings, Gate, Registration,
};
use meridian_control::credentials::Credentials;
use meridian_control::monitor::{self, MonitorHandle, MonitorSettings};
use meridian_control::store::{self, Retention, SqliteStore, Store};
use meridian_proxy::{Proxy, ProxySettings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::operator::Operator;
use crate::performance::Throughput;
use crate::telemetry::Telemetry;
use meridian_admin::AdminAuth;

pub fn main(config_path: Option<&Path>) -> ExitCode {
    init_logging();
    let config = match Config::load(config_path, &Environment::from_process()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("meridian: the configuration is not valid:\n{errors}");
            return ExitCode::from(2);
        }
    };
    // The control side (discovery now; probes, API later) gets a small runtime of its own;
    // the data plane runs on its own thread (see `serve`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("meridian-control")
        .enable_all()
        .build()
    {
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
    let running = start(config).await?;
    shutdown_signal().await;
    running.stop().await
}

/// Meridian running in this process: the monitor and failover machine, the proxy on its own
/// thread, the admin listener. `meridian run` starts one and waits for a signal; `meridian
/// demo` starts one in front of the cluster it builds.
pub struct Running {
    /// The monitor, for its status, failover history and operator commands.
    pub monitor: MonitorHandle,
    /// Where clients connect (the bound address: port 0 in the configuration is resolved).
    pub listen: SocketAddr,
    /// Where the admin API, metrics and dashboard are served.
    pub admin_listen: SocketAddr,
    store: Arc<dyn Store>,
    stop_data_plane: oneshot::Sender<()>,
    /// `None` for a control-only instance.
    data_plane: Option<std::thread::JoinHandle<()>>,
    stop_admin: oneshot::Sender<()>,
    admin_server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .finish_non_exhaustive()
    }
}

/// Starts Meridian for `config` on the current runtime (the data plane gets a thread of its
/// own) and returns once every node has been probed once and both listeners accept.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let settings = ProxySettings::from_config(&config).context("cannot prepare the proxy")?;
    let credentials = Credentials::from_config(&config).context(
        "no credentials for the monitor: set [monitor] user (and password), or add a [[users]] entry",
    )?;
    let store_path = store::default_path(&config.data_dir);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &store_path,
            Retention {
                probe_history: config.monitor.history_retention,
                ..Retention::default()
            },
        )
        .with_context(|| format!("cannot open the store {}", store_path.display()))?,
    );
    let mut monitor_settings =
        MonitorSettings::from_config(&config, credentials).context("cannot prepare the monitor")?;
    // With several instances, failover steps wait for the barrier the coordinator runs.
    let keeper = config.coordination.as_ref().map(|_| {
        let (gate, keeper) = Gate::new();
        monitor_settings.gate = Some(gate);
        keeper
    });
    // Archiving settings are checked before anything starts: a path that cannot go into
    // archive_command is a configuration error.
    let exe = std::env::current_exe().unwrap_or_else(|_| "meridian".into());
    let archive_watch = archiving::WatchSettings::from_config(&config, &exe)
        .context("cannot watch the WAL archive ([backup] wal_archive)")?;
    let monitor = monitor::spawn(monitor_settings, store.clone());
    let archiving = archive_watch.map(|settings| archiving::spawn(settings, monitor.clone()));
    // The backup catalog, for the API and the metrics; a location that cannot even be opened
    // (an unsupported scheme, S3 without a bucket) is a configuration error.
    let backups = match &config.backup {
        Some(backup) => Some(meridian_backup::watch::spawn(
            meridian_backup::Store::open(&backup.location)
                .context("cannot open the backup location ([backup] location)")?,
            meridian_backup::watch::INTERVAL,
        )),
        None => None,
    };
    // Route nothing before every node has been looked at once (bounded: a node that does not
    // answer is judged by its failures later).
    let first = tokio::time::timeout(config.monitor.probe_timeout * 3, monitor.first_round()).await;
    let status = first.unwrap_or_else(|_| monitor.status());
    match status.primary.and_then(|id| status.node(id)) {
        Some(primary) => tracing::info!(node = %primary.name, "primary found"),
        None => tracing::warn!(
            "no node answered as a writable primary; transactions will fail until one does"
        ),
    }

    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin_listen)", config.admin_listen))?;
    let admin_listen = admin.local_addr()?;
    // A control-only instance (several instances through etcd) serves no clients.
    let serves_clients = config.coordination.as_ref().is_none_or(|c| c.proxy);
    let listener = if serves_clients {
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        listener.set_nonblocking(true)?;
        Some(listener)
    } else {
        None
    };
    let listen = match &listener {
        Some(listener) => listener.local_addr()?,
        None => config.listen,
    };
    let classifier = Arc::new(
        meridian_proxy::classifier(&config.routing).context("cannot prepare the classifier")?,
    );
    // Alone, the proxy routes by this instance's monitor; with several instances, writes go by
    // the view the leader published in etcd.
    let coordination = match (&config.coordination, keeper) {
        (Some(coordination), Some(keeper)) => Some(coordinator::spawn(
            coordination_settings(
                coordination,
                config.routing.local_region.as_deref(),
                listener.as_ref().map(|_| listen),
                admin_listen,
            ),
            monitor.clone(),
            keeper,
        )),
        _ => None,
    };
    let view = match &coordination {
        Some(coordination) => coordination.routed.clone(),
        None => monitor.view(),
    };
    let proxy = Proxy::new(settings, view, Some(monitor.fast_signal()));
    let auth = AdminAuth::new(
        config
            .admin_token
            .as_ref()
            .map(|token| token.expose().to_owned()),
    )
    .protect_reads(config.admin_protect_reads);
    let operator = Operator {
        telemetry: Telemetry {
            monitor: monitor.clone(),
            proxy: proxy.clone(),
            store: store.clone(),
            archiving,
            backups,
        },
        monitor: monitor.clone(),
        store: store.clone(),
        throughput: Throughput::spawn(proxy.clone()),
        classifier,
        config: Arc::new(config),
        coordination,
    };
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin_server = tokio::spawn(meridian_admin::serve(
        admin,
        meridian_admin::router(Arc::new(operator), auth),
        async {
            let _ = admin_stopped.await;
        },
    ));
    let (stop_data_plane, stopped) = oneshot::channel::<()>();
    let data_plane = match listener {
        Some(listener) => {
            tracing::info!(listen = %listen, admin = %admin_listen, "accepting clients");
            Some(run_data_plane(proxy, listener, stopped)?)
        }
        None => {
            tracing::info!(admin = %admin_listen, "control only: serving no clients");
            None
        }
    };
    Ok(Running {
        monitor,
        listen,
        admin_listen,
        store,
        stop_data_plane,
        data_plane,
        stop_admin,
        admin_server,
    })
}

impl Running {
    /// Stops accepting clients, lets open transactions finish (bounded by
    /// `proxy.shutdown_timeout`), stops the admin listener and flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_data_plane.send(());
        if let Some(data_plane) = self.data_plane {
            tokio::task::spawn_blocking(move || data_plane.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the data plane thread panicked"))?;
        }
        let _ = self.stop_admin.send(());
        let _ = self.admin_server.await;
        self.store.flush();
        tracing::info!("stopped");
        Ok(())
    }
}

/// The coordinator's settings: the configured ones, with this instance's id defaulting to
/// `<host name>:<listen port>` and its listeners in its registration.
fn coordination_settings(
    config: &CoordinationConfig,
    region: Option<&str>,
    listen: Option<SocketAddr>,
    admin_listen: SocketAddr,
) -> CoordinationSettings {
    let instance = config.instance.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "meridian".to_owned());
        let port = listen.map_or(admin_listen.port(), |l| l.port());
        format!("{host}:{port}")
    });
    CoordinationSettings {
        endpoints: config.etcd.clone(),
        prefix: config.prefix.clone(),
        registration: Registration {
            id: instance.clone(),
            proxy: listen.map(|l| l.to_string()),
            admin: admin_listen.to_string(),
            region: region.map(str::to_owned),
            roles: [("proxy", config.proxy), ("control", config.control)]
                .into_iter()
                .filter(|(_, on)| *on)
                .map(|(role, _)| role.to_owned())
                .collect(),
        },
        instance,
        lease_ttl: config.lease_ttl,
        credentials: config.user.as_ref().map(|user| {
            (
                user.clone(),
                config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
            )
        }),
        ca_cert: config.ca_cert.clone(),
        client_cert: config.cert.clone().zip(config.key.clone()),
        reads_when_fenced: config.reads_when_fenced,
        candidate: config.control,
    }
}

/// Runs the proxy on a thread of its own with a single-threaded runtime.
///
/// Measured on these 2-core machines: a relay task costs about half the user CPU per
/// transaction on a current-thread runtime than on the multi-threaded scheduler, whose
/// cross-thread wake-ups and work stealing show up on every message. PgBouncer is
/// single-threaded for the same reason.
fn run_data_plane(
    proxy: Proxy,
    listener: std::net::TcpListener,
    stopped: oneshot::Receiver<()>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the data plane runtime")?;
    Ok(std::thread::Builder::new()
        .name("meridian-proxy".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        proxy
                            .run(listener, async {
                                let _ = stopped.await;
                            })
                            .await
                    }
                    Err(e) => tracing::error!("cannot use the listener: {e}"),
                }
            })
        })?)
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
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_target(false)
        .init();
}

/// What is logged: `MERIDIAN_LOG` (e.g. `debug`), `info` by default.
pub(crate) fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}
