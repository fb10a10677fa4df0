// passgate sign-in options page: the signed-in user sets up what /fallback.html signs in with
// (a password, a verified email address, an authenticator app with its recovery codes) through
// the /v1/me API; the passkeys and sessions cards are /security-devices.js's.
// Plain ES module, no dependencies, no build step.
// The session is the one /app.js keeps in sessionStorage; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).

import {
  ApiError, accessTokenExpired, api, describeError as describeCommonError, loadTokens, withAccessToken,
} from '/webauthn.js';
import { $, duration, oneAtATime, required, say } from '/page.js';
import { focusFromHash, initDevices, loadDevicesAndSessions } from '/security-devices.js';

// What the factor names of GET /v1/me mean to a person.
const FACTOR_LABELS = {
  passkey: 'Passkey',
  password: 'Password',
  totp: 'Authenticator app',
  email_otp: 'Email code',
  recovery_code: 'Recovery codes',
  passkey_recovery_code: 'Passkey recovery codes',
};

const CARDS = ['sec-overview', 'passkeys-card', 'sessions-card', 'password-card', 'email-card', 'totp-card'];

// ---------------------------------------------------------------- messages

// A TypeError's name adds nothing (a failed fetch, say); a wait the server asks for does.
function describeError(err) {
  const text = describeCommonError(err, ['Error', 'TypeError']);
  return err?.retryAfter ? `${text} Try again in ${err.retryAfter} seconds.` : text;
}

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
    item.textContent = FACTOR_LABELS[factor] ?? factor;
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
    ? 'A password is set. Change it here.'
    : `No password yet.${secondFactor ? '' : ' To sign in with one you also need an authenticator app or a verified email address.'}`;
}

function renderEmail() {
  const { email, email_verified: verified } = profile;
  $('sec-email').textContent = email ? `${email}${verified ? ' (verified)' : ' (not verified)'}` : '—';
  $('email-state').textContent = !email
    ? 'With a verified address, password sign-in can mail you a code.'
    : verified
      ? 'Password sign-in can mail a code to this address. Enter another address to change it.'
      : 'This address is not verified yet: enter the code we mailed to it, or ask for a new one.';
  if (email && !$('email').value) $('email').value = email;
}

function renderTotp() {
  const active = has('totp');
  const enrolling = !$('totp-enrol').hidden;
  $('totp-start').hidden = active || enrolling;
  $('totp-remove').hidden = !active;
  $('recovery-new').hidden = !active;
  $('totp-state').textContent = active
    ? 'An authenticator app is set up.'
    : 'An authenticator app (Google Authenticator, Authy, 1Password, …) shows a new six-digit code every 30 seconds.';
}

function render() {
  $('sec-username').textContent = profile.username ?? '';
  renderFactors();
  renderPassword();
  renderEmail();
  renderTotp();
  $('pk-recovery-state').textContent = has('passkey_recovery_code')
    ? 'You have passkey recovery codes. Making new ones voids the old set.'
    : 'You have no passkey recovery codes. Without them, only an administrator can help you back in '
      + 'if you lose every passkey (or a code mailed to your confirmed address, after a day\'s wait).';
}

// ---------------------------------------------------------------- password

async function savePassword() {
  const password = $('new-password').value;
  if (!password) {
    $('new-password').focus();
    throw new Error('Enter the new password first.');
  }
  if (password !== $('new-password-repeat').value) {
    $('new-password-repeat').focus();
    throw new Error('The two new passwords differ.');
  }
  const current = $('current-password').value;
  const hadPassword = has('password');
  await authed('PUT', '/v1/me/password', current ? { password, current_password: current } : { password });
  for (const id of ['current-password', 'new-password', 'new-password-repeat']) $(id).value = '';
  await loadProfile();
  say(hadPassword ? 'Password changed.' : 'Password set.');
}

// ---------------------------------------------------------------- email

async function sendEmailCode() {
  const email = required('email', 'an email address');
  const sent = await authed('POST', '/v1/me/email', { email });
  $('email-verify-form').hidden = false;
  $('email-code').value = '';
  $('email-code').focus();
  await loadProfile();
  say(`We mailed a code to ${email}; it works for ${duration(sent.expires_in)}.`);
}

async function verifyEmail() {
  const code = required('email-code', 'the code from the email');
  await authed('POST', '/v1/me/email/verify', { code });
  $('email-verify-form').hidden = true;
  $('email-code').value = '';
  await loadProfile();
  say('Email address verified.');
}

// ---------------------------------------------------------------- authenticator app (TOTP)

// The server's SVG goes in as an image: an <img> never runs script or loads anything that an
// SVG might hold, where inserting the markup into the page could.
function svgDataUrl(svg) {
  if (typeof svg !== 'string' || !svg.includes('<svg')) throw new Error('The server sent no QR code.');
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
  say('Scan the QR code, then enter the code your app shows.');
}

async function confirmTotp() {
  const code = required('totp-code', 'the code from your app');
  const { recovery_codes: codes } = await authed('POST', '/v1/me/totp/finish', { code });
  hideEnrolment();
  showRecoveryCodes(codes);
  await loadProfile();
  say('Authenticator app set up. Save your recovery codes now.');
}

async function removeTotp() {
  if (!window.confirm('Remove the authenticator app? Its recovery codes stop working too.')) return;
  await authed('DELETE', '/v1/me/totp');
  hideRecoveryCodes();
  await loadProfile();
  say('Authenticator app removed.');
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
  if (!window.confirm('Make ten new recovery codes? The old ones stop working.')) return;
  const { recovery_codes: codes } = await authed('POST', '/v1/me/recovery-codes', {});
  showRecoveryCodes(codes);
  await loadProfile();
  say('New recovery codes made; the old ones no longer work. Save these now.');
}

async function copyRecoveryCodes() {
  const codes = [...$('recovery-codes').children].map((item) => item.textContent);
  if (!navigator.clipboard) throw new Error('This browser cannot copy from here: select the codes and copy them.');
  await navigator.clipboard.writeText(codes.join('\n'));
  say('Recovery codes copied.');
}

// ---------------------------------------------------------------- passkey recovery codes

async function newPasskeyRecoveryCodes() {
  if (has('passkey_recovery_code') && !window.confirm('Make ten new passkey recovery codes? The old ones stop working.')) return;
  const { recovery_codes: codes } = await authed('POST', '/v1/me/passkey-recovery-codes', {});
  $('pk-recovery-codes').replaceChildren(...codes.map((code) => {
    const item = document.createElement('li');
    item.textContent = code;
    return item;
  }));
  $('pk-recovery').hidden = false;
  $('pk-recovery-title').focus();
  await loadProfile();
  say('Passkey recovery codes made. Save them now: they are not shown again.');
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
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showSignedOut(`Your session has ended; sign in again. ${describeError(err)}`);
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
  initDevices({ authed, run, reloadProfile: loadProfile, showSignedOut });
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
    showSignedOut('Sign in first: these settings belong to a signed-in account.');
    return;
  }
  run(restore);
}

init();
