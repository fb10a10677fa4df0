use std::fmt;

use super::ValidationError;

/// An email address, checked for shape only (one `@`, a dotted domain, no
/// spaces, at most 254 characters); ownership is proven by a mailed code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(input: String) -> Result<Self, ValidationError> {
        let email = input.trim().to_owned();
        let refused = || ValidationError("email: not a valid email address".into());
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refused());
        }
        let (local, domain) = email.split_once('@').ok_or_else(refused)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(refused());
        }
        // Also an address the mailer can send to.
        email.parse::<lettre::Address>().map_err(|_| refused())?;
        Ok(EmailAddress(email))
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_malformed_addresses() {
        for bad in ["", "plain", "@x.org", "a@", "a@b", "a@.b.c", "a b@c.org", "a@b@c.org"] {
            assert!(EmailAddress::parse(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for good in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert_eq!(EmailAddress::parse(good.to_string()).unwrap().as_ref(), good);
        }
    }
}
