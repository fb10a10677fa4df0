//! The languages passgate writes its mails in, and how a request's
//! Accept-Language header (RFC 9110 §12.5.4) picks one. Simplified Chinese
//! is asked for in many spellings (`zh`, `zh-CN`, `zh-Hans`, `zh-SG`,
//! `zh-Hans-CN`); Traditional Chinese and every other language get English,
//! the default.

use std::fmt;

use super::ValidationError;

/// A language mails are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Language {
    En,
    ZhCn,
}

/// Longer headers are cut here: no client needs more, and the parse stays cheap.
const HEADER_MAX: usize = 512;

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::ZhCn];

    /// Its tag, as stored and as the API takes it.
    pub fn tag(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::ZhCn => "zh-CN",
        }
    }

    /// Exactly one of the tags `tag()` gives: what `PUT /v1/me/language` takes.
    pub fn parse(input: String) -> Result<Self, ValidationError> {
        Language::ALL
            .into_iter()
            .find(|l| l.tag() == input)
            .ok_or_else(|| ValidationError("language: must be \"en\" or \"zh-CN\"".to_owned()))
    }

    /// A stored tag; anything else (a row from a later version) is none.
    pub fn from_stored(tag: Option<&str>) -> Option<Language> {
        Language::ALL.into_iter().find(|l| Some(l.tag()) == tag)
    }

    /// The language an Accept-Language header asks for: the supported one
    /// with the highest weight (the first on a tie), or English when it
    /// names none (or only refuses some with `q=0`).
    pub fn from_accept_language(header: &str) -> Language {
        let header = match header.char_indices().nth(HEADER_MAX) {
            Some((cut, _)) => &header[..cut],
            None => header,
        };
        let mut best: Option<(u16, Language)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .next()
                .map_or(Some(1000), weight_in_thousandths);
            let (Some(weight), Some(language)) = (weight, Self::of_range(range)) else {
                continue;
            };
            if weight > 0 && best.is_none_or(|(top, _)| weight > top) {
                best = Some((weight, language));
            }
        }
        best.map_or(Language::En, |(_, language)| language)
    }

    /// The language a language range names, if one passgate writes.
    fn of_range(range: &str) -> Option<Language> {
        let lower = range.to_ascii_lowercase();
        let mut subtags = lower.split(['-', '_']);
        match subtags.next()? {
            "en" => Some(Language::En),
            "zh" => match subtags.next() {
                None | Some("cn" | "sg" | "hans") => Some(Language::ZhCn),
                Some(_) => None,
            },
            _ => None,
        }
    }
}

/// A qvalue (RFC 9110 §12.4.2: 0 to 1, three decimals at most) in
/// thousandths; None for anything malformed, so that item is skipped.
fn weight_in_thousandths(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl TryFrom<String> for Language {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

#[cfg(test)]
mod tests {
    use super::Language::{self, En, ZhCn};

    fn pick(header: &str) -> Language {
        Language::from_accept_language(header)
    }

    #[test]
    fn simplified_chinese_in_its_spellings_is_zh_cn() {
        for header in ["zh", "zh-CN", "zh-cn", "zh-Hans", "zh-SG", "zh-Hans-CN", "zh_CN", " zh-CN "]
        {
            assert_eq!(pick(header), ZhCn, "{header}");
        }
    }

    #[test]
    fn everything_else_is_english() {
        for header in ["", "en", "en-US", "fr", "zh-TW", "zh-Hant", "zh-HK", "*", "de;q=0.9", ",,;"]
        {
            assert_eq!(pick(header), En, "{header}");
        }
    }

    #[test]
    fn the_highest_weight_wins_and_the_first_on_a_tie() {
        assert_eq!(pick("en;q=0.5, zh-CN;q=0.9"), ZhCn);
        assert_eq!(pick("zh-CN;q=0.5, en;q=0.9"), En);
        assert_eq!(pick("en-US,en;q=0.9,zh-CN;q=0.8"), En);
        assert_eq!(pick("zh-CN,zh;q=0.9,en;q=0.8"), ZhCn);
        assert_eq!(pick("fr, zh;q=0.5"), ZhCn);
        assert_eq!(pick("zh, en"), ZhCn);
        assert_eq!(pick("en, zh"), En);
        assert_eq!(pick("en;q=0.8, zh-CN;q=0.800"), En);
        assert_eq!(pick("en;Q=0.1, zh;q=1.0"), ZhCn);
    }

    #[test]
    fn refused_or_malformed_weights_do_not_count() {
        assert_eq!(pick("zh-CN;q=0"), En);
        assert_eq!(pick("zh-CN;q=0.000, en;q=0.1"), En);
        assert_eq!(pick("en;q=2, zh;q=0.1"), ZhCn);
        assert_eq!(pick("en;q=0.1234, zh;q=0.1"), ZhCn);
        assert_eq!(pick("en;q=abc, zh;q=0.1"), ZhCn);
        assert_eq!(pick("en;q=-1, zh;q=0.1"), ZhCn);
    }

    #[test]
    fn a_huge_header_is_cut_not_parsed_whole() {
        let header = format!("{}zh-CN", "x, ".repeat(10_000));
        assert_eq!(pick(&header), En);
    }

    #[test]
    fn the_api_takes_exactly_the_two_tags() {
        assert_eq!(Language::parse("en".into()), Ok(En));
        assert_eq!(Language::parse("zh-CN".into()), Ok(ZhCn));
        for bad in ["", "EN", "zh", "zh-cn", "fr", "en ", "zh-TW"] {
            assert!(Language::parse(bad.into()).is_err(), "{bad}");
        }
        assert_eq!(Language::from_stored(Some("zh-CN")), Some(ZhCn));
        assert_eq!(Language::from_stored(Some("xx")), None);
        assert_eq!(Language::from_stored(None), None);
    }
}
