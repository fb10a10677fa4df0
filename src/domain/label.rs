use std::fmt;

use super::ValidationError;

macro_rules! label {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(input: String) -> Result<Self, ValidationError> {
                let text = input.trim().to_owned();
                if text.is_empty() || text.chars().count() > 64 {
                    return Err(ValidationError(concat!($field, ": must be 1 to 64 characters").into()));
                }
                if text.chars().any(char::is_control) {
                    return Err(ValidationError(
                        concat!($field, ": control characters are not allowed").into(),
                    ));
                }
                Ok($name(text))
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label!(
    /// The name shown to people, and by authenticators in their account
    /// pickers: 1 to 64 characters, no control characters.
    DisplayName,
    "display_name"
);
label!(
    /// A user's name for one bound passkey ("Work laptop").
    DeviceName,
    "device_name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_long_and_control_characters() {
        for bad in ["", "   ", &"é".repeat(65), "a\nb", "tab\there"] {
            assert!(DisplayName::parse(bad.to_string()).is_err(), "{bad:?}");
            assert!(DeviceName::parse(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keeps_unicode_names_trimmed() {
        assert_eq!(DisplayName::parse(" Zoë Ålund ".into()).unwrap().as_ref(), "Zoë Ålund");
        assert_eq!(DeviceName::parse("Pixel 9 🔑".into()).unwrap().as_ref(), "Pixel 9 🔑");
    }

    #[test]
    fn errors_name_their_field() {
        assert!(DeviceName::parse(String::new()).unwrap_err().0.starts_with("device_name"));
    }
}
