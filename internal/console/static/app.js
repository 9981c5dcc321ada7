// The Keyward console: sign in with an admin key, then manage API keys as
// cards. Everything goes through the public REST API (api.js). Secrets shown
// by Generate and Regenerate are kept in memory only, for the Copy button,
// and are gone when the page is closed or reloaded.

import { Api, ApiError } from './api.js';
import {
  formatDateTime, formatRelative, looksLikeSecret, parseScopes, parseTime, plural, toLocalInput,
} from './format.js';
import {
  confirmAction, copyText, openDialog, setBusy, setReturnFocus, setupDialogs, showFormError,
} from './dialogs.js';

const STORAGE_KEY = 'keyward.adminKey'; // sessionStorage: this tab only
const PAGE_SIZE = 100;
const SEARCH_DELAY_MS = 250;
const ADMIN_SCOPE = 'keyward:admin';
const DAY_MS = 24 * 3600 * 1000;

const $ = (id) => document.getElementById(id);
const ui = {
  signOut: $('sign-out'),
  signinView: $('signin-view'),
  signinForm: $('signin-form'),
  signinKey: $('signin-key'),
  signinError: $('signin-error'),
  signinSubmit: $('signin-submit'),
  keysView: $('keys-view'),
  generate: $('generate'),
  searchForm: $('search-form'),
  search: $('search'),
  errorBanner: $('error-banner'),
  errorText: $('error-text'),
  errorDismiss: $('error-dismiss'),
  status: $('list-status'),
  list: $('key-list'),
  empty: $('empty'),
  emptyTitle: $('empty-title'),
  emptyText: $('empty-text'),
  emptyGenerate: $('empty-generate'),
  more: $('more'),
  loadMore: $('load-more'),
  toast: $('toast'),
  cardTemplate: $('card-template'),
  metaRowTemplate: $('meta-row-template'),
  // generate / edit
  keyDialog: $('key-dialog'),
  keyForm: $('key-form'),
  keyDialogTitle: $('key-dialog-title'),
  fName: $('f-name'),
  fDescription: $('f-description'),
  fEnvironment: $('f-environment'),
  fEnvironmentOther: $('f-environment-other'),
  fExpiry: $('f-expiry'),
  fExpireAt: $('f-expire-at'),
  fScopes: $('f-scopes'),
  fMetadata: $('f-metadata'),
  fMetadataAdd: $('f-metadata-add'),
  keyFormError: $('key-form-error'),
  keyFormSubmit: $('key-form-submit'),
  // secret
  secretDialog: $('secret-dialog'),
  secretTitle: $('secret-title'),
  secretName: $('secret-name'),
  secretValue: $('secret-value'),
  secretCopy: $('secret-copy'),
  secretCopied: $('secret-copied'),
};

const state = {
  api: null, // Api while signed in
  selfKeyId: '', // the admin key this tab signed in with, when it is a Keyward key
  query: '',
  pageToken: '',
  hasMore: false,
  loading: false,
  loadFailed: false,
  generation: 0, // bumped by every new listing; stale answers are dropped
  abort: null,
  cards: new Map(), // keyId → {key, li}
  secrets: new Map(), // keyId → secret shown in this page; memory only
  form: null, // {mode: 'create'|'edit', key, requestId, opener}
};

// ---------- errors and messages ----------

/** Ends the session when Keyward no longer accepts the admin key; true if it did. */
function handledGlobally(err) {
  if (err && err.name === 'AbortError') return true;
  if (err instanceof ApiError && err.unauthenticated && state.api) {
    signOut('Keyward no longer accepts the admin key this tab signed in with (it may have been switched off, '
      + 'regenerated or deleted). Sign in again.', true);
    return true;
  }
  return false;
}

function messageOf(err) {
  if (err instanceof ApiError) {
    if (err.forbidden) return 'this admin key may not do that: it needs the keyward:admin scope.';
    if (err.notFound) return `the key no longer exists; it may have been deleted elsewhere (${err.message}).`;
    return err.message;
  }
  return String(err && err.message ? err.message : err);
}

const capitalized = (s) => s.charAt(0).toUpperCase() + s.slice(1);

/** Text a dialog shows for a failed call, or null if the session ended. */
function dialogErrorText(err) {
  if (handledGlobally(err)) return null;
  return capitalized(messageOf(err));
}

function showError(err, what) {
  if (handledGlobally(err)) return;
  ui.errorText.textContent = `${what}: ${messageOf(err)}`;
  ui.errorBanner.hidden = false;
}

function hideError() {
  ui.errorBanner.hidden = true;
  ui.errorText.textContent = '';
}

let toastTimer = 0;
function toast(message) {
  ui.toast.textContent = message;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, Math.max(5000, message.length * 70));
}

const nameOf = (key) => key.displayName || key.keyId;

// ---------- sign in / out ----------

function showSignin(message = '', isError = true) {
  ui.keysView.hidden = true;
  ui.signOut.hidden = true;
  ui.signinView.hidden = false;
  showFormError(ui.signinError, message);
  ui.signinError.classList.toggle('info', !isError);
  ui.signinKey.focus();
}

async function signIn(adminKey, { restoring = false } = {}) {
  const api = new Api(adminKey);
  ui.signinSubmit.disabled = true;
  ui.signinSubmit.textContent = 'Signing in…';
  try {
    await api.search('', 1);
  } catch (err) {
    // Forget a key Keyward refuses; keep it over a network error, so a
    // reload retries.
    if (restoring && err instanceof ApiError && (err.unauthenticated || err.forbidden)) {
      sessionStorage.removeItem(STORAGE_KEY);
    }
    showSignin(signinErrorText(err, restoring));
    return;
  } finally {
    ui.signinSubmit.disabled = false;
    ui.signinSubmit.textContent = 'Sign in';
  }
  sessionStorage.setItem(STORAGE_KEY, adminKey);
  state.api = api;
  ui.signinKey.value = '';
  showFormError(ui.signinError, '');
  ui.signinView.hidden = true;
  ui.keysView.hidden = false;
  ui.signOut.hidden = false;
  await identifySelf(api);
  reload();
  ui.search.focus();
}

function signinErrorText(err, restoring) {
  if (err instanceof ApiError && err.unauthenticated) {
    return restoring
      ? 'Keyward no longer accepts the admin key this tab signed in with. Sign in again.'
      : 'Keyward did not accept this admin key. Check that you pasted all of it and that the key is active.';
  }
  if (err instanceof ApiError && err.forbidden) {
    return 'Keyward knows this key, but it is not an admin key: it needs the keyward:admin scope.';
  }
  return messageOf(err);
}

/** Finds the card of the admin key itself, to warn before it is switched off. */
async function identifySelf(api) {
  state.selfKeyId = '';
  if (!looksLikeSecret(api.adminKey)) return; // an operator-chosen KEYWARD_ADMIN_KEY
  try {
    const res = await api.search(api.adminKey, 1);
    state.selfKeyId = res.keys?.[0]?.keyId ?? '';
  } catch {
    // Only a badge depends on it.
  }
}

function signOut(message, isError = false) {
  sessionStorage.removeItem(STORAGE_KEY);
  state.api = null;
  state.selfKeyId = '';
  state.generation++;
  state.abort?.abort();
  state.abort = null;
  state.loading = false;
  state.query = '';
  state.secrets.clear();
  clearCards();
  for (const d of document.querySelectorAll('dialog[open]')) {
    delete d.dataset.busy;
    d.close('cancel');
  }
  ui.search.value = '';
  hideError();
  ui.toast.hidden = true;
  showSignin(message, isError);
}

// ---------- the list ----------

function clearCards() {
  state.cards.clear();
  ui.list.replaceChildren();
}

function reload() {
  state.generation++;
  state.abort?.abort();
  state.abort = null;
  state.pageToken = '';
  state.hasMore = false;
  state.loading = false;
  clearCards();
  loadPage();
}

async function loadPage() {
  if (!state.api || state.loading) return;
  const gen = state.generation;
  const ctrl = new AbortController();
  state.abort = ctrl;
  state.loading = true;
  state.loadFailed = false;
  renderListState();
  try {
    const res = await state.api.search(state.query, PAGE_SIZE, state.pageToken, { signal: ctrl.signal });
    if (gen !== state.generation) return;
    for (const key of res.keys ?? []) {
      if (!state.cards.has(key.keyId)) addCard(key, 'end');
    }
    state.pageToken = res.nextPageToken ?? '';
    state.hasMore = Boolean(state.pageToken);
  } catch (err) {
    if (gen !== state.generation) return;
    state.loadFailed = true;
    showError(err, state.query ? 'Could not search keys' : 'Could not load keys');
  } finally {
    if (gen === state.generation) {
      state.loading = false;
      state.abort = null;
      renderListState();
      rearmScroll();
    }
  }
}

function renderListState() {
  const n = state.cards.size;
  let status = '';
  if (state.loading) {
    status = n ? `${plural(n, 'key', 'keys')} shown · loading more…` : (state.query ? 'Searching…' : 'Loading keys…');
  } else if (n) {
    const what = state.query ? plural(n, 'matching key', 'matching keys') : plural(n, 'key', 'keys');
    status = state.hasMore ? `Showing the first ${what} · more load as you scroll` : `Showing ${state.query ? '' : 'all '}${what}`;
  }
  ui.status.textContent = status;
  ui.list.setAttribute('aria-busy', String(state.loading));
  ui.list.dataset.query = state.query; // what the cards shown answer

  const empty = !state.loading && !state.loadFailed && n === 0 && Boolean(state.api);
  ui.empty.hidden = !empty;
  if (empty) {
    ui.emptyGenerate.hidden = Boolean(state.query);
    if (!state.query) {
      ui.emptyTitle.textContent = 'No API keys yet';
      ui.emptyText.textContent = 'Generate a key for each application that calls your services.';
    } else if (looksLikeSecret(state.query)) {
      ui.emptyTitle.textContent = 'No key matches the pasted key';
      ui.emptyText.textContent = 'It may have been regenerated or deleted, or it belongs to another Keyward.';
    } else {
      ui.emptyTitle.textContent = `No keys match “${state.query}”`;
      ui.emptyText.textContent = 'Search looks at key names, at the start of a key (kw_live_…) and at whole pasted keys. '
        + 'Clear the search to see every key.';
    }
  }
  ui.more.hidden = !state.hasMore;
  ui.loadMore.disabled = state.loading;
}

// Infinite scroll: load the next page as the end of the list comes near.
// The "Load more keys" button does the same from the keyboard.
const scrollObserver = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.hasMore && !state.loading) loadPage();
  }, { rootMargin: '800px 0px' })
  : null;
scrollObserver?.observe(ui.more);

/** Re-observing reports the current intersection again, so a screen that is
 * still not full after a page keeps loading. */
function rearmScroll() {
  if (!scrollObserver || !state.hasMore) return;
  scrollObserver.unobserve(ui.more);
  scrollObserver.observe(ui.more);
}

// ---------- cards ----------

function addCard(key, where) {
  const li = ui.cardTemplate.content.firstElementChild.cloneNode(true);
  li.dataset.keyId = key.keyId;
  const nameId = `name-${key.keyId}`;
  li.querySelector('.card-name').id = nameId;
  li.querySelector('article').setAttribute('aria-labelledby', nameId);
  for (const b of li.querySelectorAll('button')) b.setAttribute('aria-describedby', nameId);
  state.cards.set(key.keyId, { key, li });
  fillCard(li, key);
  if (where === 'start') ui.list.prepend(li);
  else ui.list.append(li);
  return li;
}

function updateCard(key) {
  const entry = state.cards.get(key.keyId);
  if (!entry) return;
  entry.key = key;
  fillCard(entry.li, key);
}

/** Removes a card; returns the element that should get focus instead. */
function removeCard(keyId) {
  const entry = state.cards.get(keyId);
  if (!entry) return ui.search;
  const next = entry.li.nextElementSibling || entry.li.previousElementSibling;
  entry.li.remove();
  state.cards.delete(keyId);
  state.secrets.delete(keyId);
  renderListState();
  return next?.querySelector('[data-action="copy"]') || ui.generate;
}

function timeElement(d, text) {
  const t = document.createElement('time');
  t.dateTime = d.toISOString();
  t.textContent = text;
  t.title = formatDateTime(d);
  return t;
}

function badge(text, cls) {
  const span = document.createElement('span');
  span.className = `badge ${cls}`;
  span.textContent = text;
  return span;
}

function fillCard(li, key) {
  const q = (sel) => li.querySelector(sel);
  const active = key.state === 'STATE_ACTIVE';
  const scopes = key.scopes ?? [];
  li.classList.toggle('disabled', !active);
  q('.card-name').textContent = nameOf(key);

  const badges = [badge(key.environment || 'live', `env env-${key.environment}`)];
  if (scopes.includes(ADMIN_SCOPE)) badges.push(badge('admin', 'admin'));
  if (key.keyId === state.selfKeyId) badges.push(badge('you', 'you'));
  q('.badges').replaceChildren(...badges);
  q('.badges').title = `Environment: ${key.environment}`;

  const desc = q('.card-description');
  desc.textContent = key.description || '';
  desc.hidden = !key.description;
  q('.card-masked').textContent = key.maskedKey || '';
  q('.card-masked').title = 'Masked key: Keyward shows only its start and its last four characters';
  q('.card-secret-note').hidden = !state.secrets.has(key.keyId);
  q('.card-key-id').textContent = key.keyId;

  const sw = q('.switch');
  sw.setAttribute('aria-checked', String(active));
  sw.setAttribute('aria-label', 'Active');
  sw.title = active ? 'Active: switch off to block this key at once' : 'Inactive: switch on to let this key validate again';
  const expired = Boolean(parseTime(key.expireTime)) && parseTime(key.expireTime).getTime() <= Date.now();
  q('.state-label').textContent = !active ? 'Inactive · refused' : expired ? 'Active · expired, refused' : 'Active';

  const scopeItems = scopes.map((s) => {
    const item = document.createElement('li');
    item.textContent = s;
    return item;
  });
  if (!scopeItems.length) {
    const none = document.createElement('li');
    none.className = 'none';
    none.textContent = 'none';
    scopeItems.push(none);
  }
  q('.scopes').replaceChildren(...scopeItems);

  const created = parseTime(key.createTime);
  q('.created').replaceChildren(created ? timeElement(created, formatDateTime(created)) : '—');
  const used = parseTime(key.lastUsedTime);
  q('.last-used').replaceChildren(used ? timeElement(used, formatRelative(used)) : 'Never');
  const expires = parseTime(key.expireTime);
  const exp = q('.expires');
  exp.classList.remove('expired', 'soon');
  if (!expires) {
    exp.replaceChildren('Never');
  } else if (expires.getTime() <= Date.now()) {
    exp.classList.add('expired');
    exp.replaceChildren('Expired ', timeElement(expires, formatDateTime(expires)));
  } else {
    if (expires.getTime() - Date.now() < 7 * DAY_MS) exp.classList.add('soon');
    exp.replaceChildren(timeElement(expires, formatDateTime(expires)));
  }
}

ui.list.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action]');
  const li = button?.closest('li.card');
  const entry = li && state.cards.get(li.dataset.keyId);
  if (!entry || !state.api) return;
  const actions = { toggle, copy, edit: openEdit, regenerate, delete: remove };
  actions[button.dataset.action]?.(entry, button);
});

/** After a call on a key that no longer exists, drops its card. */
function dropIfGone(err, keyId) {
  if (err instanceof ApiError && err.notFound) removeCard(keyId);
}

async function toggle(entry, button) {
  const { key } = entry;
  const name = nameOf(key);
  if (key.state === 'STATE_ACTIVE') {
    const self = key.keyId === state.selfKeyId;
    await confirmAction({
      title: `Switch off “${name}”?`,
      paragraphs: [
        'Switching a key off blocks access immediately: from the moment you confirm, every application '
          + 'using this key is refused, on every Keyward instance.',
        'You can switch it back on at any time; the key itself does not change.',
        self && 'This is the admin key you are signed in with: you will be signed out.',
      ],
      confirmLabel: 'Switch off',
      busyLabel: 'Switching off…',
      opener: button,
      run: async () => {
        try {
          updateCard(await state.api.disable(key.keyId));
        } catch (err) {
          dropIfGone(err, key.keyId);
          throw err;
        }
        if (self) signOut('You switched off the admin key this tab signed in with, so you were signed out.');
        else toast(`“${name}” is off: Keyward now refuses it.`);
      },
    });
    return;
  }
  button.disabled = true;
  try {
    updateCard(await state.api.enable(key.keyId));
    toast(`“${name}” is active again.`);
  } catch (err) {
    showError(err, `Could not switch on “${name}”`);
    dropIfGone(err, key.keyId);
  } finally {
    button.disabled = false;
  }
}

async function copy(entry) {
  const { key } = entry;
  const secret = state.secrets.get(key.keyId);
  if (secret) {
    const ok = await copyText(secret);
    toast(ok ? `Copied the key of “${nameOf(key)}”.` : 'Could not copy. Your browser did not allow access to the clipboard.');
    return;
  }
  const ok = await copyText(key.keyId);
  toast(ok
    ? `Copied the key ID ${key.keyId}. The key itself cannot be copied: Keyward keeps only a hash of it and `
      + 'showed it once, when it was generated. If it is lost, use Regenerate to get a new one.'
    : 'Could not copy. Your browser did not allow access to the clipboard.');
}

async function regenerate(entry, button) {
  const { key } = entry;
  const name = nameOf(key);
  const self = key.keyId === state.selfKeyId;
  const res = await confirmAction({
    title: `Regenerate “${name}”?`,
    paragraphs: [
      'A new key replaces the current one, which stops working immediately. Every application using the '
        + 'old key must be updated with the new one.',
      'The new key is shown once, right after this.',
      self && 'This is the admin key you are signed in with: this tab will switch to the new key.',
    ],
    confirmLabel: 'Regenerate',
    busyLabel: 'Regenerating…',
    opener: button,
    run: async () => {
      let out;
      try {
        out = await state.api.regenerate(key.keyId);
      } catch (err) {
        dropIfGone(err, key.keyId);
        throw err;
      }
      state.secrets.set(key.keyId, out.secret);
      if (self) {
        state.api.adminKey = out.secret;
        sessionStorage.setItem(STORAGE_KEY, out.secret);
      }
      updateCard(out.key);
      entry.li.classList.add('fresh');
      return out;
    },
  });
  if (res) showSecret(res.key, res.secret, button, 'regenerated');
}

async function remove(entry, button) {
  const { key } = entry;
  const name = nameOf(key);
  const self = key.keyId === state.selfKeyId;
  const dialog = $('confirm-dialog');
  await confirmAction({
    title: `Delete “${name}”?`,
    paragraphs: [
      'Every application using this key is refused immediately, and the key cannot be restored.',
      'To stop the key for a while instead, switch it off.',
      self && 'This is the admin key you are signed in with: you will be signed out.',
    ],
    confirmLabel: 'Delete key',
    busyLabel: 'Deleting…',
    opener: button,
    run: async () => {
      try {
        await state.api.remove(key.keyId);
      } catch (err) {
        if (!(err instanceof ApiError && err.notFound)) throw err;
        // Already gone: the outcome the user asked for.
      }
      setReturnFocus(dialog, removeCard(key.keyId));
      if (self) signOut('You deleted the admin key this tab signed in with, so you were signed out.');
      else toast(`Deleted “${name}”. Keyward now refuses its key.`);
    },
  });
}

// ---------- generate / edit ----------

function addMetaRow(name = '', value = '') {
  const row = ui.metaRowTemplate.content.firstElementChild.cloneNode(true);
  row.querySelector('.meta-key').value = name;
  row.querySelector('.meta-value').value = value;
  ui.fMetadata.append(row);
  return row;
}

ui.fMetadataAdd.addEventListener('click', () => addMetaRow().querySelector('.meta-key').focus());
ui.fMetadata.addEventListener('click', (e) => {
  const row = e.target.closest('.meta-remove')?.closest('.meta-row');
  if (!row) return;
  const next = row.nextElementSibling || row.previousElementSibling;
  row.remove();
  (next?.querySelector('.meta-key') || ui.fMetadataAdd).focus();
});

ui.fEnvironment.addEventListener('change', () => {
  ui.fEnvironmentOther.hidden = ui.fEnvironment.value !== '';
  if (!ui.fEnvironmentOther.hidden) ui.fEnvironmentOther.focus();
});
ui.fExpiry.addEventListener('change', () => {
  ui.fExpireAt.hidden = ui.fExpiry.value !== 'custom';
  if (!ui.fExpireAt.hidden) {
    if (!ui.fExpireAt.value) ui.fExpireAt.value = toLocalInput(new Date(Date.now() + 30 * DAY_MS));
    ui.fExpireAt.focus();
  }
});

function setKeepExpiryOption(expires) {
  ui.fExpiry.querySelector('option[value="keep"]')?.remove();
  if (!expires) return;
  const keep = document.createElement('option');
  keep.value = 'keep';
  keep.textContent = `Unchanged: ${formatDateTime(expires)}`;
  ui.fExpiry.prepend(keep);
}

function openGenerate(opener) {
  state.form = { mode: 'create', requestId: crypto.randomUUID(), opener };
  ui.keyDialogTitle.textContent = 'Generate a key';
  ui.keyFormSubmit.textContent = 'Generate';
  ui.keyForm.reset();
  setKeepExpiryOption(null);
  ui.fExpiry.value = 'never';
  ui.fEnvironment.value = 'live';
  ui.fEnvironment.disabled = false;
  ui.fEnvironmentOther.hidden = true;
  ui.fExpireAt.hidden = true;
  ui.fMetadata.replaceChildren();
  showFormError(ui.keyFormError, '');
  openDialog(ui.keyDialog, { opener, focus: ui.fName });
}

function openEdit(entry, opener) {
  const { key } = entry;
  state.form = { mode: 'edit', keyId: key.keyId, opener };
  ui.keyDialogTitle.textContent = `Edit “${nameOf(key)}”`;
  ui.keyFormSubmit.textContent = 'Save';
  ui.keyForm.reset();
  ui.fName.value = key.displayName || '';
  ui.fDescription.value = key.description || '';
  const env = key.environment || 'live';
  if (![...ui.fEnvironment.options].some((o) => o.value === env)) {
    const o = document.createElement('option');
    o.value = env;
    o.textContent = env;
    ui.fEnvironment.prepend(o);
  }
  ui.fEnvironment.value = env;
  ui.fEnvironment.disabled = true; // part of the secret's prefix
  ui.fEnvironmentOther.hidden = true;
  const expires = parseTime(key.expireTime);
  setKeepExpiryOption(expires);
  ui.fExpiry.value = expires ? 'keep' : 'never';
  ui.fExpireAt.hidden = true;
  ui.fScopes.value = (key.scopes ?? []).join(', ');
  ui.fMetadata.replaceChildren();
  for (const [k, v] of Object.entries(key.metadata ?? {}).sort(([a], [b]) => a.localeCompare(b))) addMetaRow(k, v);
  showFormError(ui.keyFormError, '');
  openDialog(ui.keyDialog, { opener, focus: ui.fName });
}

/** Reads the form; returns {fields} or {error}. */
function readForm() {
  const displayName = ui.fName.value.trim();
  if (!displayName) return { error: 'Give the key a name.', focus: ui.fName };
  const environment = ui.fEnvironment.value || ui.fEnvironmentOther.value.trim();
  if (!environment) return { error: 'Name the environment, or pick live or test.', focus: ui.fEnvironmentOther };

  let expireTime; // undefined: unchanged; null: never
  switch (ui.fExpiry.value) {
    case 'keep': expireTime = undefined; break;
    case 'never': expireTime = null; break;
    case 'custom': {
      const d = ui.fExpireAt.value ? new Date(ui.fExpireAt.value) : null;
      if (!d || Number.isNaN(d.getTime())) return { error: 'Pick the date and time the key expires.', focus: ui.fExpireAt };
      if (d.getTime() <= Date.now()) return { error: 'Pick an expiry in the future. To stop a key now, switch it off.', focus: ui.fExpireAt };
      expireTime = d;
      break;
    }
    default: expireTime = new Date(Date.now() + Number(ui.fExpiry.value) * DAY_MS);
  }

  const metadata = {};
  for (const row of ui.fMetadata.querySelectorAll('.meta-row')) {
    const k = row.querySelector('.meta-key');
    const v = row.querySelector('.meta-value').value;
    const name = k.value.trim();
    if (!name && !v) continue;
    if (!name) return { error: 'Give every label a name, or remove the row.', focus: k };
    if (Object.hasOwn(metadata, name)) return { error: `The label “${name}” appears twice.`, focus: k };
    metadata[name] = v;
  }
  return {
    fields: {
      displayName,
      description: ui.fDescription.value.trim(),
      environment,
      scopes: parseScopes(ui.fScopes.value),
      metadata,
      expireTime,
    },
  };
}

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const sameMap = (a, b) => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
};

ui.keyForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = state.form;
  if (!form || !state.api || ui.keyDialog.dataset.busy) return;
  const read = readForm();
  if (read.error) {
    showFormError(ui.keyFormError, read.error);
    read.focus?.focus();
    return;
  }
  showFormError(ui.keyFormError, '');
  const f = read.fields;
  setBusy(ui.keyDialog, true, ui.keyFormSubmit, form.mode === 'create' ? 'Generating…' : 'Saving…');
  try {
    if (form.mode === 'create') await create(form, f);
    else await save(form, f);
  } catch (err) {
    setBusy(ui.keyDialog, false, ui.keyFormSubmit);
    const message = dialogErrorText(err);
    if (message == null) return;
    let extra = '';
    if (err instanceof ApiError && err.alreadyExists && form.mode === 'create') {
      extra = ' An earlier attempt already created this key, but its secret could not be shown: '
        + 'find it in the list and regenerate it.';
    }
    if (err instanceof ApiError && err.aborted && form.mode === 'edit') {
      extra = ' Someone changed this key while you were editing; its card now shows the current values. '
        + 'Cancel and edit again.';
      state.api.get(form.keyId).then(updateCard, () => {});
    }
    if (err instanceof ApiError && err.notFound && form.mode === 'edit') {
      setReturnFocus(ui.keyDialog, removeCard(form.keyId));
    }
    showFormError(ui.keyFormError, message + extra);
  }
});

async function create(form, f) {
  const body = {
    displayName: f.displayName,
    description: f.description,
    environment: f.environment,
    scopes: f.scopes,
    metadata: f.metadata,
  };
  if (f.expireTime) body.expireTime = f.expireTime.toISOString();
  const res = await state.api.create(body, form.requestId);
  state.secrets.set(res.key.keyId, res.secret);
  const li = addCard(res.key, 'start');
  li.classList.add('fresh');
  renderListState();
  setBusy(ui.keyDialog, false, ui.keyFormSubmit);
  ui.keyDialog.close('done');
  showSecret(res.key, res.secret, form.opener, 'created');
}

async function save(form, f) {
  const entry = state.cards.get(form.keyId);
  const key = entry?.key ?? {};
  const body = { etag: key.etag };
  const mask = [];
  if (f.displayName !== (key.displayName || '')) { body.displayName = f.displayName; mask.push('display_name'); }
  if (f.description !== (key.description || '')) { body.description = f.description; mask.push('description'); }
  if (!sameList(f.scopes, key.scopes ?? [])) { body.scopes = f.scopes; mask.push('scopes'); }
  if (!sameMap(f.metadata, key.metadata ?? {})) { body.metadata = f.metadata; mask.push('metadata'); }
  if (f.expireTime !== undefined) {
    const before = parseTime(key.expireTime);
    const after = f.expireTime;
    if ((before?.getTime() ?? null) !== (after?.getTime() ?? null)) {
      if (after) body.expireTime = after.toISOString();
      mask.push('expire_time'); // absent from the body: clears the expiry
    }
  }
  if (!mask.length) {
    setBusy(ui.keyDialog, false, ui.keyFormSubmit);
    ui.keyDialog.close('done');
    toast('Nothing changed.');
    return;
  }
  const updated = await state.api.update(form.keyId, body, mask);
  updateCard(updated);
  setBusy(ui.keyDialog, false, ui.keyFormSubmit);
  ui.keyDialog.close('done');
  toast(`Saved “${nameOf(updated)}”.`);
}

// ---------- the secret, shown once ----------

function showSecret(key, secret, opener, how) {
  ui.secretTitle.textContent = how === 'regenerated' ? 'Copy the new key' : 'Copy your new key';
  ui.secretName.textContent = `“${nameOf(key)}”`;
  ui.secretValue.value = secret;
  ui.secretCopied.textContent = '';
  openDialog(ui.secretDialog, { opener, focus: ui.secretCopy });
}

ui.secretCopy.addEventListener('click', async () => {
  const ok = await copyText(ui.secretValue.value);
  if (ok) {
    ui.secretCopied.textContent = 'Copied to the clipboard.';
  } else {
    ui.secretValue.focus();
    ui.secretValue.select();
    ui.secretCopied.textContent = 'Your browser did not allow copying: the key is selected, press Ctrl+C (⌘C on a Mac).';
  }
});
ui.secretValue.addEventListener('focus', () => ui.secretValue.select());
ui.secretDialog.addEventListener('close', () => {
  if (!ui.secretDialog.open) ui.secretValue.value = ''; // not when opened again already
});

// ---------- search and page-level wiring ----------

let searchTimer = 0;
function applySearch() {
  clearTimeout(searchTimer);
  const q = ui.search.value.trim();
  if (q === state.query) return;
  state.query = q;
  hideError();
  reload();
}
ui.search.addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(applySearch, SEARCH_DELAY_MS);
});
ui.searchForm.addEventListener('submit', (e) => {
  e.preventDefault();
  applySearch();
});

ui.signinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const key = ui.signinKey.value.trim();
  if (!key) {
    showSignin('Paste your admin key.');
    return;
  }
  signIn(key);
});
ui.signOut.addEventListener('click', () => signOut('You signed out. This tab no longer holds the admin key.'));
ui.generate.addEventListener('click', () => openGenerate(ui.generate));
ui.emptyGenerate.addEventListener('click', () => openGenerate(ui.generate));
ui.loadMore.addEventListener('click', () => loadPage());
ui.errorDismiss.addEventListener('click', () => {
  hideError();
  ui.search.focus();
});

// "/" jumps to the search box, as on many sites.
document.addEventListener('keydown', (e) => {
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey || !state.api) return;
  if (document.querySelector('dialog[open]') || e.target.closest('input, textarea, select, [contenteditable]')) return;
  e.preventDefault();
  ui.search.focus();
});

setupDialogs({
  fallback: () => (state.api ? ui.generate : ui.signinKey),
  errorText: dialogErrorText,
});

const saved = sessionStorage.getItem(STORAGE_KEY);
if (saved) signIn(saved, { restoring: true });
else showSignin();
