//! `Config::load` through the public API, with real files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_config::{
    AuthMethod, Config, ConfigError, ENV_OVERRIDES, Environment, PoolMode, PrimaryReads,
    ReadYourWrites, RoutingConfig, ServerTlsMode,
};

/// A config directory holding `meridian.toml` with `text`.
struct File {
    dir: tempfile::TempDir,
}

impl File {
    fn new(text: &str) -> File {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("meridian.toml"), text).expect("write config");
        File { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("meridian.toml")
    }

    fn load(&self, env: &[(&str, &str)]) -> Result<Config, meridian_config::ConfigErrors> {
        Config::load(
            Some(&self.path()),
            &Environment::from_pairs(env.iter().copied()),
        )
    }
}

const NODE: &str =
    "[[regions]]\nname = \"us-east\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"10.0.0.1\"\n";

#[test]
fn a_minimal_file_gets_every_default() {
    let file = File::new(NODE);
    let config = file.load(&[]).expect("valid");
    assert_eq!(config.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(config.data_dir, file.dir.path().join("meridian-data"));

    let proxy = &config.proxy;
    assert_eq!(proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(proxy.max_client_connections, 10_000);
    assert_eq!(proxy.server_reset_query.as_deref(), Some("DISCARD ALL"));
    assert_eq!(proxy.client_login_timeout, Duration::from_secs(10));
    assert_eq!(proxy.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(proxy.max_message_size, 64 * 1024 * 1024);
    assert_eq!(proxy.failover_buffer_timeout, Duration::from_secs(15));
    assert_eq!(proxy.failover_buffer_size, 10_000);

    let pool = &config.pool;
    assert_eq!((pool.min_size, pool.max_size), (0, 20));
    assert_eq!(pool.connect_timeout, Duration::from_secs(5));
    assert_eq!(pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(pool.max_lifetime, Some(Duration::from_secs(3600)));

    assert_eq!(
        config.routing,
        RoutingConfig {
            read_write_split: true,
            local_region: None,
            max_replica_lag_bytes: 16 * 1024 * 1024,
            max_replica_lag: Duration::from_secs(10),
            primary_reads: PrimaryReads::Fallback,
            read_your_writes: ReadYourWrites::Session,
            causal_read_timeout: Duration::from_millis(50),
            pin_session_settings: false,
            write_functions: Vec::new(),
        }
    );

    assert_eq!(config.tls, None);
    assert_eq!(config.server_tls.mode, ServerTlsMode::Prefer);
    assert_eq!(config.server_tls.root_cert, None);
    assert!(config.users.is_empty());

    let region = &config.regions[0];
    assert_eq!((region.name.as_str(), region.priority), ("us-east", 0));
    assert_eq!(
        (region.probe_interval, region.failover_timeout, region.ssl),
        (None, None, None)
    );
    let node = &region.nodes[0];
    assert_eq!(
        (node.name.as_str(), node.host.as_str(), node.port),
        ("pg1", "10.0.0.1", 5432)
    );
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let file = File::new(&format!(
        "data_dir = \"state\"\n[tls]\ncert = \"tls/server.crt\"\nkey = \"/abs/server.key\"\n\
         [server_tls]\nmode = \"verify-full\"\nroot_cert = \"../root.crt\"\n{NODE}"
    ));
    let dir = file.dir.path();
    let config = file.load(&[]).expect("valid");
    assert_eq!(config.data_dir, dir.join("state"));
    let tls = config.tls.expect("tls");
    assert_eq!(tls.cert, dir.join("tls/server.crt"));
    assert_eq!(tls.key, Path::new("/abs/server.key"));
    assert_eq!(config.server_tls.root_cert, Some(dir.join("../root.crt")));

    // From the environment, a path is as written: relative to the current directory.
    let config = file
        .load(&[
            ("MERIDIAN_DATA_DIR", "elsewhere"),
            ("MERIDIAN_TLS_CERT", "c.pem"),
        ])
        .expect("valid");
    assert_eq!(config.data_dir, Path::new("elsewhere"));
    assert_eq!(config.tls.expect("tls").cert, Path::new("c.pem"));
}

#[test]
fn unknown_fields_name_the_field_and_the_file() {
    let file = File::new(&format!("{NODE}\n[pool]\nmax_sise = 3\n"));
    let errors = file.load(&[]).unwrap_err();
    let [
        ConfigError::Parse {
            path,
            line,
            column,
            message,
        },
    ] = errors.errors()
    else {
        panic!("{errors:#?}");
    };
    assert_eq!((path, *line, *column), (&file.path(), 8, 1));
    assert!(
        message.starts_with("unknown field `max_sise`, expected one of `min_size`"),
        "{message}"
    );
    assert!(message.ends_with("(in `pool`)"), "{message}");
    let rendered = errors.to_string();
    assert!(rendered.starts_with(&format!(
        "{}:8:1: unknown field `max_sise`",
        file.path().display()
    )));
}

#[test]
fn toml_errors_keep_line_and_column() {
    let file = File::new("listen = \"127.0.0.1:6432\"\n[pool]\nmax_size = \"ten\"\n");
    let errors = file.load(&[]).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3:12: invalid type: string \"ten\", expected a whole number (in `pool.max_size`)",
            file.path().display()
        )
    );
    let file = File::new("[proxy]\nclient_login_timeout = \"10 fortnights\"\n");
    let rendered = file.load(&[]).unwrap_err().to_string();
    assert!(rendered.contains(":2:24: invalid value"), "{rendered}");
}

#[test]
fn a_missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let errors = Config::load(Some(&path), &Environment::default()).unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with(&format!("cannot read {}: ", path.display()))
    );
}

#[test]
fn the_override_table_lists_every_variable() {
    let variables: Vec<&str> = ENV_OVERRIDES.iter().map(|o| o.variable).collect();
    assert_eq!(
        variables,
        [
            "MERIDIAN_LISTEN",
            "MERIDIAN_ADMIN_LISTEN",
            "MERIDIAN_PROBE_INTERVAL",
            "MERIDIAN_MONITOR_USER",
            "MERIDIAN_MONITOR_PASSWORD",
            "MERIDIAN_FAILOVER_AUTOMATIC",
            "MERIDIAN_ADMIN_TOKEN",
            "MERIDIAN_ADMIN_PROTECT_READS",
            "MERIDIAN_DATA_DIR",
            "MERIDIAN_POOL_MODE",
            "MERIDIAN_MAX_CLIENT_CONNECTIONS",
            "MERIDIAN_FAILOVER_BUFFER_TIMEOUT",
            "MERIDIAN_FAILOVER_BUFFER_SIZE",
            "MERIDIAN_READ_WRITE_SPLIT",
            "MERIDIAN_LOCAL_REGION",
            "MERIDIAN_PRIMARY_READS",
            "MERIDIAN_READ_YOUR_WRITES",
            "MERIDIAN_CAUSAL_READ_TIMEOUT",
            "MERIDIAN_MAX_REPLICA_LAG_BYTES",
            "MERIDIAN_MAX_REPLICA_LAG_SECONDS",
            "MERIDIAN_POOL_MIN_SIZE",
            "MERIDIAN_POOL_MAX_SIZE",
            "MERIDIAN_POOL_CONNECT_TIMEOUT",
            "MERIDIAN_POOL_CHECKOUT_TIMEOUT",
            "MERIDIAN_POOL_IDLE_TIMEOUT",
            "MERIDIAN_POOL_MAX_LIFETIME",
            "MERIDIAN_SERVER_TLS_MODE",
            "MERIDIAN_TLS_CERT",
            "MERIDIAN_TLS_KEY",
            "MERIDIAN_ETCD",
            "MERIDIAN_ETCD_PREFIX",
            "MERIDIAN_INSTANCE",
            "MERIDIAN_ETCD_USER",
            "MERIDIAN_ETCD_PASSWORD",
            "MERIDIAN_BACKUP_LOCATION",
            "MERIDIAN_WAL_ARCHIVE_DIR",
        ]
    );
    assert!(
        ENV_OVERRIDES
            .iter()
            .all(|o| !o.field.is_empty() && !o.description.is_empty())
    );
}

/// (region, priority, [(host, port)])
type Shape = (String, i32, Vec<(String, u16)>);

fn shape(config: &Config) -> Vec<Shape> {
    let regions = config.regions.iter();
    regions
        .map(|r| {
            let nodes = r.nodes.iter().map(|n| (n.host.clone(), n.port)).collect();
            (r.name.clone(), r.priority, nodes)
        })
        .collect()
}

#[test]
fn single_region_env_multi_region_env_and_toml_agree() {
    let single = Config::load(
        None,
        &Environment::from_pairs([
            ("DATABASE_URL", "postgres://app:pw@10.0.0.1:5432/orders"),
            (
                "DATABASE_REPLICA_URL",
                "postgres://app:pw@10.0.0.2:5433/orders",
            ),
            ("DATABASE_REPLICA_URLS", "postgres://app:pw@10.0.0.3/orders"),
        ]),
    )
    .expect("single-region environment");
    let multi = Config::load(
        None,
        &Environment::from_pairs([
            ("DB_DEFAULT_URL", "postgres://app:pw@10.0.0.1:5432/orders"),
            (
                "DB_DEFAULT_REPLICA1_URL",
                "postgres://app:pw@10.0.0.2:5433/orders",
            ),
            (
                "DB_DEFAULT_REPLICA2_URL",
                "postgres://app:pw@10.0.0.3/orders",
            ),
        ]),
    )
    .expect("multi-region environment");
    let toml = |names: [&str; 3]| {
        format!(
            "[[users]]\nname = \"app\"\npassword = \"pw\"\n\
             [[regions]]\nname = \"default\"\npriority = 0\n\
             [[regions.nodes]]\nname = \"{}\"\nhost = \"10.0.0.1\"\nport = 5432\n\
             [[regions.nodes]]\nname = \"{}\"\nhost = \"10.0.0.2\"\nport = 5433\n\
             [[regions.nodes]]\nname = \"{}\"\nhost = \"10.0.0.3\"\n",
            names[0], names[1], names[2]
        )
    };
    let from_file = |text: String| File::new(&text).load(&[]).expect("valid file");
    let single_file = from_file(toml(["primary", "replica1", "replica2"]));
    let multi_file = from_file(toml(["default-1", "default-2", "default-3"]));

    // The same regions, priorities, hosts and ports; node names follow each style.
    assert_eq!(shape(&single), shape(&multi));
    assert_eq!(shape(&single), shape(&single_file));
    assert_eq!(single.regions, single_file.regions);
    assert_eq!(multi.regions, multi_file.regions);
    // And the same user.
    assert_eq!(single.users, single_file.users);
    assert_eq!(multi.users, single_file.users);
    assert_eq!(single.users[0].auth, AuthMethod::ScramSha256);

    // Several regions: the file in the environment's order (priority, then name).
    let env = Config::load(
        None,
        &Environment::from_pairs([
            ("DB_EU_WEST_URL", "postgres://app:pw@eu1/orders"),
            ("DB_US_EAST_URL", "postgres://app:pw@us1/orders"),
            (
                "DB_US_EAST_REPLICA1_URL",
                "postgres://app:pw@us2:6000/orders",
            ),
            ("DB_US_EAST_PRIORITY", "10"),
            ("DB_US_EAST_HEALTH_INTERVAL", "1000"),
            ("DB_US_EAST_SSL", "require"),
        ]),
    )
    .expect("multi-region environment");
    let file = from_file(
        "[[users]]\nname = \"app\"\npassword = \"pw\"\n\
         [[regions]]\nname = \"us-east\"\npriority = 10\nprobe_interval = \"1s\"\nssl = \"require\"\n\
         [[regions.nodes]]\nname = \"us-east-1\"\nhost = \"us1\"\n\
         [[regions.nodes]]\nname = \"us-east-2\"\nhost = \"us2\"\nport = 6000\n\
         [[regions]]\nname = \"eu-west\"\n\
         [[regions.nodes]]\nname = \"eu-west-1\"\nhost = \"eu1\"\n"
            .to_owned(),
    );
    assert_eq!(env.regions, file.regions);
}

const HUNTER: &str = "hunter2";

/// Asserts that neither the result's `Debug` nor its rendered errors show the password.
fn assert_hidden(what: &str, result: Result<Config, meridian_config::ConfigErrors>) {
    let debug = format!("{result:?}");
    assert!(
        !debug.contains(HUNTER),
        "{what}: Debug shows the secret: {debug}"
    );
    if let Err(errors) = &result {
        let rendered = errors.to_string();
        assert!(
            !rendered.contains(HUNTER),
            "{what}: error shows the secret: {rendered}"
        );
        for error in errors.errors() {
            assert!(!format!("{error:?}").contains(HUNTER), "{what}: {error:?}");
        }
    }
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let user = |fields: &str| format!("[[users]]\nname = \"app\"\n{fields}\n{NODE}");
    let files = [
        (
            "valid user",
            user("password = \"hunter2\"\nserver_password = \"hunter2\""),
        ),
        (
            "unknown field",
            user("password = \"hunter2\"\npasword = \"hunter2\""),
        ),
        ("unquoted", user("password = hunter2")),
        ("unterminated", user("password = \"hunter2")),
        (
            "unterminated server",
            user("server_password = \"hunter2\nauth = \"trust\""),
        ),
        (
            "md5 with verifier",
            user("auth = \"md5\"\npassword = \"SCRAM-SHA-256$hunter2\""),
        ),
        (
            "scram with md5",
            user("password = \"md5hunter2hunter2hunter2hunter2ab\""),
        ),
        (
            "md5 hash",
            user(
                "auth = \"md5\"\npassword = \"md5abcdefabcdefabcdefabcdefabcdef00\"\nserver_password = \"hunter2\"",
            ),
        ),
        (
            "trust",
            user("auth = \"trust\"\npassword = \"hunter2\"\nserver_password = \"hunter2\""),
        ),
        (
            "trust outside",
            format!(
                "listen = \"0.0.0.0:1\"\n{}",
                user("auth = \"trust\"\npassword = \"hunter2\"")
            ),
        ),
        (
            "duplicate",
            format!(
                "{}{}",
                user("password = \"hunter2\""),
                user("password = \"hunter2\"")
            ),
        ),
        ("wrong type", user("password = [\"hunter2\"]")),
        (
            "admin token",
            format!(
                "admin_token = \"hunter2\"\n{}",
                user("password = \"hunter2\"")
            ),
        ),
        (
            "admin token of the wrong type",
            format!("admin_token = 12\n{}", user("password = \"hunter2\"")),
        ),
        (
            "bad field next to it",
            user("password = \"hunter2\"\nauth = \"md6\""),
        ),
    ];
    for (what, text) in &files {
        assert_hidden(what, File::new(text).load(&[]));
        assert_hidden(
            what,
            File::new(text).load(&[("DATABASE_URL", "postgres://a:hunter2@h/d")]),
        );
    }
    let urls = [
        "postgres://app:hunter2@h/db",
        "postgres://app:hunter2@h:0/db",
        "postgres://app:hunter2@h:99999/db",
        "postgres://app:hunter2@h/db?sslmode=verify-full",
        "postgres://app:hunter2@h/db?password=hunter2",
        "postgres://app:hunter2@h/db?options=hunter2",
        "postgres://app:hunter2@h1,h2/db",
        "postgres://app:hunter2@/db",
        "postgres://:hunter2@h/db",
        "postgres://app:%ff%fehunter2@h/db",
        "mysql://app:hunter2@h/db",
        "app:hunter2@h/db",
        "postgres://app:hunter2@h/db#hunter2",
        "hunter2",
    ];
    for url in urls {
        for env in [
            vec![("DATABASE_URL", url)],
            vec![("DATABASE_URL", url), ("MERIDIAN_LISTEN", "0.0.0.0:6432")],
            vec![
                ("DATABASE_URL", "postgres://app:other@h/db"),
                ("DATABASE_REPLICA_URLS", url),
            ],
            vec![
                ("DB_EU_URL", url),
                ("DB_US_REPLICA1_URL", "postgres://x:y@h/z"),
            ],
            vec![("DB_EU_REPLICA2_URL", url)],
            vec![("DATABASE_URL", url), ("DB_EU_URL", url)],
        ] {
            let env = Environment::from_pairs(env);
            assert!(!format!("{env:?}").contains(HUNTER));
            assert_hidden(url, Config::load(None, &env));
        }
        // redact_url hides passwords, not other parts that might happen to hold the same text.
        if !url.contains("options=") && !url.contains('#') {
            let redacted = meridian_config::redact_url(url);
            assert!(!redacted.contains(HUNTER), "{redacted}");
        }
    }
}
