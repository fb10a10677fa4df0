// What the newer pages share besides the API (/webauthn.js): element lookup, the status line,
// required inputs, and running one action at a time. Plain ES module, no build step.

export const $ = (id) => document.getElementById(id);

// The status line (#message); kind is its CSS class: info, ok or error.
export function say(text, kind = 'info') {
  const el = $('message');
  el.textContent = text;
  el.className = text ? kind : '';
}

// An input's trimmed value, or (empty) focus on it and an error saying what is missing.
export function required(id, what) {
  const value = $(id).value.trim();
  if (!value) {
    $(id).focus();
    throw new Error(`Enter ${what} first.`);
  }
  return value;
}

export const duration = (secs) => (secs >= 120 ? `${Math.round(secs / 60)} minutes` : `${secs} seconds`);

// Disables every button of the page's main while an action runs.
export function disableButtons(on) {
  for (const button of document.querySelectorAll('main button')) button.disabled = on;
}

// A runner of one action at a time: a click while one runs is ignored; meanwhile the page is
// aria-busy and setBusy(true) disables its controls; a failure goes to the status line, worded
// by describe.
export function oneAtATime(describe, setBusy = disableButtons) {
  let busy = false;
  const busyNow = (on) => {
    busy = on;
    document.body.setAttribute('aria-busy', String(on));
    setBusy(on);
  };
  const run = async (action) => {
    if (busy) return;
    busyNow(true);
    // The last outcome's message would be stale once this one starts.
    say('');
    try {
      await action();
    } catch (err) {
      say(describe(err), 'error');
    } finally {
      busyNow(false);
    }
  };
  run.setBusy = busyNow;
  return run;
}
