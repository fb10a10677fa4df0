// Shared harness of the browser tests (passkey.mjs, pay.mjs): BASE_URL, the headless Chromium
// launch, the step runner with its timeouts, pass/fail count and failure diagnostics, and a
// browser context with a CDP virtual passkey authenticator. It exists so that every script
// runs, reports and ends the same way: one line per step, then "browser: N passed, M failed"
// (which tests/api/browser.rs reads) and exit status 1 if any step failed. The pages speak the
// context's locale (see openContext); an error's problem code is on the status line's data-code. A Content Security
// Policy violation on a page fails the step during which it was reported.
// Env: BASE_URL (required), TEST_USERNAME (default random), CHROMIUM (default /usr/bin/chromium),
// STEP_TIMEOUT_MS (default 15000: each action; a step has twice that).

import { createHmac, randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { chromium } from 'playwright-core';

export const STEP_MS = Number(process.env.STEP_TIMEOUT_MS || 15000);
const STEP_BUDGET_MS = 2 * STEP_MS;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Flags measured to work as root, offline, in a container.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-proxy-server',
];

// TEST_USERNAME, or a fresh random name starting with prefix.
export const testUsername = (prefix) => process.env.TEST_USERNAME || `${prefix}-${randomBytes(5).toString('hex')}`;

function baseUrl() {
  if (!process.env.BASE_URL) {
    console.error(`BASE_URL is required, e.g. BASE_URL=http://localhost:8080 node ${basename(process.argv[1])}`);
    process.exit(2);
  }
  const url = new URL(process.env.BASE_URL);
  // An IP address cannot be a WebAuthn RP id, and http:// is a secure context only on localhost.
  if (['127.0.0.1', '[::1]'].includes(url.hostname)) {
    console.log(`note: opening ${url.hostname} as localhost (an IP address cannot be an RP id)`);
    url.hostname = 'localhost';
  }
  return url.origin;
}

export const BASE_URL = baseUrl();

// Every page the server serves from static/, for the checks that go over them all.
export const PAGES = ['/', '/fallback.html', '/enrol.html', '/security.html', '/pay.html', '/admin.html', '/review.html'];

// ---------------------------------------------------------------- step runner

// One script is one process and one run, so the runner's state is the module's.
let passed = 0;
let failed = 0;
let currentPage = null;
const pageErrors = [];
// Content-Security-Policy violations the pages reported (console, or the securitypolicyviolation
// event): every page runs under passgate's policy, and an inline style or script that slips back
// into a page, or a request to an origin the policy does not name, fails the step it happened in.
const cspViolations = [];
let cspReported = 0;

function newCspViolation() {
  if (cspViolations.length === cspReported) return null;
  const first = cspViolations[cspReported];
  cspReported = cspViolations.length;
  return first;
}
// What a failed step reports about the page: set by runBrowserTest.
let diagnostics = null;

class StepFailed extends Error {}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Reads something off the page for a failure report; a page that hangs or is gone does not
// hang the report.
async function readPage(read, what) {
  try {
    return await withTimeout(read(), 2000, what);
  } catch {
    return '(page not readable)';
  }
}

async function reportPage(page) {
  const { messageSelector, pageState } = diagnostics;
  if (messageSelector) {
    const text = await readPage(async () => (await page.locator(messageSelector).textContent()) || '(empty)', messageSelector);
    console.log(`     ${messageSelector}: ${text}`);
  }
  console.log(`     page state: ${await readPage(async () => JSON.stringify(await page.evaluate(pageState)), 'page state')}`);
}

// Runs one step within STEP_BUDGET_MS and prints "ok" or "FAIL" with what the page showed; a
// failed step ends the run (the rest of the scenario depends on it). Each action in a step has
// STEP_MS (the pages' default timeout); the step has twice that, so an action that hangs fails
// with its own error (which action, and Playwright's log of it), not only the step's name.
export async function step(name, fn) {
  const started = Date.now();
  try {
    await withTimeout(fn(), STEP_BUDGET_MS, name);
    const violation = newCspViolation();
    if (violation) throw new Error(`Content Security Policy violation: ${violation}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
    if (currentPage && diagnostics) await reportPage(currentPage);
    for (const line of pageErrors.slice(-5)) console.log(`     page: ${line}`);
    throw new StepFailed(name);
  }
  passed++;
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

export function check(condition, what) {
  if (!condition) throw new Error(what);
}

// ---------------------------------------------------------------- waiting on a page

// Error probes, evaluated in the page: what it shows as an error, or nothing.
// The status line (#message) in its error state, with its problem code.
export const messageError = () => {
  const message = document.getElementById('message');
  return message?.classList.contains('error') && `${message.textContent} [${message.dataset.code || ''}]`;
};

// The first alert on the page (a card's own error), else the status line's error.
export const alertOrMessageError = () => {
  const alerts = [...document.querySelectorAll('[role="alert"]')].map((a) => a.textContent).filter(Boolean);
  const message = document.getElementById('message');
  return alerts[0] || (message?.classList.contains('error') && message.textContent);
};

// Waits until ready(arg) (evaluated in the page) returns something truthy and returns that, or
// fails at once with the page's text if errorShown finds an error first.
export async function waitFor(page, ready, arg = null, errorShown = messageError) {
  const options = { timeout: STEP_MS };
  const outcomes = [
    page.waitForFunction(ready, arg, options).then(async (handle) => ({ result: await handle.jsonValue() })),
    page.waitForFunction(errorShown, null, options).then(async (handle) => ({ error: await handle.jsonValue() })),
  ];
  // The loser polls on until its page goes or it times out; how it ends is of no interest.
  for (const outcome of outcomes) outcome.catch(() => {});
  const state = await Promise.race(outcomes);
  check(!state.error, `page reported: ${state.error}`);
  return state.result;
}

// Waits until the page shows an error and returns its text.
export async function waitForError(page, errorShown = messageError) {
  return (await page.waitForFunction(errorShown, null, { timeout: STEP_MS })).jsonValue();
}

// ---------------------------------------------------------------- browser context

// One browser context with its own virtual platform authenticator (Chromium allows only one
// internal authenticator per context). The authenticator answers only while a step switches
// presence on: Chromium's virtual environment answers a conditional (autofill) request at once
// when a passkey exists, where a person would have to pick it, and the page on / keeps such a
// request pending while signed out, which must not be answered by accident.
// locale sets Accept-Language and navigator.languages, which choose the pages' language: the
// scenarios read English text unless they ask for another.
export async function openContext(browser, { withoutJsonHelpers = false, locale = 'en-US' } = {}) {
  const context = await browser.newContext({ locale });
  // Runs before any page script and, injected over DevTools, is not itself held to the policy.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`securitypolicyviolation: ${event.violatedDirective} blocked `
        + `${event.blockedURI || 'inline'} in ${event.sourceFile || event.documentURI}:${event.lineNumber}`);
    });
  });
  if (withoutJsonHelpers) {
    // Exercise the page's fallback for browsers without the WebAuthn L3 JSON helpers.
    await context.addInitScript(() => {
      delete PublicKeyCredential.parseCreationOptionsFromJSON;
      delete PublicKeyCredential.parseRequestOptionsFromJSON;
      delete PublicKeyCredential.prototype.toJSON;
    });
  }
  const page = await context.newPage();
  // A ceremony in a tab that is not in front fails with NotAllowedError.
  await page.bringToFront();
  page.setDefaultTimeout(STEP_MS);
  // A page's submit buttons start disabled until its script has run (static/page.js): a step
  // that types and presses Enter at once would otherwise be lost. Every page's init marks the
  // body aria-busy, so a load or reload waits for that.
  const scriptRan = () => page.waitForFunction(() => document.body?.hasAttribute('aria-busy'));
  for (const name of ['goto', 'reload']) {
    const navigate = page[name].bind(page);
    page[name] = async (...args) => {
      const response = await navigate(...args);
      await scriptRan();
      return response;
    };
  }
  // With the page it came from: an error of an earlier step's page is not this step's cause.
  page.on('pageerror', (err) => pageErrors.push(`uncaught ${err.message} (on ${page.url()})`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (text.includes('Content Security Policy') || text.startsWith('securitypolicyviolation')) cspViolations.push(text);
    if (msg.type() === 'error') pageErrors.push(`console.error ${text} (on ${page.url()})`);
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: false,
    },
  });
  const presence = (enabled) => cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId, enabled });
  const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  currentPage = page;
  // cdp and authenticatorId let a script move credentials on and off the authenticator.
  return { context, page, presence, credentials, cdp, authenticatorId };
}

// The fallback flows: a context whose page must do without the WebAuthn L3 JSON helpers, and
// (the authenticator being new) a user of its own, named after username (64 characters at most).
export async function openFallbackContext(browser, username) {
  return { username: `${username}-fb`.slice(0, 64), ...(await openContext(browser, { withoutJsonHelpers: true })) };
}

// ---------------------------------------------------------------- the run

// Prints intro, launches Chromium, runs each flow(browser) in turn until one fails, prints
// "browser: N passed, M failed" and exits. A failed step reports messageSelector's text (if
// given) and the JSON of pageState, a function evaluated in the page. maxSteps bounds the
// watchdog, the last resort if the browser itself hangs.
export async function runBrowserTest({ intro, flows, pageState, messageSelector = null, maxSteps }) {
  diagnostics = { messageSelector, pageState };
  const watchdog = setTimeout(() => {
    console.log('FAIL watchdog: the run hung');
    console.log(`browser: ${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  }, STEP_BUDGET_MS * maxSteps + 60_000);
  watchdog.unref();

  let browser;
  try {
    console.log(intro);
    browser = await withTimeout(
      chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true }),
      STEP_MS * 2,
      `launch ${CHROMIUM}`,
    );
    for (const flow of flows) await flow(browser);
    // One reported after the last step ended still fails the run.
    const violation = newCspViolation();
    if (violation) {
      failed++;
      console.log(`FAIL Content Security Policy violation after the last step: ${violation}`);
    }
  } catch (err) {
    if (!(err instanceof StepFailed)) {
      failed++;
      console.log(`FAIL setup: ${err.message.split('\n')[0]}`);
    }
  } finally {
    if (browser) await withTimeout(browser.close(), 10_000, 'browser.close').catch(() => {});
  }

  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

// ---------------------------------------------------------------- TOTP (RFC 6238), independent of the server

function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.replace(/[\s=]/g, '').toUpperCase();
  const bytes = [];
  let bits = 0;
  let value = 0;
  for (const char of clean) {
    const index = alphabet.indexOf(char);
    if (index < 0) throw new Error(`not base32: ${JSON.stringify(char)} in ${text}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

// The six-digit code of 30-second step `counter`: HMAC-SHA1 over the counter as 8 bytes
// big-endian, dynamic truncation (RFC 4226 §5.3), the last six decimal digits.
export function totpCode(secret, counter) {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', base32Decode(secret)).update(message).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, '0');
}
