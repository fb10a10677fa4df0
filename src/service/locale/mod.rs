//! The words of every mail, in one catalogue per language (`en.rs`,
//! `zh_cn.rs`), and which language a mail goes out in.
//!
//! A catalogue is a struct with one field per message, so the compiler
//! holds every catalogue to the same keys and every key the code uses to
//! one that exists; the tests below hold them to the same placeholders.
//! Placeholders are `{name}`, filled in one pass by `render`: a value put
//! in (a display name, a device name) is never searched for placeholders
//! itself, so a name like "{code}" cannot pull a secret into a mail.
//!
//! Which language: a code mailed to the one who asked for it follows that
//! request's Accept-Language, then the account's language; a notice about
//! an account, and the account recovery mail (which an owner who did not
//! ask must understand), follow the account's language
//! (`app_user.language`), then the request's; English when neither says.

mod en;
mod zh_cn;

use crate::context::current_client;
pub use crate::domain::Language;
use crate::store::UserRow;

macro_rules! catalogue {
    ($($(#[$doc:meta])* $key:ident,)*) => {
        /// Every message of the mails, in one language.
        pub struct Catalogue {
            $($(#[$doc])* pub $key: &'static str,)*
        }

        impl Catalogue {
            /// (key, text) for each message, in declaration order.
            #[cfg(test)]
            fn entries(&self) -> Vec<(&'static str, &'static str)> {
                vec![$((stringify!($key), self.$key),)*]
            }
        }
    };
}

catalogue! {
    /// A notice's frame: {name} {what} {username} {stamp} {origin}.
    notice_body,
    /// "When: ... From: ...": {when} {from}.
    stamp,
    /// {ip} {agent}: the user agent is quoted as the client's claim.
    from_ip_and_agent,
    /// {agent}
    from_agent,
    /// A change made on the server's command line.
    from_server_tools,
    /// An account left with no role.
    roles_none,
    subject_password_set,
    what_password_set,
    subject_password_changed,
    what_password_changed,
    subject_passkey_bound,
    /// {name}
    what_passkey_bound,
    /// {name} {from}: after a password sign-in, payments wait.
    what_passkey_bound_delayed,
    subject_passkey_unbound,
    /// {name}
    what_passkey_unbound,
    /// {name}
    what_passkey_unbound_by_admin,
    subject_totp_added,
    what_totp_added,
    subject_totp_removed,
    what_totp_removed,
    subject_recovery_codes_made,
    what_recovery_codes_made,
    subject_passkey_recovered,
    /// {name} {from}
    what_passkey_recovered,
    /// {name} {from}: bound with a code from a mailed account recovery.
    what_passkey_recovered_by_mail,
    subject_passkey_recovery_codes_made,
    what_passkey_recovery_codes_made,
    subject_recovery_cancelled,
    what_recovery_cancelled_by_link,
    what_recovery_cancelled_by_passkey,
    subject_email_change_requested,
    /// {address}
    what_email_change_requested,
    subject_email_changed,
    /// {address}
    what_email_changed,
    subject_locked,
    what_locked,
    subject_unlocked,
    what_unlocked,
    subject_roles_changed,
    /// {roles}
    what_roles_changed,
    subject_devices_reset,
    what_devices_reset,
    subject_browser_trusted,
    /// {label} {until}: a browser marked trusted (issue 20 item 5).
    what_browser_trusted,
    subject_sign_in_code,
    /// {name} {code} {minutes}
    sign_in_code_body,
    subject_verify_email_code,
    /// {name} {code} {minutes}
    verify_email_code_body,
    subject_enrolment_code,
    /// {name} {username} {code} {stamp}
    enrolment_code_body,
    subject_recovery_requested,
    /// {name} {username} {stamp} {from} {until} {origin} {code} {cancel}
    recovery_requested_body,
}

/// The catalogue of `language`.
pub fn catalogue(language: Language) -> &'static Catalogue {
    match language {
        Language::En => &en::EN,
        Language::ZhCn => &zh_cn::ZH_CN,
    }
}

/// The language the request being served asks for, if it sent
/// Accept-Language (none on the server's command line).
pub fn request_language() -> Option<Language> {
    current_client().accept_language.as_deref().map(Language::from_accept_language)
}

/// For a mail answering the requester's own request: theirs, then the
/// account's, then English.
pub fn requester_language(user: &UserRow) -> Language {
    request_language().or_else(|| stored_language(user)).unwrap_or(Language::En)
}

/// For a notice about an account: the account's, then the request's,
/// then English.
pub fn account_language(user: &UserRow) -> Language {
    stored_language(user).or_else(request_language).unwrap_or(Language::En)
}

fn stored_language(user: &UserRow) -> Option<Language> {
    Language::from_stored(user.language.as_deref())
}

/// `template` with each `{key}` of `values` replaced by its value, in one
/// pass; other braces stay as they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = after.find('}').and_then(|close| {
            let key = &after[..close];
            values.iter().find(|(k, _)| *k == key).map(|(_, value)| (close, *value))
        });
        match filled {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `{key}` placeholders a text uses.
    fn placeholders(text: &str) -> BTreeSet<String> {
        text.split('{')
            .skip(1)
            .filter_map(|after| after.split_once('}').map(|(key, _)| key.to_owned()))
            .collect()
    }

    #[test]
    fn every_catalogue_has_the_same_keys_and_placeholders_as_english() {
        let english = catalogue(Language::En).entries();
        for language in Language::ALL {
            let entries = catalogue(language).entries();
            let keys: Vec<_> = entries.iter().map(|(k, _)| *k).collect();
            let english_keys: Vec<_> = english.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, english_keys, "{language}");
            for ((key, text), (_, english_text)) in entries.iter().zip(&english) {
                assert!(!text.trim().is_empty(), "{language} {key} is empty");
                assert_eq!(
                    placeholders(text),
                    placeholders(english_text),
                    "{language} {key} has other placeholders than English"
                );
            }
        }
    }

    #[test]
    fn placeholders_are_plain_names() {
        for language in Language::ALL {
            for (key, text) in catalogue(language).entries() {
                for name in placeholders(text) {
                    assert!(
                        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()),
                        "{language} {key}: {{{name}}}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_chinese_catalogue_is_chinese_and_keeps_its_terms() {
        let chinese = |text: &str| text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        let zh = catalogue(Language::ZhCn);
        for (key, text) in zh.entries() {
            assert!(chinese(text), "{key} is not translated: {text}");
        }
        assert!(zh.subject_passkey_bound.contains("通行密钥"));
        assert!(zh.what_totp_added.contains("验证器应用"));
        assert!(zh.what_recovery_codes_made.contains("恢复码"));
        assert!(zh.enrolment_code_body.contains("登记码"));
        assert!(zh.recovery_requested_body.contains("登记码"));
    }

    #[test]
    fn render_fills_in_one_pass() {
        let values = [("name", "{code}"), ("code", "123456")];
        assert_eq!(render("Hi {name}, {code}.", &values), "Hi {code}, 123456.");
        assert_eq!(render("{unknown} {name", &values), "{unknown} {name");
        assert_eq!(render("{{name}}", &values), "{{code}}");
        assert_eq!(render("名字：{name}。", &[("name", "张三")]), "名字：张三。");
    }
}
