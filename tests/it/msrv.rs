//! The declared minimum Rust version is true of the dependencies: none of the locked crates this
//! build uses asks for a newer compiler. (Our own code is held to it by clippy's
//! `incompatible_msrv` lint, which reads the same `rust-version`.)

use std::process::Command;

/// `1.88` and `1.88.0` are the same version.
fn version(v: &str) -> [u32; 3] {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    [parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0)]
}

#[test]
fn no_locked_dependency_needs_a_newer_rust_than_the_declared_msrv() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let host = Command::new(rustc).arg("-vV").output().expect("rustc -vV");
    let host = String::from_utf8_lossy(&host.stdout);
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc names its host").to_owned();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform", &host])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let used: Vec<&str> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages.iter().find(|p| p["name"] == "fanout").unwrap()["rust_version"].as_str().unwrap().to_owned();
    let newer: Vec<String> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| used.contains(&id)))
        .filter_map(|p| {
            let theirs = p["rust_version"].as_str()?;
            (version(theirs) > version(&ours)).then(|| format!("{} {} needs {theirs}", p["name"], p["version"]))
        })
        .collect();
    assert!(newer.is_empty(), "rust-version {ours} is not true: {newer:?}");
    assert!(!used.is_empty());
}
