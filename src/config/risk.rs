//! `[risk]`: the risk decision at every sign-in and payment approval
//! (issue 20). The rules themselves are a file of their own, read and
//! checked by the service (`service::risk::rules`) at start and on SIGHUP;
//! here only whether the decision runs, and which file.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRisk {
    enabled: bool,
    rules_file: String,
}

#[derive(Clone, Debug)]
pub struct RiskSettings {
    /// Off: no signals are gathered and every sign-in and payment is
    /// allowed as before.
    pub enabled: bool,
    /// The rules; None: the built-in rules (`config/risk-rules.toml`).
    pub rules_file: Option<PathBuf>,
}

pub(super) fn validate_risk(raw: RawRisk) -> anyhow::Result<RiskSettings> {
    let rules_file = match raw.rules_file.trim() {
        "" => None,
        path => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("risk.rules_file: {} is not a file", path.display());
            }
            Some(path)
        }
    };
    Ok(RiskSettings { enabled: raw.enabled, rules_file })
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    #[test]
    fn risk_settings_default_to_the_built_in_rules_and_refuse_a_missing_file() {
        let settings = Settings::load_from(None, env(&[])).unwrap();
        assert!(settings.risk.enabled);
        assert!(settings.risk.rules_file.is_none());
        let error = load_error(&[("PASSGATE__RISK__RULES_FILE", "/nonexistent/rules.toml")]);
        assert!(error.contains("risk.rules_file"), "{error}");
    }
}
