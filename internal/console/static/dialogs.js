// Dialogs: native <dialog> elements opened modally, so the browser traps
// focus inside and Esc closes them. We add what the platform leaves to us:
// initial focus, returning focus to what opened the dialog, a busy state
// that keeps a dialog open while its request runs, and the clipboard.

const returnFocus = new WeakMap(); // dialog → element to focus when it closes
let fallbackFocus = () => {};
let describeError = (err) => String(err && err.message ? err.message : err);

/**
 * Wires every dialog once. fallback() gives the element to focus when the
 * element that opened a dialog is gone (a deleted card). errorText(err)
 * returns the message a dialog shows for a failed call, or null when the
 * error was handled elsewhere (e.g. the session ended) and the dialog should
 * just close.
 */
export function setupDialogs({ fallback, errorText }) {
  fallbackFocus = fallback;
  describeError = errorText;
  for (const d of document.querySelectorAll('dialog')) {
    d.addEventListener('click', (e) => {
      if (e.target.closest('[data-close]') && !d.dataset.busy) d.close('cancel');
    });
    // Esc: allowed, except while a request started from the dialog runs.
    d.addEventListener('cancel', (e) => {
      if (d.dataset.busy) e.preventDefault();
    });
    d.addEventListener('close', () => {
      // The close event is queued: a dialog closed and opened again at once
      // gets the event while open. That event is not about this opening.
      if (d.open) return;
      const target = returnFocus.get(d);
      returnFocus.delete(d);
      if (document.querySelector('dialog[open]')) return; // another dialog took over
      if (target && target.isConnected && !target.closest('[hidden]')) target.focus();
      else fallbackFocus()?.focus();
    });
  }
}

/** Opens dialog modally; focus goes to `focus` (or the first field). */
export function openDialog(dialog, { opener = document.activeElement, focus } = {}) {
  returnFocus.set(dialog, opener);
  dialog.showModal();
  const first = focus
    || dialog.querySelector('input:not([hidden]):not([type="hidden"]), select, textarea, button:not([data-close])');
  first?.focus();
}

/** Changes where focus goes when dialog closes (the opener was removed). */
export function setReturnFocus(dialog, el) {
  returnFocus.set(dialog, el);
}

/**
 * Marks a dialog busy while a request runs: its buttons are disabled, Esc
 * does not close it, and the submit button says what is happening.
 */
export function setBusy(dialog, busy, submit, busyLabel) {
  if (busy) {
    dialog.dataset.busy = '1';
    submit.dataset.label = submit.textContent;
    submit.textContent = busyLabel;
  } else {
    delete dialog.dataset.busy;
    if (submit.dataset.label !== undefined) submit.textContent = submit.dataset.label;
  }
  for (const b of dialog.querySelectorAll('button')) b.disabled = busy;
  dialog.setAttribute('aria-busy', String(busy));
}

export function showFormError(p, message) {
  p.textContent = message || '';
  p.hidden = !message;
}

/**
 * Asks for confirmation, then runs `run` with the dialog still open. A
 * failed call is shown in the dialog, which stays open for a retry or
 * Cancel. Resolves with what run returned, or undefined when cancelled.
 * `content`, an optional element, goes below the paragraphs (choices that
 * run reads, such as a grace period). `check`, optional, runs first: it
 * returns null when the choices are complete, else {message, focus}, shown
 * without calling run.
 */
export function confirmAction({ title, paragraphs, content, confirmLabel, busyLabel, opener, run, check, focus }) {
  const d = document.getElementById('confirm-dialog');
  const form = document.getElementById('confirm-form');
  const ok = document.getElementById('confirm-ok');
  const error = document.getElementById('confirm-error');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').replaceChildren(...paragraphs.filter(Boolean).map((text) => {
    const p = document.createElement('p');
    p.textContent = text;
    return p;
  }));
  document.getElementById('confirm-extra').replaceChildren(...(content ? [content] : []));
  ok.textContent = confirmLabel;
  showFormError(error, '');
  return new Promise((resolve) => {
    let result;
    const onSubmit = async (e) => {
      e.preventDefault();
      if (d.dataset.busy) return;
      const problem = check?.();
      if (problem) {
        showFormError(error, problem.message);
        (problem.focus || ok).focus();
        return;
      }
      showFormError(error, '');
      setBusy(d, true, ok, busyLabel || `${confirmLabel}…`);
      try {
        result = await run();
        setBusy(d, false, ok);
        d.close('done');
      } catch (err) {
        setBusy(d, false, ok);
        const message = describeError(err);
        if (message == null) {
          d.close('cancel');
          return;
        }
        showFormError(error, message);
        ok.focus();
      }
    };
    const onClose = () => {
      if (d.open) return; // the queued close of an earlier opening
      d.removeEventListener('close', onClose);
      form.removeEventListener('submit', onSubmit);
      resolve(result);
    };
    form.addEventListener('submit', onSubmit);
    d.addEventListener('close', onClose);
    // Focus starts on Cancel (Enter on a destructive dialog should not
    // destroy), unless the dialog asks for input first.
    openDialog(d, { opener, focus: focus || document.getElementById('confirm-cancel') });
  });
}

/**
 * Copies text to the clipboard; reports whether it worked. Uses the async
 * Clipboard API where the page is a secure context (https, localhost,
 * 127.0.0.1), else the older selection-based copy.
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to the selection-based copy
    }
  }
  const active = document.activeElement;
  const host = active?.closest('dialog[open]') || document.body;
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.className = 'offscreen-copy';
  host.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  active?.focus?.();
  return ok;
}

/**
 * Copies text that is still on its way (a promise, e.g. a secret being
 * revealed). The clipboard write starts at once, inside the click that asked
 * for it, with a ClipboardItem that waits for the text: browsers that allow
 * copying only during a user's gesture (Safari) accept it then. Resolves
 * with {ok, text}; rejects with textPromise's error if the text never comes.
 */
export async function copyLater(textPromise) {
  if (navigator.clipboard?.write && window.ClipboardItem && window.isSecureContext) {
    const blob = textPromise.then((t) => new Blob([t], { type: 'text/plain' }));
    blob.catch(() => {}); // its failure is textPromise's, reported below
    try {
      await navigator.clipboard.write([new ClipboardItem({ 'text/plain': blob })]);
      return { ok: true, text: await textPromise };
    } catch {
      // the text failed (awaited again below), or this browser refused: copy the older way
    }
  }
  const text = await textPromise;
  return { ok: await copyText(text), text };
}
