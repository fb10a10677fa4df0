-- The language of an account's mails (issue 18 item 3): "en" or "zh-CN",
-- set at registration from Accept-Language and by PUT /v1/me/language;
-- null: the language of the request that causes the mail, else English.
alter table app_user add column language text;
