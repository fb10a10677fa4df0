// passgate sign-in options page: the signed-in user sets up what /fallback.html signs in with
// (a password, a verified email address, an authenticator app with its recovery codes) through
// the /v1/me API; the passkeys and sessions cards are /security-devices.js's.
// Plain ES module, no dependencies, no build step.
// The session is the one /app.js keeps in sessionStorage; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).

import { ApiError, accessTokenExpired, api, loadTokens, withAccessToken } from '/webauthn.js';
import {
  $, describeError as describeCommonError, duration, fieldFails, markInvalid, oneAtATime, required, say, t,
} from '/page.js';
import { focusFromHash, initDevices, loadDevicesAndSessions } from '/security-devices.js';
import { initTrusted, loadTrusted } from '/security-trusted.js';

// What the factor names of GET /v1/me mean to a person.
const FACTORS = ['passkey', 'password', 'totp', 'email_otp', 'recovery_code', 'passkey_recovery_code'];

const CARDS = ['sec-overview', 'passkeys-card', 'sessions-card', 'trusted-card', 'password-card', 'email-card', 'totp-card'];

// ---------------------------------------------------------------- messages

// A TypeError's name adds nothing (a failed fetch, say); a wait the server asks for is in the
// common description.
const describeError = (err) => describeCommonError(err, ['Error', 'TypeError']);

// One request at a time, and every failure shown in the status line.
const run = oneAtATime(describeError);

// ---------------------------------------------------------------- API

const authed = (method, path, body) => withAccessToken((token) => api(path, { method, body, token }), accessTokenExpired);

// ---------------------------------------------------------------- profile

let profile = null;
const has = (factor) => Boolean(profile?.factors?.includes(factor));

async function loadProfile() {
  profile = await authed('GET', '/v1/me');
  render();
}

function renderFactors() {
  const list = $('sec-factors');
  list.replaceChildren(...(profile.factors || []).map((factor) => {
    const item = document.createElement('li');
    item.dataset.factor = factor;
    item.textContent = FACTORS.includes(factor) ? t(`factor.${factor}`) : factor;
    return item;
  }));
}

function renderPassword() {
  const set = has('password');
  $('password-username').value = profile.username ?? '';
  // Without a stored password there is nothing to confirm; sending one would fail.
  $('current-password-field').hidden = !set;
  if (!set) $('current-password').value = '';
  const secondFactor = has('totp') || has('email_otp');
  $('password-state').textContent = set
    ? t('security.password_set_state')
    : t(secondFactor ? 'security.no_password' : 'security.no_password_no_factor');
}

function renderEmail() {
  const { email, email_verified: verified } = profile;
  $('sec-email').textContent = email ? t(verified ? 'msg.email_verified' : 'msg.email_unverified', { email }) : '—';
  $('email-state').textContent = !email
    ? t('security.email_none')
    : t(verified ? 'security.email_verified_state' : 'security.email_unverified_state');
  if (email && !$('email').value) $('email').value = email;
}

function renderTotp() {
  const active = has('totp');
  const enrolling = !$('totp-enrol').hidden;
  $('totp-start').hidden = active || enrolling;
  $('totp-remove').hidden = !active;
  $('recovery-new').hidden = !active;
  $('totp-state').textContent = active
    ? t('security.totp_active')
    : t('security.totp_none');
}

function render() {
  $('sec-username').textContent = profile.username ?? '';
  renderFactors();
  renderPassword();
  renderEmail();
  renderTotp();
  $('pk-recovery-state').textContent = has('passkey_recovery_code')
    ? t('security.pk_recovery_have')
    : t('security.pk_recovery_none');
}

// ---------------------------------------------------------------- password

async function savePassword() {
  const password = $('new-password').value;
  if (!password) {
    markInvalid($('new-password'));
    $('new-password').focus();
    throw new Error(t('security.need_new_password'));
  }
  if (password !== $('new-password-repeat').value) {
    markInvalid($('new-password-repeat'));
    $('new-password-repeat').focus();
    throw new Error(t('security.passwords_differ'));
  }
  const current = $('current-password').value;
  const hadPassword = has('password');
  // A refused current password is invalid_credentials; a weak new one, validation_failed.
  await fieldFails('current-password', ['invalid_credentials'], () => fieldFails('new-password', ['validation_failed'],
    () => authed('PUT', '/v1/me/password', current ? { password, current_password: current } : { password })));
  for (const id of ['current-password', 'new-password', 'new-password-repeat']) $(id).value = '';
  await loadProfile();
  say(t(hadPassword ? 'security.password_changed' : 'security.password_saved'));
}

// ---------------------------------------------------------------- email

async function sendEmailCode() {
  const email = required('email', 'security.need_email');
  const sent = await authed('POST', '/v1/me/email', { email });
  $('email-verify-form').hidden = false;
  $('email-code').value = '';
  $('email-code').focus();
  await loadProfile();
  say(t('security.mailed', { email, duration: duration(sent.expires_in) }));
}

async function verifyEmail() {
  const code = required('email-code', 'msg.need_email_code');
  await fieldFails('email-code', ['invalid_code'], () => authed('POST', '/v1/me/email/verify', { code }));
  $('email-verify-form').hidden = true;
  $('email-code').value = '';
  await loadProfile();
  say(t('security.email_done'));
}

// ---------------------------------------------------------------- authenticator app (TOTP)

// The server's SVG goes in as an image: an <img> never runs script or loads anything that an
// SVG might hold, where inserting the markup into the page could.
function svgDataUrl(svg) {
  if (typeof svg !== 'string' || !svg.includes('<svg')) throw new Error(t('security.no_qr'));
  const bytes = new TextEncoder().encode(svg);
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}

// Groups of four are easier to copy by hand; authenticator apps ignore the spaces.
const groupSecret = (secret) => secret.replace(/(.{4})(?=.)/g, '$1 ');

function showEnrolment({ secret, otpauth_uri: uri, qr_svg: svg }) {
  $('totp-qr').src = svgDataUrl(svg);
  $('totp-secret').textContent = groupSecret(secret);
  // Only an otpauth: link opens an authenticator app; anything else is not followed.
  const link = $('totp-uri');
  link.hidden = !/^otpauth:\/\//i.test(uri || '');
  link.href = link.hidden ? '#' : uri;
  $('totp-code').value = '';
  $('totp-enrol').hidden = false;
  $('recovery').hidden = true;
  renderTotp();
  $('totp-enrol-title').focus();
}

function hideEnrolment() {
  $('totp-enrol').hidden = true;
  // The secret should not stay on screen (or in the DOM) once it has served.
  $('totp-qr').removeAttribute('src');
  $('totp-secret').textContent = '';
  $('totp-uri').href = '#';
  renderTotp();
}

async function startTotp() {
  showEnrolment(await authed('POST', '/v1/me/totp/start', {}));
  say(t('security.scan'));
}

async function confirmTotp() {
  const code = required('totp-code', 'security.need_totp');
  const { recovery_codes: codes } = await fieldFails('totp-code', ['invalid_code'], () => authed('POST', '/v1/me/totp/finish', { code }));
  hideEnrolment();
  showRecoveryCodes(codes);
  await loadProfile();
  say(t('security.totp_done'));
}

async function removeTotp() {
  if (!window.confirm(t('security.confirm_totp_remove'))) return;
  await authed('DELETE', '/v1/me/totp');
  hideRecoveryCodes();
  await loadProfile();
  say(t('security.totp_removed'));
}

// ---------------------------------------------------------------- recovery codes

function showRecoveryCodes(codes) {
  $('recovery-codes').replaceChildren(...codes.map((code) => {
    const item = document.createElement('li');
    item.textContent = code;
    return item;
  }));
  $('recovery').hidden = false;
  $('recovery-title').focus();
}

function hideRecoveryCodes() {
  $('recovery').hidden = true;
  $('recovery-codes').replaceChildren();
}

async function newRecoveryCodes() {
  if (!window.confirm(t('security.confirm_recovery_new'))) return;
  const { recovery_codes: codes } = await authed('POST', '/v1/me/recovery-codes', {});
  showRecoveryCodes(codes);
  await loadProfile();
  say(t('security.recovery_made'));
}

async function copyRecoveryCodes() {
  const codes = [...$('recovery-codes').children].map((item) => item.textContent);
  if (!navigator.clipboard) throw new Error(t('security.no_clipboard'));
  await navigator.clipboard.writeText(codes.join('\n'));
  say(t('security.copied'));
}

// ---------------------------------------------------------------- passkey recovery codes

async function newPasskeyRecoveryCodes() {
  if (has('passkey_recovery_code') && !window.confirm(t('security.confirm_pk_recovery_new'))) return;
  const { recovery_codes: codes } = await authed('POST', '/v1/me/passkey-recovery-codes', {});
  $('pk-recovery-codes').replaceChildren(...codes.map((code) => {
    const item = document.createElement('li');
    item.textContent = code;
    return item;
  }));
  $('pk-recovery').hidden = false;
  $('pk-recovery-title').focus();
  await loadProfile();
  say(t('msg.pk_recovery_made'));
}

// ---------------------------------------------------------------- wiring

function showSignedOut(message, kind = 'error') {
  for (const id of CARDS) $(id).hidden = true;
  $('sec-signed-out').hidden = false;
  say(message, kind);
}

async function restore() {
  try {
    await loadProfile();
    await loadDevicesAndSessions();
    await loadTrusted();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showSignedOut(t('msg.session_ended', { error: describeError(err) }));
      return;
    }
    throw err;
  }
  for (const id of CARDS) $(id).hidden = false;
  if (!focusFromHash()) $('sec-title').focus();
}

// Forms submit through run(); the page never reloads on submit.
function onSubmit(formId, action) {
  $(formId).addEventListener('submit', (event) => {
    event.preventDefault();
    run(action);
  });
}

function init() {
  run.setBusy(false);
  initDevices({ authed, run, reloadProfile: loadProfile, showSignedOut });
  initTrusted({ authed, run });
  onSubmit('password-form', savePassword);
  onSubmit('email-form', sendEmailCode);
  onSubmit('email-verify-form', verifyEmail);
  onSubmit('totp-confirm-form', confirmTotp);
  $('totp-start').addEventListener('click', () => run(startTotp));
  $('totp-cancel').addEventListener('click', () => { hideEnrolment(); say(''); });
  $('totp-remove').addEventListener('click', () => run(removeTotp));
  $('recovery-new').addEventListener('click', () => run(newRecoveryCodes));
  $('recovery-copy').addEventListener('click', () => run(copyRecoveryCodes));
  $('recovery-done').addEventListener('click', () => { hideRecoveryCodes(); say(''); });
  $('pk-recovery-new').addEventListener('click', () => run(newPasskeyRecoveryCodes));
  $('pk-recovery-done').addEventListener('click', () => {
    $('pk-recovery').hidden = true;
    $('pk-recovery-codes').replaceChildren();
    say('');
  });

  if (!loadTokens()?.access_token) {
    showSignedOut(t('security.sign_in_first'));
    return;
  }
  run(restore);
}

init();
