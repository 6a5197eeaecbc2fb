//! The cluster's topology from the environment, for running without a config file.
//!
//! Two styles, never mixed:
//!
//! - Single region, as the original service read it: `DATABASE_URL` (the node it called the
//!   primary; Meridian still observes which node is), optional `DATABASE_REPLICA_URL` and
//!   `DATABASE_REPLICA_URLS` (comma-separated; percent-encode a comma inside a password as
//!   `%2C`). One region `default`, priority 0, nodes `primary`, `replica1`, `replica2`, ... in
//!   that order. Replicas without `DATABASE_URL` are refused.
//! - Several regions: `DB_<REGION>_URL`, `DB_<REGION>_REPLICA<N>_URL` (N = 1, 2, ... without
//!   gaps), `DB_<REGION>_PRIORITY`, `DB_<REGION>_HEALTH_INTERVAL` and
//!   `DB_<REGION>_FAILOVER_TIMEOUT` (milliseconds), `DB_<REGION>_SSL`. `<REGION>` is upper-case
//!   letters, digits and `_`; the region is its lower-case form with `_` -> `-`
//!   (`DB_US_EAST_URL` -> `us-east`). A name ending in `_REPLICA<digits>_URL` is always a replica,
//!   which keeps the parse unambiguous. Nodes are `<region>-1` for `DB_<REGION>_URL` and
//!   `<region>-<N+1>` for `REPLICA<N>`, so a node keeps its name when other variables come and go
//!   (a region of replicas only has no `<region>-1`). Regions are ordered by priority, highest
//!   first, then by name.
//!
//! Node names say nothing about roles: Meridian observes which node is the primary. Every URL
//! must carry the same user, password and database; that user becomes the one `[[users]]` entry
//! (SCRAM-SHA-256 with the URL's password, or trust on a loopback listener when the URL has no
//! password). The database is only compared, not kept: clients choose theirs when they connect.
//! `sslmode` in the URLs sets `server_tls.mode`. Other `DB_*` variables are not Meridian's and are
//! ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{AuthMethod, ServerTlsMode};
use crate::defaults;
use crate::env::Environment;
use crate::error::ConfigError;
use crate::file::{RawConfig, RawNode, RawRegion, RawUser};
use crate::origin::Origins;
use crate::postgres_url::{self, PostgresUrl};
use crate::secret::Secret;

const SINGLE_PRIMARY: &str = "DATABASE_URL";
const SINGLE_REPLICA: &str = "DATABASE_REPLICA_URL";
const SINGLE_REPLICAS: &str = "DATABASE_REPLICA_URLS";
const SINGLE_REGION: &str = "default";

/// The names of the set variables that define topology, sorted.
pub(crate) fn variables(env: &Environment) -> Vec<String> {
    env.iter()
        .filter(|(name, _)| classify(name).is_some())
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Builds regions, the user and the server TLS mode from the environment into `raw` (which holds
/// no regions or users: there is no file), recording origins.
pub(crate) fn apply(
    raw: &mut RawConfig,
    env: &Environment,
    origins: &mut Origins,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut single = Vec::new();
    let mut multi: BTreeMap<String, RegionVariables> = BTreeMap::new();
    for (name, value) in env.iter() {
        match classify(name) {
            None => {}
            Some(Variable::Single) => single.push(name),
            Some(Variable::Region { region, item }) => {
                if !region
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                {
                    errors.push(ConfigError::invalid(
                        name,
                        None,
                        format!(
                            "the region part {region:?} must be upper-case letters, digits and \
                             '_' (e.g. DB_US_EAST_URL for region us-east)"
                        ),
                    ));
                    continue;
                }
                let region_name = region.to_ascii_lowercase().replace('_', "-");
                let vars = multi.entry(region_name).or_insert_with(|| RegionVariables {
                    prefix: format!("DB_{region}"),
                    ..RegionVariables::default()
                });
                vars.items.push((item, name, value));
            }
        }
    }
    if !single.is_empty() && !multi.is_empty() {
        let mut names = single;
        names.extend(
            multi
                .values()
                .flat_map(|vars| vars.items.iter().map(|(_, name, _)| *name)),
        );
        errors.push(ConfigError::invalid(
            names.join(", "),
            None,
            "both the single-region style (DATABASE_URL) and the multi-region style \
             (DB_<REGION>_URL) are set: use one of them",
        ));
        return errors;
    }

    let regions = if single.is_empty() {
        multi
            .into_iter()
            .filter_map(|(name, vars)| vars.into_region(name, &mut errors))
            .collect()
    } else {
        single_region(env, &mut errors).into_iter().collect()
    };
    let regions = sort(regions);

    let listen_is_loopback = raw
        .listen
        .as_deref()
        .unwrap_or(defaults::LISTEN)
        .parse::<SocketAddr>()
        .ok()
        .map(|listen| listen.ip().is_loopback());
    let mut urls = Vec::new();
    for region in regions {
        let path = format!("regions[{}]", raw.regions.len());
        let mut nodes = Vec::new();
        for (name, label, value) in region.nodes {
            match postgres_url::parse(value) {
                Ok(url) => {
                    origins.set(format!("{path}.nodes[{}]", nodes.len()), label.clone());
                    nodes.push(RawNode {
                        name: Some(name),
                        host: Some(url.host.clone()),
                        port: Some(i64::from(url.port)),
                        no_failover: None,
                        priority: None,
                        data_dir: None,
                    });
                    urls.push((label, url));
                }
                Err(problem) => errors.push(ConfigError::invalid(label, None, problem)),
            }
        }
        if nodes.is_empty() {
            // Every URL of the region was refused, and each refusal is already reported.
            continue;
        }
        origins.set(format!("{path}.name"), region.label.clone());
        for (field, variable) in [
            ("priority", region.priority.map(|(v, _)| v)),
            ("probe_interval", region.probe_interval.map(|(v, _)| v)),
            ("failover_timeout", region.failover_timeout.map(|(v, _)| v)),
            ("ssl", region.ssl.map(|(v, _)| v)),
        ] {
            if let Some(variable) = variable {
                origins.set(format!("{path}.{field}"), variable);
            }
        }
        raw.regions.push(RawRegion {
            name: Some(region.name),
            priority: region.priority.map(|(_, value)| value),
            probe_interval: region.probe_interval.map(|(_, value)| value),
            failover_timeout: region.failover_timeout.map(|(_, value)| value),
            ssl: region.ssl.map(|(_, value)| value),
            nodes,
        });
    }
    credentials(raw, &urls, listen_is_loopback, origins, &mut errors);
    server_tls_mode(raw, &urls, origins, &mut errors);
    errors
}

enum Variable<'a> {
    Single,
    Region { region: &'a str, item: Item<'a> },
}

#[derive(Clone, Copy)]
enum Item<'a> {
    Url,
    /// The digits after `_REPLICA`, possibly empty or malformed.
    Replica(&'a str),
    Priority,
    HealthInterval,
    FailoverTimeout,
    Ssl,
}

fn classify(name: &str) -> Option<Variable<'_>> {
    if matches!(name, SINGLE_PRIMARY | SINGLE_REPLICA | SINGLE_REPLICAS) {
        return Some(Variable::Single);
    }
    let rest = name.strip_prefix("DB_")?;
    let (region, item) = if let Some(region) = rest.strip_suffix("_HEALTH_INTERVAL") {
        (region, Item::HealthInterval)
    } else if let Some(region) = rest.strip_suffix("_FAILOVER_TIMEOUT") {
        (region, Item::FailoverTimeout)
    } else if let Some(region) = rest.strip_suffix("_PRIORITY") {
        (region, Item::Priority)
    } else if let Some(region) = rest.strip_suffix("_SSL") {
        (region, Item::Ssl)
    } else if let Some(before) = rest.strip_suffix("_URL") {
        match before.rsplit_once("_REPLICA") {
            Some((region, digits)) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                (region, Item::Replica(digits))
            }
            _ => (before, Item::Url),
        }
    } else {
        return None;
    };
    (!region.is_empty()).then_some(Variable::Region { region, item })
}

/// One region of the environment, before its URLs are parsed.
struct EnvRegion<'a> {
    name: String,
    /// The variable that names the region in messages.
    label: String,
    priority: Option<(&'a str, i64)>,
    probe_interval: Option<(&'a str, Duration)>,
    failover_timeout: Option<(&'a str, Duration)>,
    ssl: Option<(&'a str, ServerTlsMode)>,
    /// (node name, variable that names it, URL)
    nodes: Vec<(String, String, &'a str)>,
}

fn single_region<'a>(env: &'a Environment, errors: &mut Vec<ConfigError>) -> Option<EnvRegion<'a>> {
    let mut nodes = Vec::new();
    let mut replicas = Vec::new();
    if let Some(url) = env.get(SINGLE_REPLICA) {
        replicas.push((SINGLE_REPLICA.to_owned(), url));
    }
    if let Some(list) = env.get(SINGLE_REPLICAS) {
        let items = list.split(',').map(str::trim).filter(|url| !url.is_empty());
        for (i, url) in items.enumerate() {
            replicas.push((format!("{SINGLE_REPLICAS} (item {})", i + 1), url));
        }
    }
    match env.get(SINGLE_PRIMARY) {
        Some(url) => nodes.push(("primary".to_owned(), SINGLE_PRIMARY.to_owned(), url)),
        None => {
            let mut names: Vec<&str> = vec![];
            names.extend(
                [SINGLE_REPLICA, SINGLE_REPLICAS]
                    .iter()
                    .filter(|n| env.get(n).is_some()),
            );
            errors.push(ConfigError::invalid(
                names.join(", "),
                None,
                "replicas are set but DATABASE_URL is not: set DATABASE_URL to the primary",
            ));
            return None;
        }
    }
    for (i, (label, url)) in replicas.into_iter().enumerate() {
        nodes.push((format!("replica{}", i + 1), label, url));
    }
    Some(EnvRegion {
        name: SINGLE_REGION.to_owned(),
        label: SINGLE_PRIMARY.to_owned(),
        priority: None,
        probe_interval: None,
        failover_timeout: None,
        ssl: None,
        nodes,
    })
}

#[derive(Default)]
struct RegionVariables<'a> {
    /// `DB_<REGION>`, to name variables in messages.
    prefix: String,
    /// (what, variable, value), in variable-name order.
    items: Vec<(Item<'a>, &'a str, &'a str)>,
}

impl<'a> RegionVariables<'a> {
    fn into_region(self, name: String, errors: &mut Vec<ConfigError>) -> Option<EnvRegion<'a>> {
        let prefix = &self.prefix;
        let mut region = EnvRegion {
            label: self
                .items
                .first()
                .map_or_else(String::new, |(_, v, _)| (*v).to_owned()),
            name,
            priority: None,
            probe_interval: None,
            failover_timeout: None,
            ssl: None,
            nodes: Vec::new(),
        };
        let errors_before = errors.len();
        let mut first = None;
        let mut replicas = BTreeMap::new();
        for (item, variable, value) in self.items {
            let quoted = Some(format!("{value:?}"));
            let invalid = |problem: String| ConfigError::invalid(variable, quoted.clone(), problem);
            match item {
                Item::Url => first = Some((variable, value)),
                Item::Replica(digits) => match digits.parse::<u32>() {
                    Ok(n) if n >= 1 && digits == n.to_string() => {
                        replicas.insert(n, (variable, value));
                    }
                    _ => errors.push(ConfigError::invalid(
                        variable,
                        None,
                        format!(
                            "replicas are numbered 1, 2, 3, ... without leading zeros, e.g. \
                             {prefix}_REPLICA1_URL"
                        ),
                    )),
                },
                Item::Priority => match value.trim().parse() {
                    Ok(priority) => region.priority = Some((variable, priority)),
                    Err(_) => errors.push(invalid(
                        "must be a whole number, e.g. 10 (higher is preferred)".to_owned(),
                    )),
                },
                Item::HealthInterval | Item::FailoverTimeout => match value.trim().parse() {
                    Ok(millis) => {
                        let setting = Some((variable, Duration::from_millis(millis)));
                        if matches!(item, Item::HealthInterval) {
                            region.probe_interval = setting;
                        } else {
                            region.failover_timeout = setting;
                        }
                    }
                    Err(_) => errors.push(invalid(
                        "must be a whole number of milliseconds, e.g. 1000".to_owned(),
                    )),
                },
                Item::Ssl => match parse_ssl(value) {
                    Some(mode) => region.ssl = Some((variable, mode)),
                    None => errors.push(invalid(
                        "must be true (= require), false (= disable), disable, prefer, require \
                         or verify-full"
                            .to_owned(),
                    )),
                },
            }
        }
        if let Some((variable, url)) = first {
            region.label = variable.to_owned();
            region
                .nodes
                .push((format!("{}-1", region.name), variable.to_owned(), url));
        }
        let highest = replicas.keys().next_back().copied().unwrap_or(0);
        for n in 1..highest {
            if !replicas.contains_key(&n) {
                errors.push(ConfigError::invalid(
                    format!("{prefix}_REPLICA{n}_URL"),
                    None,
                    format!(
                        "not set, but {prefix}_REPLICA{highest}_URL is: number a region's \
                         replicas 1, 2, 3, ... without gaps"
                    ),
                ));
            }
        }
        for (n, (variable, url)) in replicas {
            region.nodes.push((
                format!("{}-{}", region.name, n + 1),
                variable.to_owned(),
                url,
            ));
        }
        if region.nodes.is_empty() {
            if errors.len() > errors_before {
                // Its variables are already reported as invalid.
                return None;
            }
            errors.push(ConfigError::invalid(
                region.label,
                None,
                format!(
                    "region {:?} has no {prefix}_URL and no {prefix}_REPLICA<N>_URL: add its \
                     nodes, or unset its settings",
                    region.name
                ),
            ));
            return None;
        }
        Some(region)
    }
}

/// `DB_<REGION>_SSL`: booleans as most drivers read them, or an sslmode.
fn parse_ssl(value: &str) -> Option<ServerTlsMode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(ServerTlsMode::Require),
        "false" => Some(ServerTlsMode::Disable),
        "allow" => Some(ServerTlsMode::Prefer),
        other => other.parse().ok(),
    }
}

fn sort(mut regions: Vec<EnvRegion<'_>>) -> Vec<EnvRegion<'_>> {
    regions.sort_by(|a, b| {
        let priority = |r: &EnvRegion| r.priority.map_or(defaults::PRIORITY, |(_, p)| p);
        priority(b)
            .cmp(&priority(a))
            .then_with(|| a.name.cmp(&b.name))
    });
    regions
}

/// The one user every URL logs in as.
fn credentials(
    raw: &mut RawConfig,
    urls: &[(String, PostgresUrl)],
    listen_is_loopback: Option<bool>,
    origins: &mut Origins,
    errors: &mut Vec<ConfigError>,
) {
    let Some((first_label, first)) = urls.first() else {
        return;
    };
    for (label, url) in &urls[1..] {
        let differs = [
            ("user name", url.user != first.user),
            ("password", url.password != first.password),
            ("database", url.database != first.database),
        ];
        for (what, _) in differs.iter().filter(|(_, differs)| *differs) {
            errors.push(ConfigError::invalid(
                format!("{first_label}, {label}"),
                None,
                format!(
                    "the URLs differ in the {what}: all of them must carry the same user, \
                     password and database, the one user clients log in as"
                ),
            ));
        }
    }
    let password: Option<Secret> = first.password.clone();
    let auth = match (&password, listen_is_loopback) {
        (Some(_), _) => AuthMethod::ScramSha256,
        (None, Some(true) | None) => AuthMethod::Trust,
        (None, Some(false)) => {
            errors.push(ConfigError::invalid(
                first_label.clone(),
                None,
                "has no password, and one is required when Meridian listens on a non-loopback \
                 address (anyone who can reach the port could log in): put the password in the \
                 URL (postgres://USER:PASSWORD@HOST/DATABASE), or listen on 127.0.0.1",
            ));
            return;
        }
    };
    origins.set("users[0]", first_label.clone());
    raw.users.push(RawUser {
        name: Some(first.user.clone()),
        password,
        auth: Some(auth),
        server_user: None,
        server_password: None,
    });
}

/// `sslmode` in the URLs becomes `server_tls.mode`.
fn server_tls_mode(
    raw: &mut RawConfig,
    urls: &[(String, PostgresUrl)],
    origins: &mut Origins,
    errors: &mut Vec<ConfigError>,
) {
    let with_mode: Vec<(&String, ServerTlsMode)> = urls
        .iter()
        .filter_map(|(label, url)| url.sslmode.map(|mode| (label, mode)))
        .collect();
    let Some(&(first_label, mode)) = with_mode.first() else {
        return;
    };
    for (label, other) in &with_mode[1..] {
        if *other != mode {
            errors.push(ConfigError::invalid(
                format!("{first_label}, {label}"),
                None,
                format!(
                    "the URLs differ in sslmode ({mode} and {other}): give them the same \
                     sslmode, or remove it and set MERIDIAN_SERVER_TLS_MODE"
                ),
            ));
        }
    }
    match raw.server_tls.mode {
        Some(set) if set != mode => errors.push(ConfigError::invalid(
            format!("MERIDIAN_SERVER_TLS_MODE, {first_label}"),
            None,
            format!("MERIDIAN_SERVER_TLS_MODE = {set} but the URL says sslmode={mode}: remove one"),
        )),
        Some(_) => {}
        None => {
            raw.server_tls.mode = Some(mode);
            origins.set("server_tls.mode", first_label.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{AuthMethod, Config, Environment, PasswordSpec, Secret, ServerTlsMode};

    fn load(env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        crate::load_text(None, &Environment::from_pairs(env.iter().copied()))
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
    }

    fn accept(env: &[(&str, &str)]) -> Config {
        load(env).unwrap_or_else(|errors| panic!("{errors:#?}"))
    }

    fn refuse(env: &[(&str, &str)]) -> Vec<String> {
        match load(env) {
            Ok(config) => panic!("accepted: {config:#?}"),
            Err(errors) => errors,
        }
    }

    /// (region, priority, [(node, host, port)])
    type Shape = (String, i32, Vec<(String, String, u16)>);

    fn nodes(config: &Config) -> Vec<Shape> {
        config
            .regions
            .iter()
            .map(|region| {
                let nodes = region.nodes.iter();
                let nodes = nodes.map(|n| (n.name.clone(), n.host.clone(), n.port));
                (region.name.clone(), region.priority, nodes.collect())
            })
            .collect()
    }

    fn node(name: &str, host: &str, port: u16) -> (String, String, u16) {
        (name.to_owned(), host.to_owned(), port)
    }

    const URL: &str = "postgres://app:s3cret@10.0.0.1:5432/orders";

    #[test]
    fn single_region_names_nodes_in_order() {
        let config = accept(&[
            ("DATABASE_URL", URL),
            (
                "DATABASE_REPLICA_URL",
                "postgres://app:s3cret@10.0.0.2/orders",
            ),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://app:s3cret@10.0.0.3:5433/orders, ,postgresql://app:s3cret@[fd00::4]/orders,",
            ),
        ]);
        assert_eq!(
            nodes(&config),
            [(
                "default".to_owned(),
                0,
                vec![
                    node("primary", "10.0.0.1", 5432),
                    node("replica1", "10.0.0.2", 5432),
                    node("replica2", "10.0.0.3", 5433),
                    node("replica3", "fd00::4", 5432),
                ]
            )]
        );
        let user = &config.users[..];
        assert_eq!(user.len(), 1);
        assert_eq!(user[0].name, "app");
        assert_eq!(user[0].auth, AuthMethod::ScramSha256);
        assert_eq!(
            user[0].password,
            Some(PasswordSpec::Plain(Secret::new("s3cret")))
        );
        assert_eq!(user[0].server_password, Some(Secret::new("s3cret")));
        assert_eq!(config.data_dir, Path::new("meridian-data"));
    }

    #[test]
    fn single_region_without_replicas_is_fine() {
        let config = accept(&[("DATABASE_URL", URL), ("DATABASE_REPLICA_URL", "")]);
        assert_eq!(
            nodes(&config),
            [(
                "default".to_owned(),
                0,
                vec![node("primary", "10.0.0.1", 5432)]
            )]
        );
    }

    #[test]
    fn replicas_without_database_url_are_refused() {
        let errors = refuse(&[("DATABASE_REPLICA_URL", URL)]);
        assert_eq!(
            errors,
            [
                "DATABASE_REPLICA_URL: replicas are set but DATABASE_URL is not: set DATABASE_URL \
              to the primary"
            ]
        );
    }

    #[test]
    fn no_database_at_all() {
        let errors = refuse(&[("HOME", "/root"), ("DB_HOST", "x"), ("DB_PASSWORD", "y")]);
        assert_eq!(
            errors,
            [
                "no database configured: pass -c meridian.toml, or set DATABASE_URL (single region) \
              or DB_<REGION>_URL (one per region)"
            ]
        );
    }

    #[test]
    fn multi_region_names_orders_and_numbers() {
        let config = accept(&[
            ("DB_US_EAST_URL", "postgres://app:s3cret@10.0.0.1/orders"),
            (
                "DB_US_EAST_REPLICA1_URL",
                "postgres://app:s3cret@10.0.0.2/orders",
            ),
            ("DB_US_EAST_PRIORITY", "10"),
            (
                "DB_EU_WEST_REPLICA1_URL",
                "postgres://app:s3cret@10.1.0.2/orders",
            ),
            (
                "DB_EU_WEST_REPLICA2_URL",
                "postgres://app:s3cret@10.1.0.3:6000/orders",
            ),
            ("DB_EU_WEST_HEALTH_INTERVAL", "500"),
            ("DB_EU_WEST_FAILOVER_TIMEOUT", "30000"),
            ("DB_EU_WEST_SSL", "true"),
            ("DB_AP_1_URL", "postgres://app:s3cret@10.2.0.1/orders"),
            ("DB_HOST", "not ours"),
            ("DB_POOL_SIZE", "not ours"),
        ]);
        assert_eq!(
            nodes(&config),
            [
                (
                    "us-east".to_owned(),
                    10,
                    vec![
                        node("us-east-1", "10.0.0.1", 5432),
                        node("us-east-2", "10.0.0.2", 5432)
                    ]
                ),
                ("ap-1".to_owned(), 0, vec![node("ap-1-1", "10.2.0.1", 5432)]),
                (
                    "eu-west".to_owned(),
                    0,
                    vec![
                        node("eu-west-2", "10.1.0.2", 5432),
                        node("eu-west-3", "10.1.0.3", 6000)
                    ]
                ),
            ]
        );
        let eu = &config.regions[2];
        assert_eq!(
            eu.probe_interval,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            eu.failover_timeout,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(eu.ssl, Some(ServerTlsMode::Require));
        assert_eq!(config.regions[0].ssl, None);
    }

    #[test]
    fn replica_numbers_have_no_gaps_zeros_or_leading_zeros() {
        let errors = refuse(&[
            ("DB_EU_WEST_REPLICA1_URL", URL),
            ("DB_EU_WEST_REPLICA4_URL", URL),
            ("DB_US_REPLICA0_URL", URL),
            ("DB_AP_REPLICA01_URL", URL),
            ("DB_SA_REPLICA_URL", URL),
        ]);
        assert_eq!(
            errors,
            [
                "DB_AP_REPLICA01_URL: replicas are numbered 1, 2, 3, ... without leading zeros, \
                 e.g. DB_AP_REPLICA1_URL",
                "DB_EU_WEST_REPLICA2_URL: not set, but DB_EU_WEST_REPLICA4_URL is: number a \
                 region's replicas 1, 2, 3, ... without gaps",
                "DB_EU_WEST_REPLICA3_URL: not set, but DB_EU_WEST_REPLICA4_URL is: number a \
                 region's replicas 1, 2, 3, ... without gaps",
                "DB_SA_REPLICA_URL: replicas are numbered 1, 2, 3, ... without leading zeros, \
                 e.g. DB_SA_REPLICA1_URL",
                "DB_US_REPLICA0_URL: replicas are numbered 1, 2, 3, ... without leading zeros, \
                 e.g. DB_US_REPLICA1_URL",
            ]
        );
    }

    #[test]
    fn region_settings_must_parse() {
        let errors = refuse(&[
            ("DB_EU_URL", URL),
            ("DB_EU_PRIORITY", "high"),
            ("DB_EU_HEALTH_INTERVAL", "1s"),
            ("DB_EU_FAILOVER_TIMEOUT", "-5"),
            ("DB_EU_SSL", "maybe"),
        ]);
        assert_eq!(
            errors,
            [
                "DB_EU_FAILOVER_TIMEOUT = \"-5\": must be a whole number of milliseconds, e.g. 1000",
                "DB_EU_HEALTH_INTERVAL = \"1s\": must be a whole number of milliseconds, e.g. 1000",
                "DB_EU_PRIORITY = \"high\": must be a whole number, e.g. 10 (higher is preferred)",
                "DB_EU_SSL = \"maybe\": must be true (= require), false (= disable), disable, \
                 prefer, require or verify-full",
            ]
        );
        let errors = refuse(&[("DB_EU_URL", URL), ("DB_EU_PRIORITY", "9999999999")]);
        assert_eq!(
            errors,
            ["DB_EU_PRIORITY = 9999999999: must be between -2147483648 and 2147483647"]
        );
    }

    #[test]
    fn region_settings_without_nodes_are_refused() {
        let errors = refuse(&[
            ("DB_EU_URL", URL),
            ("DB_US_PRIORITY", "3"),
            ("DB_US_SSL", "false"),
        ]);
        assert_eq!(
            errors,
            [
                "DB_US_PRIORITY: region \"us\" has no DB_US_URL and no DB_US_REPLICA<N>_URL: add its \
              nodes, or unset its settings"
            ]
        );
    }

    #[test]
    fn region_part_is_upper_case() {
        let errors = refuse(&[("DB_us_east_URL", URL)]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0],
            "DB_us_east_URL: the region part \"us_east\" must be upper-case letters, digits and \
             '_' (e.g. DB_US_EAST_URL for region us-east)"
        );
    }

    #[test]
    fn both_styles_at_once_are_refused() {
        let errors = refuse(&[
            ("DATABASE_URL", URL),
            ("DB_EU_URL", URL),
            ("DB_EU_PRIORITY", "1"),
        ]);
        assert_eq!(
            errors,
            [
                "DATABASE_URL, DB_EU_PRIORITY, DB_EU_URL: both the single-region style \
              (DATABASE_URL) and the multi-region style (DB_<REGION>_URL) are set: use one of them"
            ]
        );
    }

    #[test]
    fn urls_must_agree_on_credentials_and_database() {
        let errors = refuse(&[
            ("DB_A_URL", "postgres://app:one@h1/orders"),
            ("DB_B_URL", "postgres://app:two@h2/orders"),
            ("DB_C_URL", "postgres://other:one@h3/billing"),
        ]);
        assert_eq!(
            errors,
            [
                "DB_A_URL, DB_B_URL: the URLs differ in the password: all of them must carry the \
                 same user, password and database, the one user clients log in as",
                "DB_A_URL, DB_C_URL: the URLs differ in the user name: all of them must carry the \
                 same user, password and database, the one user clients log in as",
                "DB_A_URL, DB_C_URL: the URLs differ in the database: all of them must carry the \
                 same user, password and database, the one user clients log in as",
            ]
        );
    }

    #[test]
    fn no_password_means_trust_on_loopback_only() {
        let config = accept(&[("DATABASE_URL", "postgres://app@localhost/orders")]);
        assert_eq!(config.users[0].auth, AuthMethod::Trust);
        assert_eq!(config.users[0].password, None);
        let errors = refuse(&[
            ("DATABASE_URL", "postgres://app@localhost/orders"),
            ("MERIDIAN_LISTEN", "0.0.0.0:6432"),
        ]);
        assert_eq!(
            errors,
            [
                "DATABASE_URL: has no password, and one is required when Meridian listens on a \
              non-loopback address (anyone who can reach the port could log in): put the \
              password in the URL (postgres://USER:PASSWORD@HOST/DATABASE), or listen on 127.0.0.1"
            ]
        );
    }

    #[test]
    fn sslmode_sets_server_tls_mode() {
        let ssl = |mode| format!("{URL}?sslmode={mode}");
        let config = accept(&[
            ("DATABASE_URL", ssl("require").as_str()),
            ("DATABASE_REPLICA_URL", URL),
        ]);
        assert_eq!(config.server_tls.mode, ServerTlsMode::Require);
        let config = accept(&[("DATABASE_URL", ssl("allow").as_str())]);
        assert_eq!(config.server_tls.mode, ServerTlsMode::Prefer);
        let errors = refuse(&[
            ("DB_A_URL", ssl("disable").as_str()),
            ("DB_B_URL", ssl("require").as_str()),
        ]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("DB_A_URL, DB_B_URL: the URLs differ in sslmode"));
        let errors = refuse(&[
            ("DATABASE_URL", ssl("require").as_str()),
            ("MERIDIAN_SERVER_TLS_MODE", "disable"),
        ]);
        assert_eq!(
            errors,
            [
                "MERIDIAN_SERVER_TLS_MODE, DATABASE_URL: MERIDIAN_SERVER_TLS_MODE = disable but the \
              URL says sslmode=require: remove one"
            ]
        );
        let errors = refuse(&[("DATABASE_URL", ssl("verify-full").as_str())]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "server_tls.root_cert: missing, but DATABASE_URL selects \"verify-full\""
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_url_parameters_are_refused() {
        let errors = refuse(&[(
            "DATABASE_URL",
            "postgres://app:s3cret@h/db?connect_timeout=5&sslmode=require",
        )]);
        assert_eq!(
            errors,
            [
                "DATABASE_URL: has query parameter(s) \"connect_timeout\" that Meridian does not \
              support: only sslmode is accepted; remove the others"
            ]
        );
    }

    #[test]
    fn node_errors_name_the_variable() {
        let errors = refuse(&[
            ("DB_EU_WEST_URL", URL),
            (
                "DB_EU_WEST_REPLICA1_URL",
                "postgres://app:s3cret@10.0.0.9:0/orders",
            ),
        ]);
        assert_eq!(
            errors,
            ["DB_EU_WEST_REPLICA1_URL = 0: must be between 1 and 65535"]
        );
        let errors = refuse(&[
            ("DATABASE_URL", URL),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://app:s3cret@h/orders,mysql://h",
            ),
        ]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("DATABASE_REPLICA_URLS (item 2): scheme \"mysql\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_file_and_topology_variables_are_ambiguous() {
        let file = "[[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"n\"\nhost = \"h\"\n";
        let env = Environment::from_pairs([("DATABASE_URL", URL), ("DB_EU_PRIORITY", "1")]);
        let errors =
            crate::load_text(Some((Path::new("conf/meridian.toml"), file)), &env).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "DATABASE_URL, DB_EU_PRIORITY: set together with the config file conf/meridian.toml: \
             two sources of topology would be ambiguous; unset them, or run without the file"
        );
    }
}
