//! Secrets from files: each secret setting may instead be given as
//! `PASSGATE__…_FILE`, naming a file that holds the value (Docker and
//! Kubernetes secrets, systemd credentials). The value then never appears
//! in the process environment, where `ps e` and crash reports can show it.

use std::collections::HashMap;

use anyhow::{Context, bail};

/// The secret settings, as their environment variables.
pub const SECRET_VARIABLES: &[&str] = &[
    "PASSGATE__TOKENS__KEY_ENCRYPTION_KEY",
    "PASSGATE__SMTP__PASSWORD",
    "PASSGATE__DATABASE__URL",
    "PASSGATE__ANOMALY__WEBHOOK_SECRET",
];

/// Largest secret file read: a key, a password or a URL, never more.
const MAX_BYTES: u64 = 64 * 1024;

/// Replaces each `NAME_FILE` of a secret setting in `env` by `NAME` with
/// the file's contents (one trailing line end dropped, as `echo` and
/// editors add one). Giving both `NAME` and `NAME_FILE` is refused, as is
/// a file that cannot be read; the message names the variable and the
/// path, never the contents.
pub fn read_secret_files(env: &mut HashMap<String, String>) -> anyhow::Result<()> {
    for name in SECRET_VARIABLES {
        let file_variable = format!("{name}_FILE");
        let Some(path) = env.remove(&file_variable) else { continue };
        if env.contains_key(*name) {
            bail!("{name} and {file_variable} are both set: set one of them");
        }
        let size = std::fs::metadata(&path)
            .with_context(|| format!("{file_variable}: cannot read {path}"))?
            .len();
        if size > MAX_BYTES {
            bail!("{file_variable}: {path} is {size} bytes; a secret file holds one value");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{file_variable}: cannot read {path} as UTF-8 text"))?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        env.insert((*name).to_owned(), value.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_secret_is_read_from_its_file_without_the_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("kek");
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let password_file = dir.path().join("smtp");
        std::fs::write(&password_file, "p@ss word\r\n").unwrap();
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY_FILE", key_file.to_str().unwrap()),
                ("PASSGATE__SMTP__PASSWORD_FILE", password_file.to_str().unwrap()),
            ]),
        )
        .unwrap();
        let expected: Vec<u8> = (0u8..32).collect();
        assert_eq!(settings.tokens.key_encryption_key.unwrap().to_vec(), expected);
        use secrecy::ExposeSecret;
        assert_eq!(settings.smtp.password.expose_secret(), "p@ss word");
    }

    #[test]
    fn both_forms_a_missing_file_and_a_huge_file_are_refused_without_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://u:topsecret@db/passgate").unwrap();
        let path = file.to_str().unwrap();

        let both = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__DATABASE__URL", "sqlite:x.db"),
                ("PASSGATE__DATABASE__URL_FILE", path),
            ]),
        )
        .unwrap_err();
        assert!(format!("{both:#}").contains("both set"), "{both:#}");

        let missing = dir.path().join("absent");
        let missing = Settings::load_from(
            None,
            env(&[("PASSGATE__SMTP__PASSWORD_FILE", missing.to_str().unwrap())]),
        )
        .unwrap_err();
        let message = format!("{missing:#}");
        assert!(message.contains("PASSGATE__SMTP__PASSWORD_FILE"), "{message}");
        assert!(message.contains("absent"), "{message}");

        let huge = dir.path().join("huge");
        std::fs::write(&huge, "x".repeat(70_000)).unwrap();
        let refused = Settings::load_from(
            None,
            env(&[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY_FILE", huge.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(!format!("{refused:#}").contains("xxxx"));

        // A bad value read from a file is refused like one from the
        // environment, and the message does not carry the file's contents.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not-a-key-topsecret").unwrap();
        let refused = Settings::load_from(
            None,
            env(&[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY_FILE", bad.to_str().unwrap())]),
        )
        .unwrap_err();
        let message = format!("{refused:#}");
        assert!(message.contains("tokens.key_encryption_key"), "{message}");
        assert!(!message.contains("topsecret"), "{message}");
    }
}
