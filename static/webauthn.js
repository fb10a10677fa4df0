// passgate's shared browser client code, imported by every page's script (the shell: /page.js):
// the /v1 JSON API call, its problem+json errors and the text a page shows for an error,
// base64url, the WebAuthn JSON conversions
// (with fallbacks for browsers without the L3 JSON helpers), the session's tokens in
// sessionStorage and JWT payload decoding. It exists so that every page talks to passgate the
// same way and shares one session. Plain ES module, no dependencies, no build step.

const TOKENS_KEY = 'passgate.tokens';

// ---------------------------------------------------------------- HTTP

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }

  // The error for a response that is not ok; data is its parsed body (see readJson). A 429 or a
  // lockout says how long to wait (Retry-After, in seconds), which pages show.
  static fromResponse(res, data) {
    const err = new ApiError(res.status, data && typeof data === 'object' ? data : { title: res.statusText });
    err.retryAfter = Number(res.headers.get('Retry-After')) || null;
    return err;
  }
}

// What a page shows for err: an ApiError's problem with its code and request id; for the
// browser's WebAuthn errors, which are terse, what their name means; else the message, with the
// error's name unless it is one of plainNames (names that add nothing to the message).
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

// The body as JSON, or null when it is empty or not JSON (a proxy's HTML error page, say).
export async function readJson(res) {
  const text = await res.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

// Whether err says the access token expired (or its session ended): the one 401 that trading
// the refresh token can fix. A wrong password or code is a 401 too, with another code.
export const accessTokenExpired = (err) => err instanceof ApiError && err.status === 401 && err.problem.code === 'unauthorized';

// GET without a body, POST with one (as JSON), or the method given; throws an ApiError unless
// the answer is ok.
export async function api(path, { method, body, token, signal } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, {
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

export function b64urlToBuffer(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

export function bufferToB64url(buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const descriptorsFromJSON = (list) => (list || []).map((d) => ({ ...d, id: b64urlToBuffer(d.id) }));

// The L3 parse*FromJSON helpers are newer than WebAuthn itself; the manual conversion
// covers only the binary fields this server sends.
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

// Same shape as PublicKeyCredential.toJSON(), which some browsers and
// password-manager extensions do not provide. Takes a registration or an assertion.
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

export function loadTokens() {
  try { return JSON.parse(sessionStorage.getItem(TOKENS_KEY)); } catch { return null; }
}

export function saveTokens(tokens) {
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
}

export function clearTokens() {
  sessionStorage.removeItem(TOKENS_KEY);
}

// Calls call(access token). Access tokens live minutes and the tab may have been open (or the
// user signed in) a while ago: if the call fails in a way expired(err) accepts and the session
// has a refresh token, trades that once, keeps the new tokens and calls again.
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

// The claims of a JWT, unverified (for showing them); what names the token in the error.
export function decodeJwtPayload(jwt, what) {
  const part = String(jwt).split('.')[1];
  if (!part) throw new Error(`${what} is not a JWT`);
  return JSON.parse(new TextDecoder().decode(b64urlToBuffer(part)));
}
