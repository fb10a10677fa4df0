//! Mails in the reader's language: a code mail follows the Accept-Language
//! of the request that asked for it (q-values honoured), a notice follows
//! the account's language, set at registration and by PUT
//! /v1/me/language, and everything stays English when nobody asks.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::fallback::{PASSWORD, db_tag, verified_email};
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app};
use crate::smtp;

on_both!(
    a_sign_in_code_comes_in_the_language_of_the_request_that_asked_for_it,
    an_account_registered_in_chinese_gets_chinese_notices_until_it_picks_english,
    a_language_other_than_en_or_zh_cn_is_refused_and_changes_nothing,
);

impl TestApp {
    /// A request with a JSON body and, if given, a bearer token and an
    /// Accept-Language header.
    async fn send_in(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        accept_language: Option<&str>,
        body: &Value,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.address)).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(tags) = accept_language {
            request = request.header("accept-language", tags);
        }
        request.send().await.unwrap()
    }

    async fn set_language(&self, bearer: Option<&str>, body: &Value) -> Response {
        self.send_in(Method::PUT, "/v1/me/language", bearer, None, body).await
    }
}

/// The decoded subject of a mail (lettre writes a non-ASCII one as RFC
/// 2047 base64 encoded-words, possibly folded over several lines).
fn subject_of(mail: &str) -> String {
    use base64::Engine;
    let head = mail.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let line = unfolded.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap();
    let mut subject = String::new();
    for word in line.split(' ') {
        let lower = word.to_ascii_lowercase();
        match lower.strip_prefix("=?utf-8?b?").and_then(|w| w.strip_suffix("?=")) {
            Some(_) => {
                let encoded = &word["=?utf-8?b?".len()..word.len() - 2];
                let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
                subject.push_str(&String::from_utf8(bytes).unwrap());
            }
            None => {
                if !subject.is_empty() {
                    subject.push(' ');
                }
                subject.push_str(word);
            }
        }
    }
    subject
}

/// The six-digit code a code mail carries, in either language.
fn code_in(mail: &str) -> String {
    let body = mail.split_once("\r\n\r\n").unwrap().1;
    [" is ", "："]
        .iter()
        .flat_map(|marker| body.split(*marker).skip(1))
        .find_map(|after| {
            let code: String = after.chars().take_while(char::is_ascii_digit).collect();
            (code.len() == 6).then_some(code)
        })
        .unwrap_or_else(|| panic!("no code in {mail}"))
}

/// Asks for a sign-in code in `accept_language`; returns the mail.
async fn sign_in_code_mail(
    app: &TestApp,
    username: &str,
    address: &str,
    accept_language: Option<&str>,
) -> (String, String) {
    let mfa = app.mfa_token(username, PASSWORD).await;
    let body = json!({"mfa_token": mfa});
    let path = "/v1/login/mfa/email/send";
    let sent = app.send_in(Method::POST, path, None, accept_language, &body).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let mail = smtp::mails_to(address).pop().unwrap();
    // The next code may be asked for only after the resend wait.
    app.clock.advance(Duration::from_secs(61));
    (mfa, mail)
}

async fn a_sign_in_code_comes_in_the_language_of_the_request_that_asked_for_it(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("ml-code").await;
    let address = format!("ml-code-{}@example.test", db_tag(&app));
    verified_email(&app, &account.access_token, &address).await;

    let (mfa, chinese) = sign_in_code_mail(&app, "ml-code", &address, Some("zh-CN")).await;
    assert_eq!(subject_of(&chinese), "您的登录验证码");
    assert!(
        chinese.contains("ml-code，您好") && chinese.contains("您的登录验证码是："),
        "{chinese}"
    );
    assert!(chinese.contains("分钟内有效") && !chinese.contains("Your code"), "{chinese}");
    assert!(chinese.contains("charset=utf-8"), "{chinese}");
    // The code in the Chinese mail is the one that works.
    let verify = json!({"mfa_token": mfa, "code": code_in(&chinese)});
    let signed_in = app.post("/v1/login/mfa/email/verify", &verify).await;
    assert_eq!(signed_in.status(), StatusCode::OK);

    let (_, english) = sign_in_code_mail(&app, "ml-code", &address, Some("en-US")).await;
    assert_eq!(subject_of(&english), "Your sign-in code");
    assert!(english.contains("Your code to sign in is ") && !english.contains("您好"), "{english}");

    let weighted = "en;q=0.5, zh-CN;q=0.9";
    let (_, preferred) = sign_in_code_mail(&app, "ml-code", &address, Some(weighted)).await;
    assert_eq!(subject_of(&preferred), "您的登录验证码", "q=0.9 beats q=0.5");
    let (_, other) = sign_in_code_mail(&app, "ml-code", &address, Some("fr, zh-TW")).await;
    assert_eq!(subject_of(&other), "Your sign-in code", "neither is Simplified Chinese");
    let (_, unasked) = sign_in_code_mail(&app, "ml-code", &address, None).await;
    assert_eq!(subject_of(&unasked), "Your sign-in code", "English when nobody asks");

    // An account with no language of its own: the recovery mail follows
    // the request.
    let body = json!({"username": "ml-code"});
    let zh = Some("zh-SG");
    let requested = app.send_in(Method::POST, "/v1/recovery/start", None, zh, &body).await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    let recovery = smtp::wait_for_mail(&address, "#cancel=").await;
    assert_eq!(subject_of(&recovery), "有人申请恢复您的账户");
    assert!(recovery.contains("/enrol.html#cancel=") && recovery.contains("（UTC）"), "{recovery}");
}

async fn an_account_registered_in_chinese_gets_chinese_notices_until_it_picks_english(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let zh = Some("zh-CN,zh;q=0.9,en;q=0.8");
    let body = json!({"username": "ml-zh"});
    let start = app.send_in(Method::POST, "/v1/register/start", None, zh, &body).await;
    let started: Value = start.json().await.unwrap();
    let credential = passkey.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
    let finished = app.send_in(Method::POST, "/v1/register/finish", None, zh, &body).await;
    assert_eq!(finished.status(), StatusCode::CREATED);
    let tokens: Value = finished.json().await.unwrap();
    let bearer = tokens["access_token"].as_str().unwrap();
    let observer = app.observer(Duration::from_secs(5)).await;
    let in_language = "select count(*) from app_user where username = 'ml-zh' and language = $1";
    assert_eq!(observer.count(in_language, "zh-CN").await, 1);

    // Asked with no Accept-Language, the code mail falls back to the
    // account's language.
    let address = format!("ml-zh-{}@example.test", db_tag(&app));
    let set = app.post_bearer("/v1/me/email", bearer, &json!({"email": address})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let confirm = smtp::mails_to(&address).pop().unwrap();
    assert_eq!(subject_of(&confirm), "请确认您的邮箱地址");
    let verified =
        app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code_in(&confirm)})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);

    // A notice follows the account, whatever the request that caused it asks.
    let en = Some("en-US");
    let body = json!({"password": PASSWORD});
    let set = app.send_in(Method::PUT, "/v1/me/password", Some(bearer), en, &body).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let notice = smtp::wait_for_mail(&address, "您的账户设置了密码，").await;
    assert_eq!(subject_of(&notice), "您的账户设置了密码");
    assert!(notice.contains("ml-zh，您好") && notice.contains("账户：ml-zh"), "{notice}");
    // The stamp, its date and the links, in Chinese.
    assert!(notice.contains("时间：") && notice.contains("来源：127.0.0.1"), "{notice}");
    assert!(notice.contains("（UTC）") && notice.contains("/security.html"), "{notice}");
    assert!(!notice.contains("If it was not you") && !notice.contains(PASSWORD), "{notice}");
    // Anyone may ask for an account recovery in any language: its mail,
    // a warning if the owner did not ask, stays in the owner's.
    let body = json!({"username": "ml-zh"});
    let requested = app.send_in(Method::POST, "/v1/recovery/start", None, en, &body).await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    let recovery = smtp::wait_for_mail(&address, "#cancel=").await;
    assert_eq!(subject_of(&recovery), "有人申请恢复您的账户");
    assert!(recovery.contains("如果这不是您本人的申请，请立即取消"), "{recovery}");

    let picked = app.set_language(Some(bearer), &json!({"language": "en"})).await;
    assert_eq!(picked.status(), StatusCode::NO_CONTENT);
    assert_eq!(observer.count(in_language, "en").await, 1);
    let body = json!({"password": "another passphrase", "current_password": PASSWORD});
    let changed = app.send_in(Method::PUT, "/v1/me/password", Some(bearer), zh, &body).await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let notice = smtp::wait_for_mail(&address, "Your password was changed,").await;
    assert_eq!(subject_of(&notice), "Your password was changed");
    assert!(notice.contains("When: ") && notice.contains("From: 127.0.0.1"), "{notice}");
    assert!(!notice.contains("您好"), "{notice}");
}

async fn a_language_other_than_en_or_zh_cn_is_refused_and_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "ml-bad").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let observer = app.observer(Duration::from_secs(5)).await;
    let unset = "select count(*) from app_user where username = $1 and language is null";
    assert_eq!(observer.count(unset, "ml-bad").await, 1, "no Accept-Language, no language");

    let before = app.fingerprint().await;
    for bad in [
        json!({"language": "fr"}),
        json!({"language": "zh"}),
        json!({"language": "zh-cn"}),
        json!({"language": "zh-TW"}),
        json!({"language": ""}),
    ] {
        let refused = app.set_language(Some(bearer), &bad).await;
        let problem = assert_problem(refused, 422, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("\"en\" or \"zh-CN\""), "{bad}: {problem}");
    }
    for not_a_tag in [json!({"language": 5}), json!({"language": null}), json!({})] {
        let refused = app.set_language(Some(bearer), &not_a_tag).await;
        assert_problem(refused, 422, "validation_failed").await;
    }
    let anonymous = app.set_language(None, &json!({"language": "en"})).await;
    assert_problem(anonymous, 401, "unauthorized").await;
    assert_eq!(observer.count(unset, "ml-bad").await, 1);
    assert_eq!(app.fingerprint().await, before);

    let picked = app.set_language(Some(bearer), &json!({"language": "zh-CN"})).await;
    assert_eq!(picked.status(), StatusCode::NO_CONTENT);
    let chinese = "select count(*) from app_user where username = $1 and language = 'zh-CN'";
    assert_eq!(observer.count(chinese, "ml-bad").await, 1);
}
