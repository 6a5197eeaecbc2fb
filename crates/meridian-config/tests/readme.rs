//! The README's configuration reference cannot drift from the code: every key the
//! configuration has (as it serializes, which uses the file's own key names) must appear in
//! the README as `key =` (or as a `[key]` table).

use meridian_config::{Config, Environment};
use serde_json::Value;

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

#[test]
fn the_readme_documents_every_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    std::fs::write(
        &path,
        "[[users]]\nname = \"app\"\npassword = \"pw\"\n\
         [[regions]]\nname = \"main\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let config = Config::load(
        Some(&path),
        &Environment::from_pairs(std::iter::empty::<(&str, &str)>()),
    )
    .unwrap();
    let json = serde_json::to_value(&config).unwrap();
    let mut all = Vec::new();
    keys("", &json, &mut all);
    all.sort();
    all.dedup();
    let readme = include_str!("../../../README.md");
    let missing: Vec<&String> = all
        .iter()
        .filter(|path| {
            let key = path.rsplit('.').next().unwrap();
            !readme.contains(&format!("{key} =")) && !readme.contains(&format!("[{key}]"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "configuration keys the README does not document (as `key = ...`): {missing:?}"
    );
}
