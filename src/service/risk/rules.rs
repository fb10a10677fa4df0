//! The rules: read from TOML (the built-in `config/risk-rules.toml`, or
//! `risk.rules_file`), checked whole before they are used (an unknown
//! signal, an operator the signal cannot take, a duplicate name: refused,
//! naming the rule's line), and applied to an attempt's signals.

use std::collections::HashSet;

use anyhow::{Context, bail};
use serde::Deserialize;
use toml::Spanned;

use super::signals::{Shape, Signal, Signals, Value};
use super::{HeldKind, Outcome, Reason};

/// The rules passgate ships with, used when `risk.rules_file` is empty.
pub const BUILT_IN: &str = include_str!("../../../config/risk-rules.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    step_up_at: i32,
    hold_at: i32,
    deny_at: i32,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    score: i32,
    words: String,
    applies_to: Option<Vec<String>>,
    mode: Option<String>,
}

/// Checked rules, ready to apply.
#[derive(Clone, Debug)]
pub struct Rules {
    pub step_up_at: i32,
    pub hold_at: i32,
    pub deny_at: i32,
    pub rules: Vec<Rule>,
    /// Where they came from, for the log.
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub conditions: Vec<Condition>,
    pub score: i32,
    pub words: String,
    pub signin: bool,
    pub payment: bool,
    /// Recorded and counted, never acted on.
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub signal: Signal,
    pub test: Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// `<signal>`: a yes/no signal that is yes.
    Is(bool),
    Compare(Op, Value),
}

/// What the rules make of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub score: i32,
    pub outcome: Outcome,
    /// The enforced rules that matched.
    pub reasons: Vec<Reason>,
    /// The dry-run rules that matched, and what the outcome would have
    /// been with them.
    pub dry_run: Vec<Reason>,
    pub dry_outcome: Outcome,
}

impl Rules {
    /// Reads and checks rules; `source` names them in messages.
    pub fn parse(text: &str, source: &str) -> anyhow::Result<Rules> {
        let raw: RawRules = toml::from_str(text).with_context(|| format!("risk rules {source}"))?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let (step_up_at, hold_at, deny_at) = (raw.step_up_at, raw.hold_at, raw.deny_at);
        if !(1 <= step_up_at && step_up_at <= hold_at && hold_at <= deny_at) {
            bail!(
                "risk rules {source}: the thresholds must be 1 <= step_up_at <= hold_at <= deny_at \
                 (they are {step_up_at}, {hold_at}, {deny_at})"
            );
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rule.len());
        for spanned in raw.rule {
            let line = line_of(spanned.span().start);
            let raw = spanned.into_inner();
            let rule = Rule::check(raw, &mut names)
                .with_context(|| format!("risk rules {source}, the rule at line {line}"))?;
            rules.push(rule);
        }
        Ok(Rules { step_up_at, hold_at, deny_at, rules, source: source.to_owned() })
    }

    /// The built-in rules.
    pub fn built_in() -> anyhow::Result<Rules> {
        Rules::parse(BUILT_IN, "(built in)")
    }

    /// Whether any rule names a signal from the user's profile: if none
    /// does, the profile is not read at all.
    pub fn need_profile(&self) -> bool {
        self.rules.iter().flat_map(|r| &r.conditions).any(|c| c.signal.needs_profile())
    }

    pub fn outcome(&self, score: i32) -> Outcome {
        if score >= self.deny_at {
            Outcome::Deny
        } else if score >= self.hold_at {
            Outcome::Hold
        } else if score >= self.step_up_at {
            Outcome::StepUp
        } else {
            Outcome::Allow
        }
    }

    /// Applies the rules for `kind` to `signals`.
    pub fn judge(&self, kind: HeldKind, signals: &Signals) -> Verdict {
        let mut score = 0;
        let mut dry_score = 0;
        let mut reasons = Vec::new();
        let mut dry_run = Vec::new();
        for rule in &self.rules {
            let applies = match kind {
                HeldKind::SignIn => rule.signin,
                HeldKind::Payment => rule.payment,
            };
            if !applies || !rule.conditions.iter().all(|c| c.holds(signals)) {
                continue;
            }
            let reason =
                Reason { rule: rule.name.clone(), score: rule.score, words: rule.words.clone() };
            if rule.dry_run {
                dry_score += rule.score;
                dry_run.push(reason);
            } else {
                score += rule.score;
                reasons.push(reason);
            }
        }
        Verdict {
            score,
            outcome: self.outcome(score),
            reasons,
            dry_outcome: self.outcome(score + dry_score),
            dry_run,
        }
    }
}

impl Rule {
    fn check(raw: RawRule, names: &mut HashSet<String>) -> anyhow::Result<Rule> {
        let name = raw.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("name {name:?}: 1 to 64 of a-z, 0-9 and _");
        }
        if !names.insert(name.clone()) {
            bail!("name {name:?} is used by another rule");
        }
        let words = raw.words.trim().to_owned();
        if words.is_empty() || words.chars().count() > 200 || words.chars().any(char::is_control) {
            bail!("{name}: words: 1 to 200 characters, on one line (the user reads them)");
        }
        if !(-1000..=1000).contains(&raw.score) {
            bail!("{name}: score {} is outside -1000..=1000", raw.score);
        }
        let (mut signin, mut payment) = (true, true);
        if let Some(kinds) = raw.applies_to {
            (signin, payment) = (false, false);
            if kinds.is_empty() {
                bail!("{name}: applies_to is empty; leave it out to apply to both");
            }
            for kind in kinds {
                match kind.as_str() {
                    "signin" => signin = true,
                    "payment" => payment = true,
                    other => bail!("{name}: applies_to: {other:?} is not signin or payment"),
                }
            }
        }
        let dry_run = match raw.mode.as_deref() {
            None | Some("enforce") => false,
            Some("dry_run") => true,
            Some(other) => bail!("{name}: mode {other:?} is not enforce or dry_run"),
        };
        let conditions = raw
            .when
            .split(" and ")
            .map(|part| Condition::parse(part.trim()))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("{name}: when {:?}", raw.when))?;
        Ok(Rule { name, conditions, score: raw.score, words, signin, payment, dry_run })
    }
}

fn signal(name: &str) -> anyhow::Result<Signal> {
    Signal::parse(name).with_context(|| {
        let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        format!("unknown signal {name:?} (known: {})", known.join(", "))
    })
}

impl Condition {
    fn parse(text: &str) -> anyhow::Result<Condition> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let yes_no = |name: &str, yes: bool| -> anyhow::Result<Condition> {
            let signal = signal(name)?;
            if signal.shape() != Shape::Bool {
                bail!("{name} is not a yes/no signal: compare it, e.g. \"{name} >= 1\"");
            }
            Ok(Condition { signal, test: Test::Is(yes) })
        };
        match words.as_slice() {
            [name] => yes_no(name, true),
            ["not", name] => yes_no(name, false),
            [name, op, value] => {
                let signal = signal(name)?;
                let op = match *op {
                    ">=" => Op::Ge,
                    ">" => Op::Gt,
                    "<=" => Op::Le,
                    "<" => Op::Lt,
                    "=" => Op::Eq,
                    "!=" => Op::Ne,
                    other => bail!("unknown operator {other:?} (one of >= > <= < = !=)"),
                };
                let value = match signal.shape() {
                    Shape::Number => Value::Number(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .with_context(|| format!("{name} takes a number, not {value:?}"))?,
                    ),
                    Shape::Bool | Shape::Word(_) if !matches!(op, Op::Eq | Op::Ne) => {
                        bail!("{name} takes only = and !=")
                    }
                    Shape::Bool => match *value {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        other => bail!("{name} is true or false, not {other:?}"),
                    },
                    Shape::Word(allowed) => match allowed.iter().find(|w| **w == *value) {
                        Some(word) => Value::Word(word),
                        None => bail!("{name} is one of {}, not {value:?}", allowed.join(", ")),
                    },
                };
                Ok(Condition { signal, test: Test::Compare(op, value) })
            }
            _ => {
                bail!("{text:?} is not \"<signal>\", \"not <signal>\" or \"<signal> <op> <value>\"")
            }
        }
    }

    pub fn holds(&self, signals: &Signals) -> bool {
        let value = signals.get(self.signal);
        match (&self.test, value) {
            (Test::Is(yes), Value::Bool(b)) => b == *yes,
            (Test::Compare(op, Value::Number(want)), Value::Number(have)) => match op {
                Op::Ge => have >= *want,
                Op::Gt => have > *want,
                Op::Le => have <= *want,
                Op::Lt => have < *want,
                Op::Eq => have == *want,
                Op::Ne => have != *want,
            },
            (Test::Compare(op, want), have) => match op {
                Op::Eq => *want == have,
                Op::Ne => *want != have,
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        format!("{:#}", Rules::parse(text, "test.toml").unwrap_err())
    }

    const HEAD: &str = "step_up_at = 40\nhold_at = 70\ndeny_at = 100\n";

    #[test]
    fn the_built_in_rules_are_valid() {
        let rules = Rules::built_in().unwrap();
        assert!(!rules.rules.is_empty());
        assert!(rules.need_profile());
    }

    #[test]
    fn an_unknown_signal_a_bad_operator_and_a_duplicate_name_are_refused_by_line() {
        let unknown = format!(
            "{HEAD}\n[[rule]]\nname = \"a\"\nwhen = \"new_planet\"\nscore = 1\nwords = \"w\"\n"
        );
        let message = error(&unknown);
        assert!(message.contains("line 5") && message.contains("new_planet"), "{message}");
        let operator = format!(
            "{HEAD}[[rule]]\nname = \"a\"\nwhen = \"account_failures_15m => 3\"\nscore = 1\nwords = \"w\"\n"
        );
        assert!(error(&operator).contains("unknown operator"), "{}", error(&operator));
        let word = format!(
            "{HEAD}[[rule]]\nname = \"a\"\nwhen = \"factor = pigeon\"\nscore = 1\nwords = \"w\"\n"
        );
        assert!(error(&word).contains("passkey"), "{}", error(&word));
        let order = format!(
            "{HEAD}[[rule]]\nname = \"a\"\nwhen = \"new_network > 1\"\nscore = 1\nwords = \"w\"\n"
        );
        assert!(error(&order).contains("only = and !="), "{}", error(&order));
        let rule = "[[rule]]\nname = \"same\"\nwhen = \"new_network\"\nscore = 1\nwords = \"w\"\n";
        let twice = format!("{HEAD}{rule}{rule}");
        let message = error(&twice);
        assert!(message.contains("line 9") && message.contains("another rule"), "{message}");
        let extra = format!(
            "{HEAD}[[rule]]\nname = \"a\"\nwhen = \"new_network\"\nscore = 1\nwords = \"w\"\nweight = 2\n"
        );
        assert!(error(&extra).contains("weight"), "{}", error(&extra));
        assert!(error("step_up_at = 50\nhold_at = 40\ndeny_at = 100\n").contains("thresholds"));
    }

    #[test]
    fn scores_add_up_to_an_outcome_and_dry_runs_only_say_what_they_would_do() {
        let text = format!(
            "{HEAD}\
            [[rule]]\nname = \"net\"\nwhen = \"new_network and factor != passkey\"\nscore = 30\nwords = \"n\"\n\
            [[rule]]\nname = \"flood\"\nwhen = \"network_failures_15m >= 100\"\nscore = 50\nwords = \"f\"\nmode = \"dry_run\"\n\
            [[rule]]\nname = \"trusted\"\nwhen = \"trusted_device\"\nscore = -20\nwords = \"t\"\n\
            [[rule]]\nname = \"pay\"\nwhen = \"amount_ratio > 10\"\nscore = 70\nwords = \"p\"\napplies_to = [\"payment\"]\n"
        );
        let rules = Rules::parse(&text, "t").unwrap();
        let mut signals = Signals::default();
        signals.set(Signal::Factor, Value::Word("password_mail"));
        signals.set(Signal::NewNetwork, Value::Bool(true));
        signals.set(Signal::NetworkFailures15m, Value::Number(150.0));
        signals.set(Signal::AmountRatio, Value::Number(11.0));
        let verdict = rules.judge(HeldKind::SignIn, &signals);
        assert_eq!(verdict.score, 30);
        assert_eq!(verdict.outcome, Outcome::Allow);
        assert_eq!(verdict.dry_outcome, Outcome::Hold);
        assert_eq!(verdict.dry_run[0].rule, "flood");
        signals.set(Signal::NewNetwork, Value::Bool(true));
        signals.set(Signal::TrustedDevice, Value::Bool(true));
        let verdict = rules.judge(HeldKind::Payment, &signals);
        assert_eq!(verdict.score, 30 - 20 + 70);
        assert_eq!(verdict.outcome, Outcome::Hold);
        signals.set(Signal::Factor, Value::Word("passkey"));
        assert_eq!(rules.judge(HeldKind::SignIn, &signals).score, -20);
    }
}
