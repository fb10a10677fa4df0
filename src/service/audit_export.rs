//! Reading the audit trail back (API contract, "Admin"): pages for the
//! console and a CSV export, both for admins only and both masked, so an
//! export passed around does not carry clients' addresses.

use futures_util::Stream;
use serde::Serialize;

use super::admin::{Admin, AdminCaller};
use crate::clock::rfc3339;
use crate::error::{ApiError, Result};
use crate::store::{AuditFilter, AuditRow};

/// Largest JSON page an admin may ask for.
const PAGE_MAX: i64 = 1000;
/// Rows read from the database per step of a CSV export.
const CSV_PAGE: i64 = 500;
const CSV_HEADER: &str = "event_id,occurred_at,event,outcome,user_id,actor_id,device_id,client_ip,user_agent,reason,request_id\r\n";

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    events: Vec<AuditRow>,
    next_cursor: Option<String>,
}

impl Admin {
    /// One page of events matching `filter` (its `limit` clamped to 1 to
    /// 1000), masked, with the cursor of the next page when there is one.
    pub async fn audit_page(&self, _admin: &AdminCaller, filter: AuditFilter) -> Result<AuditPage> {
        let limit = filter.limit.clamp(1, PAGE_MAX);
        let probe = AuditFilter { limit: limit + 1, ..filter };
        let mut events = self.store.audit_events(&probe).await?;
        let more = events.len() as i64 > limit;
        events.truncate(limit as usize);
        let next_cursor = more.then(|| events.last().map(|e| e.event_id.clone())).flatten();
        let events = events.into_iter().map(masked).collect();
        Ok(AuditPage { events, next_cursor })
    }

    /// Every event matching `filter` (its `limit` ignored) as CSV lines,
    /// masked, the header first. Read page by page from the database, so a
    /// large export holds one page in memory at a time. A failed read ends
    /// the stream with an error, so that the download fails instead of
    /// ending short and looking complete.
    pub fn audit_csv(
        self,
        _admin: AdminCaller,
        filter: AuditFilter,
    ) -> impl Stream<Item = Result<String>> {
        let filter = AuditFilter { limit: CSV_PAGE, ..filter };
        futures_util::stream::unfold(
            (self, filter, true),
            |(admin, mut filter, first)| async move {
                if filter.limit == 0 {
                    return None;
                }
                let page = match admin.store.audit_events(&filter).await {
                    Ok(page) => page,
                    Err(error) => {
                        filter.limit = 0;
                        return Some((Err(ApiError::from(error)), (admin, filter, false)));
                    }
                };
                let mut chunk = if first { CSV_HEADER.to_owned() } else { String::new() };
                for row in &page {
                    chunk.push_str(&csv_line(&masked(row.clone())));
                }
                filter.after = page.last().map(|r| r.event_id.clone()).or(filter.after);
                if (page.len() as i64) < CSV_PAGE {
                    filter.limit = 0;
                }
                Some((Ok(chunk), (admin, filter, false)))
            },
        )
    }
}

/// What exports show: IPs and any email address in a reason masked.
fn masked(mut row: AuditRow) -> AuditRow {
    row.client_ip = row.client_ip.as_deref().map(mask_ip);
    row.reason = row.reason.as_deref().map(mask_email);
    row
}

fn csv_field(value: &str) -> String {
    // RFC 4180 quoting, and a leading ' for what a spreadsheet would run as
    // a formula (CSV injection).
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn csv_line(row: &AuditRow) -> String {
    let fields = [
        row.event_id.clone(),
        rfc3339(row.occurred_at),
        row.event.clone(),
        row.outcome.clone(),
        row.user_id.clone().unwrap_or_default(),
        row.actor_id.clone().unwrap_or_default(),
        row.device_id.clone().unwrap_or_default(),
        row.client_ip.clone().unwrap_or_default(),
        row.user_agent.clone().unwrap_or_default(),
        row.reason.clone().unwrap_or_default(),
        row.request_id.clone().unwrap_or_default(),
    ];
    let mut line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// An IP as exports show it: IPv4 without its last octet, IPv6 to its /48.
fn mask_ip(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.x")
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::x", s[0], s[1], s[2])
        }
        Err(_) => "x".to_owned(),
    }
}

/// An email address as exports show it: first letter and domain.
fn mask_email(text: &str) -> String {
    // Reasons are free text an admin typed; any address in one is masked.
    text.split(' ')
        .map(|word| match word.split_once('@') {
            Some((local, domain)) if !local.is_empty() && domain.contains('.') => {
                format!("{}***@{domain}", &local[..local.chars().next().map_or(0, char::len_utf8)])
            }
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_mask_ips_and_addresses() {
        assert_eq!(mask_ip("203.0.113.77"), "203.0.113.x");
        assert_eq!(mask_ip("2001:db8:85a3::8a2e:370:7334"), "2001:db8:85a3::x");
        assert_eq!(mask_ip("nonsense"), "x");
        assert_eq!(
            mask_email("lost phone, mailed alice@example.com today"),
            "lost phone, mailed a***@example.com today"
        );
        assert_eq!(mask_email("no address here"), "no address here");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
