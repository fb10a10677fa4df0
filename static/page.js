// The shell every page shares, and the helpers its scripts use besides the API (/webauthn.js):
// element lookup, the status line, required inputs, and running one action at a time.
// Plain ES module, no build step. Every page script imports it, so the shell below is in place
// (module dependencies run first) before the page's own script looks for anything.

export const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the shell

// Built from <main>'s data attributes, so no page repeats (or drifts from) the markup:
//   data-tagline  the line under the title
//   data-title    the title, "passgate" unless given (the admin console is "passgate admin")
//   data-back     the text of the link back to /, if the page has one
//   data-status   the status line's id, "message" unless given (the pay page keeps its
//                 "pay-message", which its browser test reads)
function element(tag, props, ...children) {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
}

function buildShell() {
  const main = document.querySelector('main');
  const { tagline = '', title = 'passgate', back, status = 'message' } = main.dataset;
  const top = [element('header', { className: 'masthead' },
    element('h1', { textContent: title }),
    element('p', { className: 'tagline', textContent: tagline }))];
  if (back) top.push(element('p', { className: 'back' }, element('a', { href: '/', textContent: `← ${back}` })));
  main.prepend(...top);
  const line = element('p', { id: status, className: '' });
  line.setAttribute('role', 'status');
  line.setAttribute('aria-live', 'polite');
  line.dataset.statusLine = '';
  main.append(line);
  return line;
}

const statusLine = buildShell();

// ---------------------------------------------------------------- helpers

// Writes the status line; kind is its CSS class: info, ok or error.
export function say(text, kind = 'info') {
  statusLine.textContent = text;
  statusLine.className = text ? kind : '';
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
// by describe. The runner resolves to whether the action ran (false when it was ignored).
export function oneAtATime(describe, setBusy = disableButtons) {
  let busy = false;
  const busyNow = (on) => {
    busy = on;
    document.body.setAttribute('aria-busy', String(on));
    setBusy(on);
  };
  const run = async (action) => {
    if (busy) return false;
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
    return true;
  };
  run.setBusy = busyNow;
  return run;
}
