//! Meridian's configuration: types read from TOML and the environment, and their validation.
