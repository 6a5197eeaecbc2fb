//! The binary answers `--help` and `--version` like any well-behaved command.

use std::process::Command;

fn meridian(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_prints_the_crate_version() {
    let output = meridian(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("meridian {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_says_what_meridian_is() {
    let output = meridian(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("PostgreSQL failover, routing and pooling"),
        "{text}"
    );
    assert!(text.contains("--version"), "{text}");
}

#[test]
fn an_unknown_argument_is_refused_with_usage() {
    let output = meridian(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}
