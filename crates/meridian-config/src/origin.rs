//! Where a value came from, so that errors name it as the user wrote it.
//!
//! A value read from the file is named by its field path (`pool.max_size`); a value set from the
//! environment is named by its variable (`MERIDIAN_POOL_MAX_SIZE`). [`Origins`] records the
//! second kind; a path with no record of its own takes the record of its nearest ancestor, so one
//! entry for `regions[0].nodes[1]` names its host, port and name alike.

use std::collections::BTreeMap;

/// Field path -> the environment variable(s) that set it.
#[derive(Debug, Default)]
pub(crate) struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Records that `path` was set from `variable`.
    pub(crate) fn set(&mut self, path: impl Into<String>, variable: impl Into<String>) {
        self.0.insert(path.into(), variable.into());
    }

    /// How to name `path` in a message: its variable when it (or an ancestor) came from the
    /// environment, else the path itself.
    pub(crate) fn label(&self, path: &str) -> String {
        let mut prefix = path;
        loop {
            if let Some(variable) = self.0.get(prefix) {
                return variable.clone();
            }
            match prefix.rfind(['.', '[']) {
                Some(end) => prefix = &prefix[..end],
                None => return path.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_falls_back_to_ancestors_then_the_path() {
        let mut origins = Origins::default();
        origins.set("regions[0].nodes[1]", "DB_EU_WEST_REPLICA1_URL");
        origins.set("pool.max_size", "MERIDIAN_POOL_MAX_SIZE");
        assert_eq!(
            origins.label("regions[0].nodes[1].port"),
            "DB_EU_WEST_REPLICA1_URL"
        );
        assert_eq!(
            origins.label("regions[0].nodes[10].port"),
            "regions[0].nodes[10].port"
        );
        assert_eq!(origins.label("pool.max_size"), "MERIDIAN_POOL_MAX_SIZE");
        assert_eq!(origins.label("pool.min_size"), "pool.min_size");
    }
}
