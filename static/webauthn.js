/**
 * @file passgate's browser client: the /v1 JSON API call, its problem+json errors and the text a
 * page shows for an error, base64url, the WebAuthn JSON conversions (with fallbacks for browsers
 * without the WebAuthn Level 3 JSON helpers), passkey registration, sign-in and payment approval,
 * the session's tokens in sessionStorage and JWT payload decoding. passgate's own pages import
 * it (as `/webauthn.js`), and so can a front end on another origin. Plain ES module, no
 * dependencies, no build step.
 *
 * From another origin: list that origin in passgate's `server.cors_origins` (so the browser lets
 * it load this module and read the API's answers) and in `webauthn.origins` (so passkeys made
 * there verify; its host must be the RP id or a subdomain of it, or be a related origin), then
 *
 *     import { signInWithPasskey, describeError } from 'https://auth.example/webauthn.js';
 *
 * Calls go to the origin this module was loaded from, so an imported copy talks to passgate on
 * its own. A copy served from your own origin instead (copied, vendored or bundled: the licence
 * is passgate's, MIT OR Apache-2.0) must be told where passgate is, once, with
 * `setApiBase('https://auth.example')`.
 *
 * Errors: every API failure is thrown as an {@link ApiError} carrying the RFC 9457 problem, whose
 * `code` (`unauthorized`, `rate_limited`, `validation_failed`, ... see passgate's API contract and
 * `/openapi.json`) is what to branch on; `retryAfter` is set from `Retry-After` on a 429 or a
 * lockout. The browser's own WebAuthn errors (a `DOMException` such as `NotAllowedError` when the
 * user cancels) are thrown as they are. {@link describeError} turns either into a sentence.
 *
 * Tokens: the functions that sign in return passgate's token set and do not store it;
 * {@link saveTokens} keeps it in this tab's sessionStorage, where {@link withAccessToken} finds
 * it. Access tokens live minutes; the refresh token is single-use and rotates on each refresh.
 */

const TOKENS_KEY = 'passgate.tokens';

/** Where the API is: the origin this module was loaded from, unless {@link setApiBase} says. */
let apiBase = new URL(import.meta.url).origin;

/**
 * Points every later call at passgate on another origin: for a copy of this module served from
 * your own origin. Not needed when the module is imported from passgate itself.
 * @param {string} origin passgate's origin, such as `https://auth.example` (no path)
 */
export function setApiBase(origin) {
  apiBase = new URL(origin).origin;
}

// ---------------------------------------------------------------- HTTP

/**
 * An API answer that is not 2xx.
 * @property {number} status the HTTP status
 * @property {{type: string, title: string, status: number, detail: string, code: string,
 *   request_id: string}} problem the problem+json body (or `{title}` when the body was not JSON,
 *   a proxy's error page, say)
 * @property {number|null} retryAfter seconds to wait, from `Retry-After` (429s and lockouts)
 */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {object} problem
   */
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }

  /**
   * The error for a response that is not ok. A 429 or a lockout says how long to wait
   * (Retry-After, in seconds), which pages show.
   * @param {Response} res
   * @param {any} data its parsed body (see {@link readJson})
   * @returns {ApiError}
   */
  static fromResponse(res, data) {
    const err = new ApiError(res.status, data && typeof data === 'object' ? data : { title: res.statusText });
    err.retryAfter = Number(res.headers.get('Retry-After')) || null;
    return err;
  }
}

/**
 * An English wording of err for front ends that import this module: an ApiError's problem with
 * its code and request id; for the browser's WebAuthn errors, which are terse, what their name
 * means; else the message, with the error's name unless it is one of plainNames (names that add
 * nothing to the message). passgate's own pages word errors in the reader's language with
 * /i18n.js instead.
 * @param {unknown} err anything caught
 * @param {string[]} [plainNames]
 * @returns {string}
 */
export function describeError(err, plainNames = ['Error']) {
  if (err instanceof ApiError) {
    const p = err.problem;
    const parts = [p.detail || p.title || `HTTP ${err.status}`];
    // A change only a recent passkey sign-in may make (a password and a code can be phished):
    // the user is told what to do first, in words before the server's detail.
    if (p.code === 'passkey_required') parts.unshift('Sign in with your passkey first (Sign out, then Sign in with a passkey).');
    if (p.code) parts.push(`(${p.code})`);
    if (p.request_id) parts.push(`[request id ${p.request_id}]`);
    return parts.join(' ');
  }
  if (err && err.name === 'NotAllowedError') {
    return 'The passkey prompt was cancelled or timed out (NotAllowedError).';
  }
  return `${err?.message || err}${err?.name && !plainNames.includes(err.name) ? ` (${err.name})` : ''}`;
}

/**
 * The body as JSON, or null when it is empty or not JSON (a proxy's HTML error page, say).
 * @param {Response} res
 * @returns {Promise<any>}
 */
export async function readJson(res) {
  const text = await res.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

/**
 * Whether err says the access token expired (or its session ended): the one 401 that trading
 * the refresh token can fix. A wrong password or code is a 401 too, with another code.
 * @param {unknown} err
 * @returns {boolean}
 */
export const accessTokenExpired = (err) => err instanceof ApiError && err.status === 401 && err.problem.code === 'unauthorized';

/**
 * Calls passgate: GET without a body, POST with one (as JSON), or the method given, with
 * `Authorization: Bearer token` when a token is given. No cookies are sent: passgate uses none.
 * @param {string} path an API path such as `/v1/me`
 * @param {{method?: string, body?: any, token?: string, signal?: AbortSignal}} [options]
 * @returns {Promise<any>} the parsed JSON answer (null for a 204)
 * @throws {ApiError} unless the answer is 2xx
 */
export async function api(path, { method, body, token, signal } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(apiBase + path, {
    method: method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    credentials: 'same-origin',
  });
  const data = await readJson(res);
  if (!res.ok) throw ApiError.fromResponse(res, data);
  return data;
}

// ---------------------------------------------------------------- base64url and WebAuthn JSON

/**
 * @param {string} s base64url, padded or not
 * @returns {ArrayBuffer}
 */
export function b64urlToBuffer(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

/**
 * @param {ArrayBuffer|ArrayBufferView} buf
 * @returns {string} base64url without padding
 */
export function bufferToB64url(buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const descriptorsFromJSON = (list) => (list || []).map((d) => ({ ...d, id: b64urlToBuffer(d.id) }));

// The L3 parse*FromJSON helpers are newer than WebAuthn itself; the manual conversion
// covers only the binary fields this server sends.
/**
 * The `publicKey` of `/v1/register/start`, `/v1/me/devices/start` or `/v1/enrol/start`
 * (PublicKeyCredentialCreationOptionsJSON) as `navigator.credentials.create` takes it.
 * @param {object} json
 * @returns {PublicKeyCredentialCreationOptions}
 */
export function creationOptionsFromJSON(json) {
  if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === 'function') {
    return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: b64urlToBuffer(json.challenge),
    user: { ...json.user, id: b64urlToBuffer(json.user.id) },
    excludeCredentials: descriptorsFromJSON(json.excludeCredentials),
  };
}

/**
 * The `publicKey` of `/v1/login/start` or `/v1/stepup/start`
 * (PublicKeyCredentialRequestOptionsJSON) as `navigator.credentials.get` takes it.
 * @param {object} json
 * @returns {PublicKeyCredentialRequestOptions}
 */
export function requestOptionsFromJSON(json) {
  if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function') {
    return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: b64urlToBuffer(json.challenge),
    allowCredentials: descriptorsFromJSON(json.allowCredentials),
  };
}

/**
 * Same shape as PublicKeyCredential.toJSON(), which some browsers and password-manager
 * extensions do not provide: what every `.../finish` takes as `credential`.
 * @param {PublicKeyCredential} cred a registration or an assertion
 * @returns {object} RegistrationResponseJSON or AuthenticationResponseJSON
 */
export function credentialToJSON(cred) {
  if (typeof cred.toJSON === 'function') return cred.toJSON();
  const r = cred.response;
  const response = { clientDataJSON: bufferToB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = bufferToB64url(r.attestationObject);
    response.transports = typeof r.getTransports === 'function' ? r.getTransports() : [];
  } else {
    response.authenticatorData = bufferToB64url(r.authenticatorData);
    response.signature = bufferToB64url(r.signature);
    if (r.userHandle) response.userHandle = bufferToB64url(r.userHandle);
  }
  return {
    id: cred.id,
    rawId: bufferToB64url(cred.rawId),
    type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment ?? undefined,
    clientExtensionResults: cred.getClientExtensionResults?.() ?? {},
    response,
  };
}

// ---------------------------------------------------------------- session (one for all pages)

/**
 * This tab's session, as {@link saveTokens} kept it.
 * @returns {{access_token: string, refresh_token: string, user_id: string}|null}
 */
export function loadTokens() {
  try { return JSON.parse(sessionStorage.getItem(TOKENS_KEY)); } catch { return null; }
}

/**
 * Keeps a token set (the answer of a sign-in or refresh) for this tab.
 * @param {object} tokens
 */
export function saveTokens(tokens) {
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
}

/** Forgets this tab's session (sign-out also calls `/v1/logout`, which ends it server-side). */
export function clearTokens() {
  sessionStorage.removeItem(TOKENS_KEY);
}

/**
 * Calls call(access token). Access tokens live minutes and the tab may have been open (or the
 * user signed in) a while ago: if the call fails in a way expired(err) accepts and the session
 * has a refresh token, trades that once (`POST /v1/token/refresh`), keeps the new tokens and
 * calls again.
 * @template T
 * @param {(accessToken: string) => Promise<T>} call
 * @param {(err: unknown) => boolean} expired usually {@link accessTokenExpired}
 * @returns {Promise<T>}
 * @throws {ApiError} the call's error, or the refresh's (`unauthorized` once the session ended)
 */
export async function withAccessToken(call, expired) {
  const tokens = loadTokens();
  try {
    return await call(tokens.access_token);
  } catch (err) {
    if (!(expired(err) && tokens.refresh_token)) throw err;
  }
  const fresh = await api('/v1/token/refresh', { body: { refresh_token: tokens.refresh_token } });
  saveTokens({ ...tokens, ...fresh });
  return call(fresh.access_token);
}

/**
 * The claims of a JWT, unverified (for showing them; a service verifies tokens against the
 * JWKS, see docs/INTEGRATION.md).
 * @param {string} jwt
 * @param {string} what names the token in the error
 * @returns {object}
 * @throws {Error} when jwt is not a JWT
 */
export function decodeJwtPayload(jwt, what) {
  const part = String(jwt).split('.')[1];
  if (!part) throw new Error(`${what} is not a JWT`);
  return JSON.parse(new TextDecoder().decode(b64urlToBuffer(part)));
}

// ---------------------------------------------------------------- ceremonies

/**
 * Registers a new account with a passkey: `POST /v1/register/start {username}`, the browser's
 * passkey prompt, `POST /v1/register/finish {ceremony_id, credential}`.
 * @param {string} username 3 to 64 of `A-Z a-z 0-9 . _ @ + -`
 * @returns {Promise<{user_id: string, access_token: string, token_type: string,
 *   expires_in: number, refresh_token: string, device_id: string}>} the token set (not stored)
 * @throws {ApiError} `username_taken`, `validation_failed`, `webauthn_failed`,
 *   `ceremony_not_found` (the prompt took longer than the ceremony lives), `rate_limited`
 * @throws {DOMException} the browser's: `NotAllowedError` (cancelled), `InvalidStateError`
 */
export async function registerPasskey(username) {
  const start = await api('/v1/register/start', { body: { username } });
  const credential = await navigator.credentials.create({ publicKey: creationOptionsFromJSON(start.publicKey) });
  return api('/v1/register/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) },
  });
}

/**
 * Signs in with a passkey: `POST /v1/login/start` (with the username, or none for a
 * discoverable sign-in where the user picks the account), the browser's prompt,
 * `POST /v1/login/finish {ceremony_id, credential}`.
 * @param {string} [username]
 * @returns {Promise<object>} the token set, as {@link registerPasskey} (not stored)
 * @throws {ApiError} `invalid_credentials`, `webauthn_failed`, `ceremony_not_found`,
 *   `account_locked`, `rate_limited`
 * @throws {DOMException} the browser's, such as `NotAllowedError`
 */
export async function signInWithPasskey(username) {
  const start = await api('/v1/login/start', { body: username ? { username } : {} });
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  return api('/v1/login/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) },
  });
}

/**
 * Approves one payment with the signed-in user's passkey: `POST /v1/stepup/start {transaction}`,
 * the browser's prompt, `POST /v1/stepup/finish {ceremony_id, credential}`, with the access token.
 * Hand `authorization_token` and the same transaction to the payment service, which verifies
 * both (docs/INTEGRATION.md).
 * @param {{amount: string, currency: string, payee: string, reference?: string}} transaction
 * @param {string} accessToken
 * @returns {Promise<{authorization_token: string, expires_in: number, txn: string}>}
 * @throws {ApiError} `unauthorized`, `validation_failed` (a bad transaction),
 *   `invalid_credentials` (another user's passkey, or a changed transaction),
 *   `ceremony_not_found`, `forbidden` (a device-bound policy and a synced passkey)
 * @throws {DOMException} the browser's, such as `NotAllowedError`
 */
export async function approvePayment(transaction, accessToken) {
  const start = await api('/v1/stepup/start', { body: { transaction }, token: accessToken });
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  return api('/v1/stepup/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) },
    token: accessToken,
  });
}
