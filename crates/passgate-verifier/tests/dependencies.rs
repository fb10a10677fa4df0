//! The reason this crate exists apart from passgate: a payment service that
//! embeds it must not link a web framework, a database driver or a WebAuthn
//! stack. `cargo tree` on this package's normal and build dependencies (on
//! this platform, as a build would resolve them) must name none of them.

use std::process::Command;

/// Crates that would mean the server's stack leaked in, by name prefix.
const FORBIDDEN: [&str; 6] = ["actix", "sqlx", "webauthn", "tracing-actix", "lettre", "passgate"];

#[test]
fn the_verifier_links_no_web_framework_database_or_webauthn() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "-p", "passgate-verifier", "-e", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(names.first(), Some(&"passgate-verifier"), "{tree}");
    // The check must see the real graph, not an empty one.
    for needed in ["jsonwebtoken", "reqwest", "serde"] {
        assert!(names.contains(&needed), "{needed} missing from:\n{tree}");
    }
    let leaked: Vec<&&str> = names[1..]
        .iter()
        .filter(|name| FORBIDDEN.iter().any(|prefix| name.starts_with(prefix)))
        .collect();
    assert!(leaked.is_empty(), "passgate-verifier depends on {leaked:?}:\n{tree}");
}
