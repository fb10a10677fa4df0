// passgate demo pay page: the signed-in user approves one exact payment with a passkey
// (POST /v1/stepup/start, navigator.credentials.get, POST /v1/stepup/finish), sees the
// authorization token's claims, and hands transaction + token to the payment API, which
// verifies the token on its own. Plain ES module, no dependencies, no build step.
// The session is the one /app.js keeps in sessionStorage; what the pages share is in /webauthn.js
// (the API) and /page.js (the shell and its helpers).

import {
  ApiError, accessTokenExpired, api, bufferToB64url, credentialToJSON, decodeJwtPayload, loadTokens, readJson, requestOptionsFromJSON, withAccessToken,
} from '/webauthn.js';
import { $, describeError as describeCommonError, markInvalid, oneAtATime, say, t } from '/page.js';

const DEFAULT_PAYMENT_API = 'http://localhost:8090/payments';

// ---------------------------------------------------------------- the transaction

// What passgate hashes into the challenge and the txn claim: RFC 8785 (keys sorted, no
// white space). Every member is a string, and JSON.stringify escapes strings as JCS does.
function canonicalJson(transaction) {
  const sorted = {};
  for (const key of Object.keys(transaction).sort()) sorted[key] = transaction[key];
  return JSON.stringify(sorted);
}

async function txnOf(transaction) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canonicalJson(transaction)));
  return bufferToB64url(digest);
}

// ---------------------------------------------------------------- session

// Access tokens live minutes; the user may have signed in a while ago on /. An expired one
// (401 unauthorized, see accessTokenExpired) trades the refresh token once, and the new
// tokens serve both pages.

// ---------------------------------------------------------------- messages

// A TypeError's name adds nothing here either (a failed fetch, say).
const describeError = (err) => describeCommonError(err, ['Error', 'TypeError']);

const run = oneAtATime(describeError, (on) => {
  $('pay').disabled = on || !window.PublicKeyCredential;
});

// Mirrored on <body data-pay-state> so tests (and styles) can follow the flow.
function setState(state) {
  document.body.dataset.payState = state;
}

// ---------------------------------------------------------------- the payment

function enteredTransaction() {
  const value = (id) => $(id).value.trim();
  const transaction = { amount: value('amount'), currency: value('currency').toUpperCase(), payee: value('payee') };
  for (const field of ['amount', 'currency', 'payee']) {
    if (!transaction[field]) {
      markInvalid($(field));
      $(field).focus();
      throw new Error(t(`pay.need_${field}`));
    }
  }
  if (value('reference')) transaction.reference = value('reference');
  return transaction;
}

function paymentApiUrl() {
  const text = $('payment-api').value.trim();
  let url;
  try { url = new URL(text); } catch { url = null; }
  if (!url || !['http:', 'https:'].includes(url.protocol)) {
    markInvalid($('payment-api'));
    $('payment-api').focus();
    throw new Error(t('pay.bad_url'));
  }
  return url.href;
}

// passgate approves the transaction with the user's passkey: the WebAuthn challenge
// commits to it, so the signature covers amount, currency and payee.
async function approve(transaction) {
  setState('approving');
  say(t('msg.waiting_passkey'));
  const start = await withAccessToken((token) => api('/v1/stepup/start', { body: { transaction }, token }), accessTokenExpired);
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  // The transaction is stated again so passgate refuses if it is not the one it started with.
  return withAccessToken((token) => api('/v1/stepup/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential), transaction },
    token,
  }), accessTokenExpired);
}

async function showClaims(authorization, transaction) {
  const claims = decodeJwtPayload(authorization.authorization_token, t('pay.the_token'));
  $('pay-claims').textContent = JSON.stringify(claims, null, 2);
  // A check the page can make on its own: the token names what the user entered.
  if (window.crypto?.subtle && claims.txn !== await txnOf(transaction)) {
    throw new Error(t('pay.other_txn'));
  }
}

// The payment API trusts no one's word but the token's: it checks the token against
// passgate's published keys and the transaction it is asked to execute.
async function submitPayment(url, transaction, authorization) {
  setState('paying');
  say(t('pay.sending'));
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json, application/problem+json' },
      body: JSON.stringify({ transaction, authorization_token: authorization.authorization_token }),
      credentials: 'omit',
    });
  } catch (err) {
    // A network error and a CORS refusal look the same from here.
    throw new Error(t('pay.unreachable', { url, error: err.message }));
  }
  const answer = await readJson(res);
  $('pay-result').textContent = answer ? JSON.stringify(answer, null, 2) : `HTTP ${res.status}`;
  $('pay-result').dataset.status = String(res.status);
  if (!res.ok) throw ApiError.fromResponse(res, answer);
  return answer;
}

const pay = () => run(async () => {
  $('pay-claims').textContent = '';
  $('pay-result').textContent = '';
  delete $('pay-result').dataset.status;
  try {
    const transaction = enteredTransaction();
    const url = paymentApiUrl();
    const authorization = await approve(transaction);
    await showClaims(authorization, transaction);
    const answer = await submitPayment(url, transaction, authorization);
    setState('done');
    say(t('pay.accepted', { id: answer.payment_id ?? '' }).trim());
  } catch (err) {
    setState('error');
    throw err;
  }
});

// ---------------------------------------------------------------- wiring

function init() {
  const fromQuery = new URLSearchParams(location.search).get('api');
  $('payment-api').value = fromQuery || DEFAULT_PAYMENT_API;
  $('currency').addEventListener('input', (event) => { event.target.value = event.target.value.toUpperCase(); });
  $('pay-form').addEventListener('submit', (event) => {
    event.preventDefault();
    pay();
  });
  setState('idle');
  run.setBusy(false);

  if (!loadTokens()?.access_token) {
    $('pay-signed-out').hidden = false;
    say(t('pay.sign_in_first'), 'error');
    return;
  }
  $('pay-card').hidden = false;
  if (!window.PublicKeyCredential) say(t('msg.no_webauthn'), 'error');
}

init();
