use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A payment to be approved: what the user's passkey signs for (PSD2
/// dynamic linking: amount and payee are bound into the approval).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawTransaction", into = "RawTransaction")]
pub struct Transaction {
    amount: String,
    currency: String,
    payee: String,
    reference: Option<String>,
}

/// A transaction as it arrives, before its checks.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransaction {
    pub amount: String,
    pub currency: String,
    pub payee: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Why a transaction was refused: the member and what it must be. The
/// text reaches passgate's clients as the problem `detail`, so it stays
/// exactly as passgate has always worded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTransaction(pub String);

impl Transaction {
    pub fn parse(raw: RawTransaction) -> Result<Self, InvalidTransaction> {
        let refused = |what: &str| Err(InvalidTransaction(format!("transaction.{what}")));
        if !is_amount(&raw.amount) {
            return refused(
                "amount: a positive decimal string such as \"12.50\" (at most 3 decimals)",
            );
        }
        if raw.currency.len() != 3 || !raw.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return refused("currency: an ISO 4217 code such as \"EUR\"");
        }
        if !is_label(&raw.payee) {
            return refused("payee: 1 to 140 characters, no control characters");
        }
        if raw.reference.as_deref().is_some_and(|r| !is_label(r)) {
            return refused("reference: 1 to 140 characters, no control characters");
        }
        Ok(Transaction {
            amount: raw.amount,
            currency: raw.currency,
            payee: raw.payee,
            reference: raw.reference,
        })
    }

    /// RFC 8785 (JCS) form: keys sorted, no white space. All members are
    /// strings, and serde_json escapes strings as JCS requires
    /// (ECMAScript JSON.stringify rules), so a sorted map suffices.
    pub fn canonical_json(&self) -> String {
        let mut members = BTreeMap::new();
        members.insert("amount", self.amount.as_str());
        members.insert("currency", self.currency.as_str());
        members.insert("payee", self.payee.as_str());
        if let Some(reference) = &self.reference {
            members.insert("reference", reference.as_str());
        }
        serde_json::to_string(&members).unwrap_or_default()
    }

    /// SHA-256 of the canonical form.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json().as_bytes()).into()
    }

    /// The `txn` claim: base64url (no padding) of `digest()`.
    pub fn txn(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.digest())
    }
}

fn is_amount(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let whole_ok = digits(whole) && whole.len() <= 15 && (whole == "0" || !whole.starts_with('0'));
    let fraction_ok = !text.contains('.') || (digits(fraction) && fraction.len() <= 3);
    let positive = text.bytes().any(|b| (b'1'..=b'9').contains(&b));
    whole_ok && fraction_ok && positive
}

fn is_label(text: &str) -> bool {
    let count = text.chars().count();
    (1..=140).contains(&count) && !text.chars().any(char::is_control) && text.trim() == text
}

impl TryFrom<RawTransaction> for Transaction {
    type Error = InvalidTransaction;
    fn try_from(raw: RawTransaction) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<Transaction> for RawTransaction {
    fn from(t: Transaction) -> Self {
        RawTransaction {
            amount: t.amount,
            currency: t.currency,
            payee: t.payee,
            reference: t.reference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(amount: &str, currency: &str, payee: &str) -> RawTransaction {
        RawTransaction {
            amount: amount.into(),
            currency: currency.into(),
            payee: payee.into(),
            reference: None,
        }
    }

    #[test]
    fn refuses_bad_amounts_currencies_and_payees() {
        for amount in ["", "0", "0.00", "-1", "1.", ".5", "01.00", "1.2345", "1e3", "12,50", " 1"] {
            assert!(Transaction::parse(raw(amount, "EUR", "Shop")).is_err(), "{amount:?}");
        }
        for currency in ["eur", "EU", "EURO", "E1R"] {
            assert!(Transaction::parse(raw("1", currency, "Shop")).is_err(), "{currency:?}");
        }
        for payee in ["", " Shop", "Sh\nop", &"x".repeat(141)] {
            assert!(Transaction::parse(raw("1", "EUR", payee)).is_err(), "{payee:?}");
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_escapes_like_jcs() {
        let mut input = raw("12.50", "EUR", "Café \"Zoë\"");
        input.reference = Some("inv/42".into());
        let txn = Transaction::parse(input).unwrap();
        assert_eq!(
            txn.canonical_json(),
            r#"{"amount":"12.50","currency":"EUR","payee":"Café \"Zoë\"","reference":"inv/42"}"#
        );
        assert_eq!(txn.digest(), <[u8; 32]>::from(Sha256::digest(txn.canonical_json().as_bytes())));
    }

    proptest::proptest! {
        /// Whatever the strings, parsing never panics, and what it takes
        /// has a canonical form that is JSON of exactly its members, read
        /// back to the same transaction.
        #[test]
        fn the_canonical_form_reads_back_to_the_same_transaction(
            amount in "[0-9]{1,16}(\\.[0-9]{0,4})?",
            currency in "[A-Z]{2,4}",
            payee in "\\PC{0,150}",
            reference in proptest::option::of("\\PC{0,150}"),
        ) {
            let raw = RawTransaction { amount, currency, payee, reference };
            if let Ok(txn) = Transaction::parse(raw) {
                let json = txn.canonical_json();
                let back: Transaction = serde_json::from_str(&json).unwrap();
                proptest::prop_assert_eq!(&back, &txn);
                proptest::prop_assert_eq!(back.txn(), txn.txn());
                // Keys in order, no white space between members.
                let quoted = |text: &str| serde_json::to_string(text).unwrap();
                let raw = RawTransaction::from(txn.clone());
                let mut expected = format!(
                    "{{\"amount\":{},\"currency\":{},\"payee\":{}",
                    quoted(&raw.amount), quoted(&raw.currency), quoted(&raw.payee)
                );
                if let Some(reference) = &raw.reference {
                    expected.push_str(&format!(",\"reference\":{}", quoted(reference)));
                }
                expected.push('}');
                proptest::prop_assert_eq!(json, expected);
            }
        }

        #[test]
        fn arbitrary_json_never_panics(text in "\\PC{0,300}") {
            let _ = serde_json::from_str::<Transaction>(&text);
        }
    }

    #[test]
    fn any_change_changes_the_txn_claim() {
        let base = Transaction::parse(raw("12.50", "EUR", "Shop")).unwrap();
        for other in
            [raw("12.5", "EUR", "Shop"), raw("12.50", "USD", "Shop"), raw("12.50", "EUR", "Shop2")]
        {
            assert_ne!(Transaction::parse(other).unwrap().txn(), base.txn());
        }
        assert_eq!(base.txn().len(), 43);
    }
}
