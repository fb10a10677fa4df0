// Browser test of the review queue (issue 20 item 3): a false positive walked from hold to
// approval. A user registers on / with a passkey and signs out; an admin registers, is made admin
// with the passgate CLI and opens /admin.html, whose queue is empty. The user signs in again; the
// server's risk rules (a rules file that holds every passkey sign-in, given by
// tests/api/browser.rs) hold it with 403 held_for_review, and / sends the user to /review.html,
// which shows that it is held and why, without the token left in the address bar. The user
// appeals; the admin sees the held sign-in with its reasons and the appeal in the console,
// cannot approve without a reason, approves with one; the review page then says approved, and
// the user's next sign-in goes through (the approval is spent: the one after is held again).
// Registration is no sign-in the rules judge, so the admin works from the session of their
// registration (the console trades it for one with the admin role).
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT PASSGATE_BIN=../../target/debug/passgate \
//     DATABASE_URL=sqlite:/path/to/passgate.db HOLD_WORDS="..." node review.mjs
// Env: BASE_URL, PASSGATE_BIN, DATABASE_URL (as admin.mjs), HOLD_WORDS (the words of the rule
// that holds) all required; SCREENSHOT_DIR: if set, screenshots of /review.html and the queue go
// there; CHROMIUM, STEP_TIMEOUT_MS as harness.mjs.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { BASE_URL, STEP_MS, check, openContext, runBrowserTest, step, testUsername, waitFor, waitForError } from './harness.mjs';

const USER = testUsername('held');
const ADMIN = testUsername('reviewer');
const APPEAL = 'That was me, on a new laptop at a hotel in Lisbon.';
const REASON = 'Confirmed with the user by phone.';

for (const name of ['PASSGATE_BIN', 'DATABASE_URL', 'HOLD_WORDS']) {
  if (!process.env[name]) {
    console.error(`${name} is required (see the head of review.mjs)`);
    process.exit(2);
  }
}

// ---------------------------------------------------------------- page helpers

const idle = (page) => page.waitForFunction(() => document.body.getAttribute('aria-busy') === 'false');

// Runs fn with the authenticator answering, once the page on / is idle and its autofill request
// (if any) has reached the browser: switched on earlier, the authenticator would answer that
// request instead of the one the step starts.
async function withPresence(page, presence, fn) {
  await page.bringToFront();
  await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && document.body.dataset.autofill !== 'starting');
  await page.waitForTimeout(250);
  await presence(true);
  try {
    return await fn();
  } finally {
    await presence(false);
  }
}

async function waitSignedIn(page, username) {
  const shown = await waitFor(page, () => !document.getElementById('signed-in').hidden
    && document.getElementById('me-username').textContent);
  check(shown === username, `#me-username is "${shown}", expected "${username}"`);
}

async function register(page, presence, username) {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#username').waitFor({ state: 'visible' });
  await page.fill('#username', username);
  await withPresence(page, presence, async () => {
    await page.click('#register');
    await waitSignedIn(page, username);
  });
}

async function signOut(page) {
  await page.click('#logout');
  await page.locator('#signed-in').waitFor({ state: 'hidden' });
  await page.locator('#username').waitFor({ state: 'visible' });
}

// A username-first sign-in on /; resolves once the click was made.
async function startSignIn(page, presence, username, then) {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#username').waitFor({ state: 'visible' });
  await page.fill('#username', username);
  return withPresence(page, presence, async () => {
    await page.click('#login');
    return then();
  });
}

// The review page once it shows a review: its status and what it lists.
async function reviewShown(page, status) {
  return waitFor(page, (want) => document.body.dataset.view === 'review'
    && document.body.dataset.status === want
    && document.body.getAttribute('aria-busy') === 'false' && {
    title: document.getElementById('review-title').textContent,
    reasons: [...document.querySelectorAll('#review-reasons li')].map((li) => li.textContent),
    appeal: document.getElementById('review-appeal-text').textContent,
    decision: document.getElementById('review-decision-reason').textContent,
    formShown: !document.getElementById('appeal-form').hidden,
    retryShown: !document.getElementById('review-retry').hidden,
    hash: location.hash,
  }, status);
}

async function screenshot(page, name) {
  if (process.env.SCREENSHOT_DIR) await page.screenshot({ path: join(process.env.SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

// ---------------------------------------------------------------- the scenario

let user = null;
let admin = null;
const shared = { reviewId: null };

async function setUp(browser) {
  user = await openContext(browser);
  admin = await openContext(browser);

  await step(`register "${USER}" with a passkey on /, then sign out`, async () => {
    await register(user.page, user.presence, USER);
    await signOut(user.page);
  });

  await step(`register "${ADMIN}", grant it admin with the CLI, open /admin.html: an empty queue`, async () => {
    await register(admin.page, admin.presence, ADMIN);
    const stdout = execFileSync(process.env.PASSGATE_BIN, ['admin', 'grant', ADMIN], {
      env: { ...process.env, PASSGATE__DATABASE__URL: process.env.DATABASE_URL },
      encoding: 'utf8',
      timeout: STEP_MS,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    check(stdout.includes(`${ADMIN}: roles [admin]`), `the CLI printed: ${stdout}`);
    await admin.page.goto(`${BASE_URL}/admin.html`);
    await waitFor(admin.page, () => document.body.dataset.view === 'console'
      && document.body.getAttribute('aria-busy') === 'false');
    check(await admin.page.locator('#reviews-empty').isVisible(), 'the queue is not empty');
  });
}

async function holdAndAppeal() {
  const { page, presence } = user;

  await step('the sign-in is held: / sends the user to /review.html, which says why', async () => {
    const shown = await startSignIn(page, presence, USER, async () => {
      await page.waitForURL(/\/review\.html/, { timeout: STEP_MS });
      return reviewShown(page, 'held');
    });
    check(shown.title === 'Held for review', `title: ${shown.title}`);
    check(shown.reasons.includes(process.env.HOLD_WORDS), `reasons: ${JSON.stringify(shown.reasons)}`);
    check(shown.formShown, 'no appeal form');
    check(shown.hash === '', `the token is left in the address bar: ${shown.hash}`);
    check(!(await page.evaluate(() => sessionStorage.getItem('passgate.tokens'))), 'a held sign-in left tokens');
    shared.reviewId = (await page.textContent('#review-id')).trim();
    check(/^[0-9a-f-]{36}$/.test(shared.reviewId), `#review-id is "${shared.reviewId}"`);
    await screenshot(page, 'review-held');
  });

  await step('an empty appeal is refused on the page; the appeal is sent and shown', async () => {
    await page.click('#appeal-submit');
    check(await waitForError(page), 'no error for an empty appeal');
    check(await page.getAttribute('#appeal-message', 'aria-invalid') === 'true', 'the field is not marked');
    await page.fill('#appeal-message', APPEAL);
    await page.click('#appeal-submit');
    const shown = await waitFor(page, () => !document.getElementById('review-appealed').hidden
      && document.getElementById('appeal-form').hidden
      && document.getElementById('review-appeal-text').textContent);
    check(shown === APPEAL, `appeal shown: ${shown}`);
    await screenshot(page, 'review-appealed');
  });
}

async function approve() {
  const { page } = admin;
  const item = `#review-list li[data-review-id="${shared.reviewId}"]`;

  await step('the admin console lists the held sign-in with its reasons and the appeal', async () => {
    await page.bringToFront();
    await page.click('#reviews-refresh');
    await idle(page);
    await page.locator(item).waitFor({ state: 'visible' });
    const text = await page.textContent(item);
    check(text.includes(USER), `the item does not name ${USER}: ${text}`);
    check(text.includes(process.env.HOLD_WORDS), `the item lacks the reason: ${text}`);
    check(text.includes(APPEAL), `the item lacks the appeal: ${text}`);
    await screenshot(page, 'admin-review-queue');
  });

  await step('approving needs a reason; with one, the review leaves the waiting queue', async () => {
    await page.click(`${item} button[data-verdict="approve"]`);
    check(/reason/i.test(await waitForError(page)), 'no error for a missing reason');
    await page.fill(`${item} input.review-reason`, REASON);
    await page.click(`${item} button[data-verdict="approve"]`);
    await waitFor(page, (selector) => document.body.getAttribute('aria-busy') === 'false'
      && !document.querySelector(selector)
      && document.getElementById('message').classList.contains('ok'), item);
    // This review left the waiting queue (waited for above). Another held
    // attempt may be waiting beside it (CI once showed one, cause not yet
    // known): say so, but judge only this one.
    if (!(await page.locator('#reviews-empty').isVisible())) {
      console.log(`note: the waiting queue still holds: ${(await page.textContent('#review-list')).slice(0, 300)}`);
    }
    await page.selectOption('#reviews-status', 'approved');
    await idle(page);
    await page.locator(item).waitFor({ state: 'visible' });
    check((await page.textContent(item)).includes(REASON), 'the approved review lacks the reason');
  });
}

async function signInAgain() {
  const { page, presence } = user;

  await step('the review page says approved, with the reason', async () => {
    await page.bringToFront();
    await page.reload();
    const shown = await reviewShown(page, 'approved');
    check(shown.decision === REASON, `decision: ${shown.decision}`);
    check(shown.retryShown && !shown.formShown, 'retry link or appeal form wrong');
    await screenshot(page, 'review-approved');
  });

  await step('the next sign-in goes through', async () => {
    await startSignIn(page, presence, USER, () => waitSignedIn(page, USER));
    await signOut(page);
  });

  await step('the approval is spent: the sign-in after is held again', async () => {
    await startSignIn(page, presence, USER, async () => {
      await page.waitForURL(/\/review\.html/, { timeout: STEP_MS });
      await reviewShown(page, 'held');
    });
    const id = (await page.textContent('#review-id')).trim();
    check(id !== shared.reviewId, 'the same review was shown');
  });
}

// ---------------------------------------------------------------- main

await runBrowserTest({
  intro: `browser test of the review queue against ${BASE_URL}: "${USER}" held, "${ADMIN}" reviews`,
  flows: [setUp, holdAndAppeal, approve, signInAgain],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    view: document.body.dataset.view,
    status: document.body.dataset.status,
    busy: document.body.getAttribute('aria-busy'),
  }),
  maxSteps: 12,
});
