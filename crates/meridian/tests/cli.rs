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

/// `meridian analyze-query` with the environment cleared, so no DATABASE_URL can leak in.
fn analyze(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("analyze-query")
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn analyze_query_explains_the_class_and_the_route_under_the_default_policy() {
    let (code, out, _) = analyze(&["SELECT nextval('orders_id_seq')"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("class:      write: calls nextval()"), "{out}");
    assert!(
        out.contains("the primary: the statement may write"),
        "{out}"
    );
    assert!(out.contains("defaults: no configuration given"), "{out}");

    let (code, out, _) = analyze(&["--route", "primary", "SELECT 1"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("the primary: SET meridian.route = primary"),
        "{out}"
    );
    let (code, _, err) = analyze(&["--route", "sideways", "SELECT 1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("auto, primary or replica"), "{err}");
}

#[test]
fn analyze_query_reads_the_policy_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    std::fs::write(
        &path,
        "[routing]\nprimary_reads = \"never\"\nwrite_functions = [\"audit_*\"]\n\
         [[regions]]\nname = \"main\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (code, out, err) = analyze(&["-c", config, "SELECT audit_event(1)"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("write: calls audit_event()"), "{out}");
    let (_, out, _) = analyze(&["-c", config, "SELECT 1"]);
    assert!(out.contains("a replica: an autocommit read"), "{out}");
    assert!(
        out.contains("the read fails (primary_reads = never)"),
        "{out}"
    );

    std::fs::write(&path, "[routing]\ncausal_read_timeout = \"0s\"\n").unwrap();
    let (code, _, err) = analyze(&["-c", config, "SELECT 1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("routing.causal_read_timeout"), "{err}");
}
