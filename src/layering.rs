//! The layer picture of ARCHITECTURE.md, checked: which of the crate's
//! modules each module may name. A change that makes errors import the
//! store, or the store import a service, fails here instead of slowly
//! growing an import circle.

use std::path::{Path, PathBuf};

/// Each top-level module (a file `src/NAME.rs` or a folder `src/NAME/`),
/// and the crate modules it may name besides itself.
const MAY_NAME: &[(&str, &[&str])] = &[
    ("context", &[]),
    ("clock", &[]),
    ("net", &[]),
    ("domain", &[]),
    ("error", &["context"]),
    ("config", &["net", "clock"]),
    ("mailer", &["config"]),
    ("metrics", &["error"]),
    ("telemetry", &["context", "config", "net"]),
    ("store", &["clock", "config", "domain"]),
    (
        "service",
        &["clock", "config", "context", "domain", "error", "mailer", "metrics", "net", "store"],
    ),
    (
        "routes",
        &["clock", "config", "context", "domain", "error", "net", "service", "store", "telemetry"],
    ),
];

fn sources(path: &Path, found: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            sources(&entry.path(), found);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        found.push(path.to_owned());
    }
}

/// The crate modules `text` names as `crate::NAME`.
fn named(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(at, _)| {
            text[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect()
        })
        .collect()
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, allowed) in MAY_NAME {
        let mut files = Vec::new();
        sources(&src.join(format!("{module}.rs")), &mut files);
        sources(&src.join(module), &mut files);
        assert!(!files.is_empty(), "no source for module {module}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in named(&text) {
                if name != *module && !allowed.contains(&name.as_str()) {
                    broken.push(format!("{} names crate::{name}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports against the layers:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_a_forbidden_import() {
    assert_eq!(
        named("use crate::store::StoreError;\nx = crate::context::y;"),
        ["store", "context"]
    );
}
