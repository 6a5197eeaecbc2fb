//! The README's configuration reference cannot drift from the code:
//!
//! - every key the configuration has (as it serializes, which uses the file's own key names)
//!   appears in the README as `key =` (or as a `[key]` table);
//! - every value the reference block shows uncommented in a table that has defaults is that
//!   key's default (the block is parsed as TOML and compared with the defaults as they
//!   serialize);
//! - the quick start's file loads.

use std::path::Path;

use meridian_config::{Config, Environment};
use serde_json::Value;

const README: &str = include_str!("../../../README.md");

/// Tables whose keys all have defaults; the reference's other tables (`[tls]`, `[[users]]`,
/// `[[regions]]`) show examples.
const DEFAULTED: &[&str] = &[
    "proxy",
    "pool",
    "routing",
    "server_tls",
    "monitor",
    "failover",
];

fn load(dir: &Path, text: &str) -> Config {
    let path = dir.join("meridian.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(
        Some(&path),
        &Environment::from_pairs(std::iter::empty::<(&str, &str)>()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The configuration with every default, as it serializes.
fn defaults(dir: &Path) -> Value {
    let config = load(
        dir,
        "[[users]]\nname = \"app\"\npassword = \"pw\"\n\
         [[regions]]\nname = \"main\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n",
    );
    serde_json::to_value(&config).unwrap()
}

/// The first ```toml block after `heading`.
fn toml_block_after(heading: &str) -> &'static str {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no {heading:?}"));
    let open = start + README[start..].find("```toml\n").unwrap() + "```toml\n".len();
    let close = open + README[open..].find("```").unwrap();
    &README[open..close]
}

/// Every key of `value`, as `section.key` paths (array items under their array's name).
fn keys(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match child {
                    Value::Object(_) => keys(&path, child, out),
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        for item in items {
                            keys(&path, item, out);
                        }
                    }
                    _ => out.push(path),
                }
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Whether the README's `shown` is the default `value`: durations compare as durations
/// (`"60s"` is `"1m"`), paths by their last component (the default is resolved against the
/// file's directory).
fn same(key: &str, shown: &toml::Value, value: &Value) -> bool {
    match (shown, value) {
        (toml::Value::String(a), Value::String(b)) if key == "data_dir" => {
            Path::new(b).ends_with(a)
        }
        (toml::Value::String(a), Value::String(b)) => {
            a == b
                || matches!(
                    (humantime::parse_duration(a), humantime::parse_duration(b)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        (toml::Value::Integer(a), Value::Number(b)) => b.as_i64() == Some(*a),
        (toml::Value::Float(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (toml::Value::Boolean(a), Value::Bool(b)) => a == b,
        (toml::Value::Array(a), Value::Array(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(shown, value)| same(key, shown, value))
        }
        _ => false,
    }
}

#[test]
fn the_readme_documents_every_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    keys("", &defaults(dir.path()), &mut all);
    all.sort();
    all.dedup();
    let missing: Vec<&String> = all
        .iter()
        .filter(|path| {
            let key = path.rsplit('.').next().unwrap();
            !README.contains(&format!("{key} =")) && !README.contains(&format!("[{key}]"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "configuration keys the README does not document (as `key = ...`): {missing:?}"
    );
}

#[test]
fn every_value_the_reference_shows_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = defaults(dir.path());
    let reference: toml::Table = toml_block_after("## Configuration reference")
        .parse()
        .unwrap_or_else(|e| panic!("the reference block is not TOML: {e}"));
    let mut compared = 0;
    let mut wrong = Vec::new();
    let mut check = |path: String, shown: &toml::Value, value: Option<&Value>| {
        let key = path.rsplit('.').next().unwrap().to_owned();
        match value {
            Some(value) if same(&key, shown, value) => compared += 1,
            Some(value) => wrong.push(format!("{path}: README {shown}, default {value}")),
            None => wrong.push(format!("{path}: in the README, not in the configuration")),
        }
    };
    for (key, shown) in &reference {
        match shown {
            toml::Value::Table(table) if DEFAULTED.contains(&key.as_str()) => {
                for (inner, shown) in table {
                    check(
                        format!("{key}.{inner}"),
                        shown,
                        defaults[key.as_str()].get(inner),
                    );
                }
            }
            toml::Value::Table(_) | toml::Value::Array(_) => {}
            _ => check(key.clone(), shown, defaults.get(key)),
        }
    }
    assert!(
        wrong.is_empty(),
        "the reference disagrees with the code: {wrong:#?}"
    );
    // The block is the reference, not an excerpt.
    assert!(compared >= 40, "only {compared} values compared");
}

#[test]
fn the_quick_start_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        toml_block_after("## Quick start: in front of your cluster"),
    );
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.regions[0].nodes.len(), 2);
}
