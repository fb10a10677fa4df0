// passgate browser client: registers and signs in with passkeys through the /v1 JSON API,
// offers passkey autofill (conditional UI), and shows the signed-in profile and token claims.
// Plain ES module, no dependencies, no build step; what the pages share is in /webauthn.js (the
// API) and /page.js (the shell and its helpers).

import {
  ApiError, api, clearTokens, creationOptionsFromJSON, credentialToJSON, decodeJwtPayload,
  loadTokens, requestOptionsFromJSON, saveTokens, withAccessToken,
} from '/webauthn.js';
import { $, describeError, oneAtATime, required, say, showFactorList, t } from '/page.js';

// ---------------------------------------------------------------- messages

// ---------------------------------------------------------------- conditional UI (passkey autofill)

// The pending autofill request: the browser allows one WebAuthn request at a time,
// so every explicit ceremony must abort this and wait for it to settle first.
let autofill = null;

// Mirrored on <body data-autofill="off|starting|pending"> so tests (and styles) can tell
// when the browser really holds the request.
function setAutofill(entry, state) {
  autofill = entry;
  document.body.dataset.autofill = state;
}

function armAutofill() {
  if (autofill || loadTokens() || !window.PublicKeyCredential?.isConditionalMediationAvailable) return;
  const controller = new AbortController();
  const settled = runAutofill(controller).catch((err) => {
    // Aborts are ours; NotAllowedError is what a conditional request gives when no
    // passkey is offered, which is not worth a message.
    if (controller.signal.aborted || err?.name === 'AbortError' || err?.name === 'NotAllowedError') return;
    say(describeError(err), 'error');
  });
  const entry = { controller, settled };
  setAutofill(entry, 'starting');
  settled.finally(() => { if (autofill === entry) setAutofill(null, 'off'); });
}

async function runAutofill(controller) {
  const { signal } = controller;
  if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
  const { ceremony_id, publicKey } = await api('/v1/login/start', { body: {}, signal });
  const request = navigator.credentials.get({
    publicKey: requestOptionsFromJSON(publicKey),
    mediation: 'conditional',
    signal,
  });
  if (autofill?.controller === controller) document.body.dataset.autofill = 'pending';
  const credential = await request;
  // The user picked a passkey: nothing is pending in the browser any more.
  if (autofill?.controller === controller) setAutofill(null, 'off');
  await ceremony(() => finishLogin(ceremony_id, credential), { fromAutofill: true });
}

async function disarmAutofill() {
  const pending = autofill;
  if (!pending) return;
  setAutofill(null, 'off');
  pending.controller.abort();
  await pending.settled;
}

// ---------------------------------------------------------------- ceremonies

const run = oneAtATime(describeError, (on) => {
  const noWebAuthn = !window.PublicKeyCredential;
  for (const id of ['register', 'login', 'login-discoverable']) $(id).disabled = on || noWebAuthn;
  $('logout').disabled = on;
});

// Runs one action at a time: cancels autofill first, reports errors, and re-arms
// autofill if we are still signed out afterwards. A failed autofill sign-in does not
// re-arm itself, so an authenticator that answers without asking cannot loop.
async function ceremony(action, { fromAutofill = false } = {}) {
  const ran = await run(async () => {
    if (!fromAutofill) await disarmAutofill();
    await action();
  });
  if (ran && !fromAutofill && !loadTokens()) armAutofill();
}

const typedUsername = () => required('username', 'app.need_username');

async function register() {
  const username = typedUsername();
  const displayName = $('display-name').value.trim();
  say(t('msg.creating_passkey'));
  const start = await api('/v1/register/start', {
    body: displayName ? { username, display_name: displayName } : { username },
  });
  const credential = await navigator.credentials.create({ publicKey: creationOptionsFromJSON(start.publicKey) });
  const tokens = await api('/v1/register/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) },
  });
  await signedIn(tokens, t('app.account_created'));
  offerRecoveryCodes();
}

// ---------------------------------------------------------------- recovery codes, offered once

function offerRecoveryCodes() {
  $('recovery-offer-ask').hidden = false;
  $('recovery-offer-shown').hidden = true;
  $('recovery-offer').hidden = false;
  $('recovery-offer-title').focus();
}

function closeRecoveryOffer() {
  $('recovery-offer').hidden = true;
  $('recovery-offer-codes').replaceChildren();
  $('signed-in-title').focus();
}

async function makeRecoveryCodes() {
  const { recovery_codes: codes } = await withAccessToken(
    (token) => api('/v1/me/passkey-recovery-codes', { method: 'POST', body: {}, token }),
    (err) => err instanceof ApiError && err.status === 401,
  );
  $('recovery-offer-codes').replaceChildren(...codes.map((code) => {
    const item = document.createElement('li');
    item.textContent = code;
    return item;
  }));
  $('recovery-offer-ask').hidden = true;
  $('recovery-offer-shown').hidden = false;
  $('recovery-offer-title').focus();
  await showProfile({ keepFocus: true });
  say(t('msg.pk_recovery_made'));
}

async function login(username) {
  say(t('msg.waiting_passkey'));
  const start = await api('/v1/login/start', { body: username ? { username } : {} });
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  await finishLogin(start.ceremony_id, credential);
}

async function finishLogin(ceremonyId, credential) {
  let tokens;
  try {
    tokens = await api('/v1/login/finish', {
      body: { ceremony_id: ceremonyId, credential: credentialToJSON(credential) },
    });
  } catch (err) {
    toReview(err);
    throw err;
  }
  await signedIn(tokens, t('msg.signed_in'));
}

// A sign-in the risk rules held (403 held_for_review) goes to /review.html, which shows why and
// takes an appeal; the review's id and token travel in the fragment, which no server sees.
function toReview(err) {
  const problem = err instanceof ApiError ? err.problem : null;
  if (problem?.code !== 'held_for_review' || !problem.review_id || !problem.review_token) return;
  const fragment = new URLSearchParams({ id: problem.review_id, token: problem.review_token });
  window.location.assign(`/review.html#${fragment}`);
}

async function signedIn(tokens, message) {
  saveTokens(tokens);
  await showProfile();
  say(message);
}

async function logout() {
  const tokens = loadTokens();
  clearTokens();
  showSignedOut();
  try {
    if (tokens?.refresh_token) await api('/v1/logout', { body: { refresh_token: tokens.refresh_token } });
    say(t('app.signed_out'));
  } catch (err) {
    // The local session is gone either way; the server's copy expires on its own.
    say(t('app.signed_out_here', { error: describeError(err) }), 'error');
  }
}

// ---------------------------------------------------------------- views

// The access token may have expired while the tab was open or reloaded: any 401 trades the
// refresh token once.
function fetchMe() {
  return withAccessToken((token) => api('/v1/me', { token }), (err) => err instanceof ApiError && err.status === 401);
}

function describeItem(item) {
  if (item && typeof item === 'object') {
    const label = item.name ?? item.device_name ?? item.kind ?? item.type;
    return label !== undefined ? String(label) : JSON.stringify(item);
  }
  return String(item);
}

const listText = (value) => (Array.isArray(value) && value.length ? value.map(describeItem).join(', ') : '—');

async function showProfile({ keepFocus = false } = {}) {
  let me;
  try {
    me = await fetchMe();
  } catch (err) {
    clearTokens();
    showSignedOut();
    throw err;
  }
  const { access_token } = loadTokens();
  let claims;
  try {
    claims = JSON.stringify(decodeJwtPayload(access_token, t('app.access_token')), null, 2);
  } catch (err) {
    claims = t('app.claims_undecodable', { error: err.message });
  }
  $('me-username').textContent = me.username ?? '';
  $('me-display-name').textContent = me.display_name || '—';
  $('me-email').textContent = me.email ? t(me.email_verified ? 'msg.email_verified' : 'msg.email_unverified', { email: me.email }) : '—';
  $('me-user-id').textContent = me.user_id ?? '';
  showFactorList($('me-factors'), me.factors);
  $('me-roles').textContent = listText(me.roles);
  $('claims').textContent = claims;
  $('signed-out').hidden = true;
  $('signed-in').hidden = false;
  // Move focus with the view so keyboard and screen-reader users land on the new card.
  if (!keepFocus) $('signed-in-title').focus();
}

function showSignedOut() {
  const wasSignedIn = !$('signed-in').hidden;
  $('recovery-offer').hidden = true;
  $('recovery-offer-codes').replaceChildren();
  $('signed-in').hidden = true;
  $('signed-out').hidden = false;
  if (wasSignedIn) $('signed-out-title').focus();
  $('claims').textContent = '';
  for (const id of ['me-username', 'me-display-name', 'me-email', 'me-user-id', 'me-factors', 'me-roles']) $(id).textContent = '';
  delete $('me-factors').dataset.factors;
}

// ---------------------------------------------------------------- wiring

async function restoreSession() {
  try {
    await showProfile();
  } catch (err) {
    throw new Error(t('msg.session_ended', { error: describeError(err) }));
  }
}

function init() {
  run.setBusy(false);

  $('auth-form').addEventListener('submit', (event) => {
    event.preventDefault();
    ceremony(() => login(typedUsername()));
  });
  $('register').addEventListener('click', () => ceremony(register));
  $('login-discoverable').addEventListener('click', () => ceremony(() => login(null)));
  $('logout').addEventListener('click', () => ceremony(logout));
  $('recovery-offer-make').addEventListener('click', () => run(makeRecoveryCodes));
  $('recovery-offer-skip').addEventListener('click', closeRecoveryOffer);
  $('recovery-offer-done').addEventListener('click', closeRecoveryOffer);

  if (loadTokens()) {
    // A reload keeps the session; if it cannot be restored we land on the sign-in card.
    ceremony(restoreSession);
  } else {
    armAutofill();
  }
  // After the first action has started, which clears the status line.
  if (!window.PublicKeyCredential) say(t('msg.no_webauthn'), 'error');
}

init();
