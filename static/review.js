// passgate review page: a held sign-in or payment, seen and appealed by its owner with the
// review's token (GET /v1/reviews/{id}, POST /v1/reviews/{id}/appeal, header
// `Authorization: Review <token>`). The id and token come in the fragment
// (#id=...&token=...), which never reaches a server; they are kept in sessionStorage for reloads
// and taken out of the address bar, so the token is not left in the history or a screenshot.
// Plain ES module, no dependencies, no build step. Every server-provided text goes into the page
// as textContent, never as markup.

import { ApiError, readJson } from '/webauthn.js';
import { $, describeError as describeCommonError, markInvalid, oneAtATime, say, t } from '/page.js';

const STORE_KEY = 'passgate.review';
const MESSAGE_MAX = 1000;

const describeError = (err) => describeCommonError(err, ['Error', 'TypeError']);
const run = oneAtATime(describeError);

// An RFC 3339 time as "YYYY-MM-DD HH:MM" (UTC), or — when absent.
function when(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

// ---------------------------------------------------------------- the review's id and token

function ticket() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const id = fragment.get('id');
  const token = fragment.get('token');
  if (id && token) {
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify({ id, token })); } catch { /* storage off */ }
    window.history.replaceState(null, '', window.location.pathname);
    return { id, token };
  }
  try {
    const kept = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    if (kept?.id && kept?.token) return kept;
  } catch { /* storage off or corrupt */ }
  return null;
}

const held = ticket();

async function reviewApi(path, body) {
  const headers = { Accept: 'application/json, application/problem+json', Authorization: `Review ${held.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/v1/reviews/${encodeURIComponent(held.id)}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await readJson(res);
  if (!res.ok) throw ApiError.fromResponse(res, data);
  return data;
}

// ---------------------------------------------------------------- views

// Mirrored on <body data-view="loading|review|missing" data-status="held|approved|denied|used|expired">
// so tests (and styles) can follow it.
function showMissing() {
  document.body.dataset.view = 'missing';
  $('review-card').hidden = true;
  $('review-missing').hidden = false;
  $('review-missing-title').focus();
}

function render(review) {
  const state = review.expired ? 'expired' : review.status;
  document.body.dataset.view = 'review';
  document.body.dataset.status = state;
  const what = t(review.kind === 'payment' ? 'review.kind_payment' : 'review.kind_signin');
  $('review-title').textContent = t(`review.status_${state}`);
  $('review-explain').textContent = t(`review.explain_${state}`, { what });
  $('review-kind').textContent = what;
  $('review-created').textContent = when(review.created_at);
  $('review-until-label').textContent = t(review.status === 'approved' ? 'review.try_until' : 'review.open_until');
  $('review-until').textContent = when(review.expires_at);
  $('review-id').textContent = review.review_id;
  $('review-reasons').replaceChildren(...(review.reasons || []).map((reason) => {
    const item = document.createElement('li');
    item.textContent = reason.words;
    item.dataset.rule = reason.rule;
    return item;
  }));
  $('review-decision').hidden = !review.decision_reason;
  $('review-decision-reason').textContent = review.decision_reason || '';
  $('review-appealed').hidden = !review.appeal;
  $('review-appeal-text').textContent = review.appeal || '';
  $('review-appealed-at').textContent = review.appealed_at ? t('review.appealed_at', { when: when(review.appealed_at) }) : '';
  $('appeal-form').hidden = !(state === 'held' && !review.appeal);
  $('review-retry').hidden = state !== 'approved';
  $('review-card').hidden = false;
  $('review-missing').hidden = true;
}

function countCharacters() {
  const used = [...$('appeal-message').value].length;
  $('appeal-count').textContent = t('review.appeal_count', { n: used, max: MESSAGE_MAX });
}

// ---------------------------------------------------------------- actions

async function load() {
  try {
    render(await reviewApi(''));
    $('review-title').focus();
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showMissing();
      return;
    }
    throw err;
  }
}

async function sendAppeal() {
  const input = $('appeal-message');
  const message = input.value.trim();
  if (!message) {
    markInvalid(input);
    input.focus();
    throw new Error(t('review.need_message'));
  }
  render(await reviewApi('/appeal', { message }));
  input.value = '';
  say(t('review.appeal_sent'), 'ok');
  $('review-appealed').hidden = false;
}

function init() {
  run.setBusy(false);
  $('appeal-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run(sendAppeal);
  });
  $('appeal-message').addEventListener('input', countCharacters);
  countCharacters();
  if (!held) {
    showMissing();
    return;
  }
  run(load);
}

init();
