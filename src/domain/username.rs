use std::fmt;

use super::ValidationError;

/// A sign-in name: 3 to 64 characters of lowercase ASCII letters, digits
/// and `. _ - @ +` (so an email address works as a username). Input is
/// trimmed and lowercased first, so `Alice` and `alice` are one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(input: String) -> Result<Self, ValidationError> {
        let name = input.trim().to_ascii_lowercase();
        if !(3..=64).contains(&name.chars().count()) {
            return Err(ValidationError("username: must be 3 to 64 characters".into()));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-@+".contains(c);
        if !name.chars().all(allowed) {
            return Err(ValidationError(
                "username: only letters, digits and . _ - @ + are allowed".into(),
            ));
        }
        Ok(Username(name))
    }
}

impl TryFrom<String> for Username {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_short_long_and_odd_names() {
        for bad in ["", "ab", " a ", &"x".repeat(65), "al ice", "ali\u{e9}", "a/b\0", "<script>"] {
            assert!(Username::parse(bad.to_string()).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn normalises_case_and_whitespace() {
        let name = Username::parse("  Alice.Smith@Example.com ".into()).unwrap();
        assert_eq!(name.as_ref(), "alice.smith@example.com");
    }

    #[test]
    fn any_name_of_allowed_characters_and_length_is_accepted() {
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789._-@+".chars().collect();
        // A small deterministic property check: every length from 3 to 64,
        // walking the alphabet with a stride, parses and round-trips.
        for len in 3..=64 {
            let name: String = (0..len).map(|i| alphabet[(i * 7 + len) % alphabet.len()]).collect();
            assert_eq!(Username::parse(name.clone()).unwrap().as_ref(), name);
        }
    }
}
