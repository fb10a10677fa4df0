// A payment service's check of a passgate payment authorization, with Node.js's built-in
// crypto only (Node 20 or later; no npm package). It is what docs/INTEGRATION.md describes, and
// tests/api/discovery.rs runs it against a live passgate.
//
// As a library:
//   import { PaymentVerifier } from './verify.mjs';
//   const verifier = await PaymentVerifier.discover('https://auth.example', 'payments:authorize');
//   const approval = await verifier.verify(token, transaction); // throws a VerifyError
//   // ...then carry out exactly `transaction`, for approval.sub.
//
// As a command (what the test does): node verify.mjs ISSUER AUDIENCE < checks.json, where
// checks.json is [{"token": "...", "transaction": {...}}, ...]. Each check is run in order with
// one verifier (so a replayed token is refused) and a JSON array of {"ok": true, "sub", "jti"}
// or {"ok": false, "error"} is printed. The token goes on stdin, never in argv: a process list
// is readable by every user of the machine.

import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const AUTHORIZATION_TYP = 'payment-authz+jwt';
const PAYMENT_SCOPE = 'payment:authorize';
const LEEWAY_SECONDS = 5;
// passgate's authorization tokens live at most this long; a longer one is not an approval.
const MAX_LIFETIME_SECONDS = 120;

export class VerifyError extends Error {}

const b64url = (text) => Buffer.from(text, 'base64url');
const json = (text) => JSON.parse(b64url(text).toString('utf8'));

/** The `txn` claim of a transaction: base64url(SHA-256(its canonical JSON)). Canonical: the
 * members amount, currency, payee and (when set) reference, keys sorted, no white space, strings
 * escaped as JSON.stringify does (RFC 8785). The amount is the decimal string as sent. */
export function txnOf(transaction) {
  const members = {};
  for (const key of ['amount', 'currency', 'payee', 'reference']) {
    const value = transaction[key];
    if (value === undefined || value === null) {
      if (key !== 'reference') throw new VerifyError(`transaction.${key} is missing`);
      continue;
    }
    if (typeof value !== 'string') throw new VerifyError(`transaction.${key} is not a string`);
    members[key] = value;
  }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

export class PaymentVerifier {
  /** Reads issuer + /.well-known/openid-configuration and checks that it names this issuer. */
  static async discover(issuer, audience) {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const document = await (await fetch(url)).json();
    if (document.issuer !== issuer) throw new VerifyError(`${url} names issuer ${document.issuer}`);
    return new PaymentVerifier(issuer, audience, document.jwks_uri);
  }

  constructor(issuer, audience, jwksUri) {
    Object.assign(this, { issuer, audience, jwksUri, keys: new Map(), fetchedAt: 0 });
    // jti -> exp. Single-use within this process; several instances of the service must share
    // this in their database (a unique jti column written in the payment's transaction).
    this.spent = new Map();
  }

  /** The published key for kid; an unknown kid refetches the JWKS at most once a minute. */
  async key(kid) {
    if (!this.keys.has(kid) && Date.now() - this.fetchedAt > 60_000) {
      const { keys } = await (await fetch(this.jwksUri)).json();
      this.keys = new Map(keys.map((jwk) => [jwk.kid, jwk]));
      this.fetchedAt = Date.now();
    }
    const jwk = this.keys.get(kid);
    if (!jwk) throw new VerifyError(`no published key ${kid}`);
    return jwk;
  }

  /** The approval's claims if token is a valid, unspent authorization of exactly transaction. */
  async verify(token, transaction, now = Math.floor(Date.now() / 1000)) {
    const parts = String(token).split('.');
    if (parts.length !== 3) throw new VerifyError('not a JWT');
    const header = json(parts[0]);
    // The algorithm is the token's own claim: only the two passgate uses, and the key's own.
    if (!['ES256', 'EdDSA'].includes(header.alg)) throw new VerifyError(`algorithm ${header.alg}`);
    const jwk = await this.key(header.kid);
    if (jwk.alg !== header.alg) throw new VerifyError('algorithm does not match the key');
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    const key = createPublicKey({ key: jwk, format: 'jwk' });
    const valid = header.alg === 'ES256'
      ? verifySignature('sha256', signed, { key, dsaEncoding: 'ieee-p1363' }, b64url(parts[2]))
      : verifySignature(null, signed, key, b64url(parts[2]));
    if (!valid) throw new VerifyError('bad signature');
    // An access token is signed by the same keys: its typ and scope tell them apart.
    if (header.typ !== AUTHORIZATION_TYP) throw new VerifyError(`typ ${header.typ}`);

    const claims = json(parts[1]);
    if (claims.iss !== this.issuer) throw new VerifyError('issuer');
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(this.audience)) throw new VerifyError('audience');
    if (!Number.isInteger(claims.exp) || !Number.isInteger(claims.iat)) throw new VerifyError('exp, iat');
    if (now >= claims.exp + LEEWAY_SECONDS) throw new VerifyError('expired');
    if (Math.max(claims.nbf ?? claims.iat, claims.iat) > now + LEEWAY_SECONDS) throw new VerifyError('not yet valid');
    if (claims.scope !== PAYMENT_SCOPE) throw new VerifyError('scope');
    if (claims.exp - claims.iat > MAX_LIFETIME_SECONDS) throw new VerifyError('lifetime over 120 s');
    if (typeof claims.sub !== 'string' || !claims.sub) throw new VerifyError('sub');
    if (claims.txn !== txnOf(transaction)) throw new VerifyError('txn: approved another transaction');
    // Spent last, so that a token shown with the wrong transaction is not used up.
    for (const [jti, exp] of this.spent) if (exp + LEEWAY_SECONDS < now) this.spent.delete(jti);
    if (typeof claims.jti !== 'string' || !claims.jti) throw new VerifyError('jti');
    if (this.spent.has(claims.jti)) throw new VerifyError('replayed jti');
    this.spent.set(claims.jti, claims.exp);
    return claims;
  }
}

async function main([issuer, audience]) {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const verifier = await PaymentVerifier.discover(issuer, audience);
  const results = [];
  for (const { token, transaction } of JSON.parse(input)) {
    try {
      const { sub, jti } = await verifier.verify(token, transaction);
      results.push({ ok: true, sub, jti });
    } catch (error) {
      if (!(error instanceof VerifyError)) throw error;
      results.push({ ok: false, error: error.message });
    }
  }
  console.log(JSON.stringify(results));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
