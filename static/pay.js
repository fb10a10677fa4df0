// passgate demo pay page: the signed-in user approves one exact payment with a passkey
// (POST /v1/stepup/start, navigator.credentials.get, POST /v1/stepup/finish), sees the
// authorization token's claims, and hands transaction + token to the payment API, which
// verifies the token on its own. Plain ES module, no dependencies, no build step.
// The session is the one /app.js keeps in sessionStorage.

const $ = (id) => document.getElementById(id);
const TOKENS_KEY = 'passgate.tokens';
const DEFAULT_PAYMENT_API = 'http://localhost:8090/payments';

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }
}

async function readJson(res) {
  const text = await res.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

async function api(path, { body, token } = {}) {
  const headers = { Accept: 'application/json, application/problem+json', 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, data && typeof data === 'object' ? data : { title: res.statusText });
  return data;
}

// ---------------------------------------------------------------- base64url and WebAuthn JSON
// The same conversions as /app.js (which is a page script, not a library).

function b64urlToBuffer(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

function bufferToB64url(buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function requestOptionsFromJSON(json) {
  if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function') {
    return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: b64urlToBuffer(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((d) => ({ ...d, id: b64urlToBuffer(d.id) })),
  };
}

function credentialToJSON(cred) {
  if (typeof cred.toJSON === 'function') return cred.toJSON();
  const r = cred.response;
  const response = {
    clientDataJSON: bufferToB64url(r.clientDataJSON),
    authenticatorData: bufferToB64url(r.authenticatorData),
    signature: bufferToB64url(r.signature),
  };
  if (r.userHandle) response.userHandle = bufferToB64url(r.userHandle);
  return {
    id: cred.id,
    rawId: bufferToB64url(cred.rawId),
    type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment ?? undefined,
    clientExtensionResults: cred.getClientExtensionResults?.() ?? {},
    response,
  };
}

function decodeJwtPayload(jwt) {
  const part = String(jwt).split('.')[1];
  if (!part) throw new Error('the authorization token is not a JWT');
  return JSON.parse(new TextDecoder().decode(b64urlToBuffer(part)));
}

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

function loadTokens() {
  try { return JSON.parse(sessionStorage.getItem(TOKENS_KEY)); } catch { return null; }
}

// Access tokens live minutes; the user may have signed in a while ago on /. Trades the
// refresh token once, as /app.js does, and keeps the session for both pages.
async function withAccessToken(call) {
  const tokens = loadTokens();
  try {
    return await call(tokens.access_token);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401 && err.problem.code === 'unauthorized' && tokens.refresh_token)) throw err;
  }
  const fresh = await api('/v1/token/refresh', { body: { refresh_token: tokens.refresh_token } });
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify({ ...tokens, ...fresh }));
  return call(fresh.access_token);
}

// ---------------------------------------------------------------- messages

function say(text, kind = 'info') {
  const el = $('pay-message');
  el.textContent = text;
  el.className = text ? kind : '';
}

function describeError(err) {
  if (err instanceof ApiError) {
    const p = err.problem;
    const parts = [p.detail || p.title || `HTTP ${err.status}`];
    if (p.code) parts.push(`(${p.code})`);
    if (p.request_id) parts.push(`[request id ${p.request_id}]`);
    return parts.join(' ');
  }
  if (err && err.name === 'NotAllowedError') {
    return 'The passkey prompt was cancelled or timed out (NotAllowedError).';
  }
  return `${err?.message || err}${err?.name && err.name !== 'Error' && err.name !== 'TypeError' ? ` (${err.name})` : ''}`;
}

// Mirrored on <body data-pay-state> so tests (and styles) can follow the flow.
function setState(state) {
  document.body.dataset.payState = state;
  const busy = state === 'approving' || state === 'paying';
  document.body.setAttribute('aria-busy', String(busy));
  $('pay').disabled = busy || !window.PublicKeyCredential;
}

// ---------------------------------------------------------------- the payment

function enteredTransaction() {
  const value = (id) => $(id).value.trim();
  const transaction = { amount: value('amount'), currency: value('currency').toUpperCase(), payee: value('payee') };
  for (const field of ['amount', 'currency', 'payee']) {
    if (!transaction[field]) {
      $(field).focus();
      throw new Error(`Enter the ${field} first.`);
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
    $('payment-api').focus();
    throw new Error('The payment API must be an http(s) URL, such as http://localhost:8090/payments.');
  }
  return url.href;
}

// passgate approves the transaction with the user's passkey: the WebAuthn challenge
// commits to it, so the signature covers amount, currency and payee.
async function approve(transaction) {
  setState('approving');
  say('Waiting for your passkey…');
  const start = await withAccessToken((token) => api('/v1/stepup/start', { body: { transaction }, token }));
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  // The transaction is stated again so passgate refuses if it is not the one it started with.
  return withAccessToken((token) => api('/v1/stepup/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential), transaction },
    token,
  }));
}

async function showClaims(authorization, transaction) {
  const claims = decodeJwtPayload(authorization.authorization_token);
  $('pay-claims').textContent = JSON.stringify(claims, null, 2);
  // A check the page can make on its own: the token names what the user entered.
  if (window.crypto?.subtle && claims.txn !== await txnOf(transaction)) {
    throw new Error('The authorization token names another transaction than the one entered.');
  }
}

// The payment API trusts no one's word but the token's: it checks the token against
// passgate's published keys and the transaction it is asked to execute.
async function submitPayment(url, transaction, authorization) {
  setState('paying');
  say('Sending the approved payment…');
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
    throw new Error(`The payment API at ${url} could not be reached, or does not allow this page's origin (${err.message}).`);
  }
  const answer = await readJson(res);
  $('pay-result').textContent = answer ? JSON.stringify(answer, null, 2) : `HTTP ${res.status}`;
  $('pay-result').dataset.status = String(res.status);
  if (!res.ok) throw new ApiError(res.status, answer && typeof answer === 'object' ? answer : { title: res.statusText });
  return answer;
}

async function pay() {
  if (document.body.getAttribute('aria-busy') === 'true') return;
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
    say(`Payment accepted: ${answer.payment_id ?? ''}`.trim());
  } catch (err) {
    setState('error');
    say(describeError(err), 'error');
  }
}

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

  if (!loadTokens()?.access_token) {
    $('pay-signed-out').hidden = false;
    say('Sign in first: payments are approved with the passkey of a signed-in account.', 'error');
    return;
  }
  $('pay-card').hidden = false;
  if (!window.PublicKeyCredential) say('This browser does not support passkeys (WebAuthn).', 'error');
}

init();
