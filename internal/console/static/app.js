// The Keyward console: sign in with an admin key, then manage API keys as
// cards. Everything goes through the public REST API (api.js). Secrets shown
// by Generate and Regenerate are kept in memory only, for the Copy button,
// and are gone when the page is closed or reloaded; a recoverable key's Copy
// asks Keyward to reveal its secret again (audited, rate-limited).
//
// Three views, chosen by the URL's fragment so Back works: the keys (#/),
// the activity log (#/activity, or #/activity?key=<id> for one key), and a
// key's page (#/keys/<id>: last use, a usage chart, its activity).

import { AuditList } from './activity.js';
import { Api, ApiError } from './api.js';
import {
  formatDateTime, formatQuota, formatRate, formatRelative, int64, looksLikeSecret, parseCount, parseDuration, parseList,
  parseScopes, parseTime, periodWord, plural, refillWords, toLocalInput,
} from './format.js';
import {
  confirmAction, copyLater, copyText, openDialog, setBusy, setReturnFocus, setupDialogs, showFormError,
} from './dialogs.js';
import {
  axisLabels, chartStart, drawChart, refusalSummary, tableRows, usageSeries, usageSummary,
} from './usage.js';

const STORAGE_KEY = 'keyward.adminKey'; // sessionStorage: this tab only
const PAGE_SIZE = 100;
const SEARCH_DELAY_MS = 250;
const ADMIN_SCOPE = 'keyward:admin';
const DAY_MS = 24 * 3600 * 1000;

const $ = (id) => document.getElementById(id);
const ui = {
  signOut: $('sign-out'),
  nav: $('nav'),
  navKeys: $('nav-keys'),
  navActivity: $('nav-activity'),
  signinView: $('signin-view'),
  signinForm: $('signin-form'),
  signinKey: $('signin-key'),
  signinError: $('signin-error'),
  signinSubmit: $('signin-submit'),
  keysView: $('keys-view'),
  keysTitle: $('keys-title'),
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
  graceTemplate: $('grace-template'),
  leakTemplate: $('leak-template'),
  chartTemplate: $('chart-template'),
  auditTemplate: $('audit-template'),
  eventTemplate: $('event-template'),
  // activity
  activityView: $('activity-view'),
  activityTitle: $('activity-title'),
  activityRefresh: $('activity-refresh'),
  activityFilter: $('activity-filter'),
  activityFilterText: $('activity-filter-text'),
  activityAudit: $('activity-audit'),
  // a key's page
  detailView: $('detail-view'),
  detailTitle: $('detail-title'),
  detailBadges: $('detail-badges'),
  detailMasked: $('detail-masked'),
  detailDescription: $('detail-description'),
  detailActions: $('detail-actions'),
  detailCopy: $('detail-copy'),
  detailCopyWhy: $('detail-copy-why'),
  detailEdit: $('detail-edit'),
  detailLeak: $('detail-leak'),
  detailRefresh: $('detail-refresh'),
  detailError: $('detail-error'),
  detailErrorText: $('detail-error-text'),
  detailPanels: $('detail-panels'),
  detailState: $('detail-state'),
  detailLastUsed: $('detail-last-used'),
  detailCreated: $('detail-created'),
  detailExpires: $('detail-expires'),
  detailSecret: $('detail-secret'),
  detailScopes: $('detail-scopes'),
  detailKeyId: $('detail-key-id'),
  detailActivityLink: $('detail-activity-link'),
  detailAudit: $('detail-audit'),
  usageChart: $('usage-chart'),
  usagePeak: $('usage-peak'),
  usageAxisStart: $('usage-axis-start'),
  usageAxisMid: $('usage-axis-mid'),
  usageSummary: $('usage-summary'),
  usageRefused: $('usage-refused'),
  usageRows: $('usage-rows'),
  // generate / edit
  keyDialog: $('key-dialog'),
  keyForm: $('key-form'),
  keyDialogTitle: $('key-dialog-title'),
  fName: $('f-name'),
  fDescription: $('f-description'),
  fEnvironment: $('f-environment'),
  fEnvironmentOther: $('f-environment-other'),
  fRecoverable: $('f-recoverable'),
  fRecoverableHelp: $('f-recoverable-help'),
  fScopes: $('f-scopes'),
  fMetadata: $('f-metadata'),
  fMetadataAdd: $('f-metadata-add'),
  fPolicies: $('f-policies'),
  fPoliciesSummary: $('f-policies-summary'),
  fExpireAt: $('f-expire-at'),
  fExpiryQuick: $('f-expiry-quick'),
  fExpireNote: $('f-expire-note'),
  fCidrs: $('f-cidrs'),
  fRateLimit: $('f-rate-limit'),
  fRatePeriod: $('f-rate-period'),
  fRateBurst: $('f-rate-burst'),
  fQuotaLimit: $('f-quota-limit'),
  fQuotaRefill: $('f-quota-refill'),
  fQuotaHelp: $('f-quota-help'),
  keyFormError: $('key-form-error'),
  keyFormSubmit: $('key-form-submit'),
  // secret
  secretDialog: $('secret-dialog'),
  secretTitle: $('secret-title'),
  secretWarning: $('secret-warning'),
  secretName: $('secret-name'),
  secretValue: $('secret-value'),
  secretCopy: $('secret-copy'),
  secretCopied: $('secret-copied'),
  secretGrace: $('secret-grace'),
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
  form: null, // {mode: 'create'|'edit', keyId, requestId, opener, expireInitial}
  view: '', // 'keys', 'activity' or 'detail'
  listScroll: 0, // where the key list was scrolled when another view opened
  activityKey: '', // the key the Activity view is narrowed to, if any
  detail: null, // the key page's {keyId, key, gone, gen}
  names: new Map(), // keyId → display name, for the activity log
  nameLookups: new Map(), // keyId → promise of its name (null: no such key)
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
function toast(message, { error = false } = {}) {
  ui.toast.textContent = message;
  ui.toast.classList.toggle('error', error);
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, Math.max(5000, message.length * 70));
}

const nameOf = (key) => key.displayName || key.keyId;

/** Remembers a key's name for the activity log. */
function rememberName(key) {
  if (key?.keyId) state.names.set(key.keyId, nameOf(key));
}

/** A key's name: known already, or asked once of Keyward (null if there is no such key). */
function lookupName(id) {
  if (state.names.has(id)) return Promise.resolve(state.names.get(id));
  if (!/^key_\w+$/.test(id) || !state.api) return Promise.resolve(null);
  let p = state.nameLookups.get(id);
  if (!p) {
    p = state.api.get(id).then((k) => {
      rememberName(k);
      return nameOf(k);
    }, () => null);
    state.nameLookups.set(id, p);
  }
  return p;
}

/** The newest copy of a key this page has: its card's, or the key page's. */
function knownKey(id) {
  return state.cards.get(id)?.key ?? (state.detail?.keyId === id ? state.detail.key : null) ?? null;
}

const keyHref = (id) => `#/keys/${encodeURIComponent(id)}`;

// ---------- sign in / out ----------

function showSignin(message = '', isError = true) {
  setView('');
  ui.signOut.hidden = true;
  ui.nav.hidden = true;
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
  ui.signOut.hidden = false;
  ui.nav.hidden = false;
  await identifySelf(api);
  reload();
  route({ initial: true });
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
  state.names.clear();
  state.nameLookups.clear();
  state.view = '';
  clearCards();
  activityList.clear();
  closeDetail();
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
  const whyId = `copy-why-${key.keyId}`;
  li.querySelector('.card-copy-why').id = whyId;
  li.querySelector('[data-action="copy"]').setAttribute('aria-describedby', `${nameId} ${whyId}`);
  li.querySelector('.card-details').href = keyHref(key.keyId);
  state.cards.set(key.keyId, { key, li });
  rememberName(key);
  fillCard(li, key);
  if (where === 'start') ui.list.prepend(li);
  else ui.list.append(li);
  return li;
}

/** Shows a key as Keyward now has it: on its card, and on its page if open. */
function showKey(key) {
  rememberName(key);
  const entry = state.cards.get(key.keyId);
  if (entry) {
    entry.key = key;
    fillCard(entry.li, key);
  }
  if (state.detail?.keyId === key.keyId) {
    state.detail.key = key;
    renderDetailKey();
  }
}

/** After a change made here: shows the key, and its page's activity anew. */
function updateCard(key) {
  showKey(key);
  touched(key.keyId);
}

/** Something was done to a key (even only revealed): its page's activity is stale. */
function touched(keyId) {
  if (state.detail?.keyId === keyId && !ui.detailView.hidden) detailAudit.reset(keyId);
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

/** "Active", or why Keyward refuses the key. */
function stateLabel(key) {
  const expires = parseTime(key.expireTime);
  const quota = quotaOf(key);
  if (key.state !== 'STATE_ACTIVE') return 'Inactive · refused';
  if (expires && expires.getTime() <= Date.now()) return 'Active · expired, refused';
  if (quota && quota.remaining === 0) return 'Active · quota used up, refused';
  return 'Active';
}

function badgesOf(key) {
  const badges = [badge(key.environment || 'live', `env env-${key.environment}`)];
  if ((key.scopes ?? []).includes(ADMIN_SCOPE)) badges.push(badge('admin', 'admin'));
  if (key.keyId === state.selfKeyId) badges.push(badge('you', 'you'));
  if (key.recoverable) {
    const b = badge('recoverable', 'recoverable');
    b.title = 'Keyward keeps this key encrypted: Copy shows it again at any time';
    badges.push(b);
  }
  return badges;
}

const NOT_RECOVERABLE_TIP = 'Secret not recoverable: create keys as recoverable with a master key configured';

/** How Copy gets a key's secret: 'memory' (shown in this page), 'reveal' (recoverable) or 'none'. */
function copySource(key) {
  if (state.secrets.has(key.keyId)) return 'memory';
  return key.recoverable ? 'reveal' : 'none';
}

/**
 * A Copy button that cannot copy stays focusable (aria-disabled, not
 * disabled), so keyboard and screen-reader users learn why: from its
 * description, its tooltip, and a message when pressed.
 */
function setCopyButton(button, why, key) {
  const source = copySource(key);
  const off = source === 'none';
  if (off) button.setAttribute('aria-disabled', 'true');
  else button.removeAttribute('aria-disabled');
  button.title = off ? NOT_RECOVERABLE_TIP
    : source === 'reveal' ? 'Copy the key: Keyward keeps it encrypted and reveals it again (recorded in the activity log)'
      : 'Copy the key generated in this page (kept until the page is closed)';
  why.textContent = off ? NOT_RECOVERABLE_TIP : '';
}

function fillCard(li, key) {
  const q = (sel) => li.querySelector(sel);
  const active = key.state === 'STATE_ACTIVE';
  const scopes = key.scopes ?? [];
  li.classList.toggle('disabled', !active);
  q('.card-details').textContent = nameOf(key); // the name links to the key's page

  q('.badges').replaceChildren(...badgesOf(key));
  q('.badges').title = `Environment: ${key.environment}`;

  const desc = q('.card-description');
  desc.textContent = key.description || '';
  desc.hidden = !key.description;
  q('.card-masked').textContent = key.maskedKey || '';
  q('.card-masked').title = 'Masked key: Keyward shows only its start and its last four characters';
  q('.card-secret-note').hidden = !state.secrets.has(key.keyId);
  q('.card-key-id').textContent = key.keyId;
  setCopyButton(q('[data-action="copy"]'), q('.card-copy-why'), key);

  const sw = q('.switch');
  sw.setAttribute('aria-checked', String(active));
  sw.setAttribute('aria-label', 'Active');
  sw.title = active ? 'Active: switch off to block this key at once' : 'Inactive: switch on to let this key validate again';
  q('.state-label').textContent = stateLabel(key);

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

  const policies = policyItems(key);
  q('.policies').replaceChildren(...policies);
  q('.card-policies').hidden = !policies.length;

  const prev = q('.card-previous');
  const prevUntil = parseTime(key.previousKeyExpireTime);
  if (key.previousMaskedKey && prevUntil && prevUntil.getTime() > Date.now()) {
    const code = document.createElement('code');
    code.textContent = key.previousMaskedKey;
    prev.replaceChildren('Previous key ', code, ' works until ', timeElement(prevUntil, formatDateTime(prevUntil)),
      ` (${formatRelative(prevUntil)})`);
    prev.hidden = false;
  } else {
    prev.replaceChildren();
    prev.hidden = true;
  }

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

/** A key's rate limit as numbers, or null: {limit, period (seconds), burst}. */
function rateOf(key) {
  const r = key.rateLimit;
  const limit = int64(r?.limit);
  if (limit <= 0) return null;
  const period = parseDuration(r.period) || 1;
  return { limit, period, burst: int64(r.burst) || limit };
}

/** A key's quota as numbers, or null: {limit, refill, remaining, refillTime}. */
function quotaOf(key) {
  const qu = key.quota;
  const limit = int64(qu?.limit);
  if (limit <= 0) return null;
  return {
    limit,
    refill: qu.refill in refillWords ? qu.refill : 'REFILL_UNSPECIFIED',
    remaining: Math.max(0, int64(qu.remaining)),
    refillTime: parseTime(qu.refillTime),
  };
}

function chip(text, title, cls = '') {
  const li = document.createElement('li');
  li.textContent = text;
  li.title = title;
  if (cls) li.className = cls;
  return li;
}

/** The card's compact policy chips: rate limit, quota, IP allow-list. */
function policyItems(key) {
  const items = [];
  const rate = rateOf(key);
  if (rate) {
    items.push(chip(formatRate(rate.limit, rate.period, rate.burst),
      `Rate limit: ${plural(rate.limit, 'request', 'requests')} per ${periodWord(rate.period)}, `
        + `up to ${rate.burst.toLocaleString()} at once`, 'rate'));
  }
  const quota = quotaOf(key);
  if (quota) {
    let title = `Quota: ${quota.remaining.toLocaleString()} of ${plural(quota.limit, 'use', 'uses')} left`;
    title += quota.refill === 'REFILL_UNSPECIFIED' ? ' in total'
      : `; starts afresh ${quota.refillTime ? formatDateTime(quota.refillTime) : refillWords[quota.refill]}`;
    items.push(chip(formatQuota(quota.limit, quota.refill, quota.remaining), title,
      quota.remaining === 0 ? 'quota exhausted' : 'quota'));
  }
  const cidrs = key.allowedCidrs ?? [];
  if (cidrs.length) {
    items.push(chip(cidrs.length === 1 ? `IP: ${cidrs[0]}` : `IP: ${cidrs.length} ranges`,
      `Accepted only from ${cidrs.join(', ')}`, 'ip'));
  }
  return items;
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

function copy(entry, button) {
  return copyKey(entry.key, button);
}

const revealing = new Set(); // keyIds whose secret is being revealed

/**
 * Copies a key's secret: the one generated in this page, or, for a
 * recoverable key, the one Keyward reveals (each reveal is audited).
 * Otherwise says why it cannot.
 */
async function copyKey(key, button) {
  const name = nameOf(key);
  const kept = state.secrets.get(key.keyId);
  if (kept) {
    const ok = await copyText(kept);
    toast(ok ? `Copied the key of “${name}”.` : 'Could not copy. Your browser did not allow access to the clipboard.');
    return;
  }
  if (!key.recoverable) {
    toast(`The key of “${name}” cannot be copied: it is not recoverable, so Keyward keeps only a hash of it and showed it `
      + 'once, when it was generated. Keys created as recoverable, on a server with a master key, can be copied at any time. '
      + 'If this key is lost, use Regenerate to get a new one.');
    return;
  }
  if (revealing.has(key.keyId)) return;
  revealing.add(key.keyId);
  button.setAttribute('aria-busy', 'true');
  const reveal = state.api.reveal(key.keyId);
  try {
    const { ok, text } = await copyLater(reveal.then((r) => r.secret));
    if (ok) {
      toast(`Copied the key of “${name}”. Keyward recorded the copy in the activity log.`);
    } else {
      showSecret(key, text, button, 'revealed'); // the user copies it by hand
    }
  } catch (err) {
    if (handledGlobally(err)) return;
    toast(`Could not copy the key of “${name}”: ${revealErrorText(err)}`, { error: true });
    if (err instanceof ApiError && err.notFound) {
      removeCard(key.keyId);
    } else if (err instanceof ApiError && err.failedPrecondition) {
      state.api.get(key.keyId).then(showKey, () => {}); // it may no longer be recoverable
    }
  } finally {
    revealing.delete(key.keyId);
    button.removeAttribute('aria-busy');
    touched(key.keyId);
  }
}

function revealErrorText(err) {
  if (err instanceof ApiError && err.tooMany) {
    const s = err.retryAfterSeconds;
    return 'Keyward limits how many secrets can be revealed in a minute, and that many were. '
      + `Try again ${s ? `in ${plural(s, 'second', 'seconds')}` : 'in a minute'}.`;
  }
  return messageOf(err);
}

/**
 * Reports a key as leaked: switch it off, or regenerate it at once, with a
 * reason for the activity log. A regenerated key's new secret is shown once.
 */
async function reportLeak(key, button) {
  const name = nameOf(key);
  const self = key.keyId === state.selfKeyId;
  const content = ui.leakTemplate.content.firstElementChild.cloneNode(true);
  const reason = content.querySelector('textarea');
  reason.addEventListener('input', () => reason.removeAttribute('aria-invalid'));
  const res = await confirmAction({
    title: `Report “${name}” as leaked?`,
    paragraphs: [
      'Report a key that someone who should not have it may know: pasted into a chat, committed to a repository, '
        + 'printed in a log.',
      'Once you confirm, Keyward refuses the leaked key on every instance, even during a rotation’s grace period.',
      self && 'This is the admin key you are signed in with: switched off, you will be signed out; regenerated, '
        + 'this tab will switch to the new key.',
    ],
    content,
    confirmLabel: 'Report leak',
    busyLabel: 'Reporting…',
    opener: button,
    focus: content.querySelector('input[name="leak-action"]:checked'),
    check: () => {
      if (reason.value.trim()) return null;
      reason.setAttribute('aria-invalid', 'true');
      return { message: 'Say why you think the key leaked, e.g. where it was found. It goes into the activity log.', focus: reason };
    },
    run: async () => {
      const action = content.querySelector('input[name="leak-action"]:checked').value;
      let out;
      try {
        out = await state.api.reportLeak({ keyId: key.keyId, action, reason: reason.value.trim() });
      } catch (err) {
        dropIfGone(err, key.keyId);
        throw err;
      }
      if (out.secret) {
        state.secrets.set(key.keyId, out.secret);
        if (self) {
          state.api.adminKey = out.secret;
          sessionStorage.setItem(STORAGE_KEY, out.secret);
        }
      }
      updateCard(out.key);
      if (!out.secret && self) {
        signOut('You reported the admin key this tab signed in with as leaked and switched it off, so you were signed out.');
      }
      return out;
    },
  });
  if (!res || !state.api) return;
  if (res.secret) {
    showSecret(res.key, res.secret, button, 'leak');
  } else {
    toast(`Reported “${name}” as leaked and switched it off: Keyward refuses it now. `
      + 'Switch it on again only once the leak is dealt with, or regenerate it.');
  }
}

async function regenerate(entry, button) {
  const { key } = entry;
  const name = nameOf(key);
  const self = key.keyId === state.selfKeyId;
  const grace = ui.graceTemplate.content.firstElementChild.cloneNode(true);
  const res = await confirmAction({
    title: `Regenerate “${name}”?`,
    paragraphs: [
      'A new key replaces the current one. Every application using the old key must be updated with the new one.',
      'The new key is shown once, right after this.',
      self && 'This is the admin key you are signed in with: this tab will switch to the new key.',
    ],
    content: grace,
    confirmLabel: 'Regenerate',
    busyLabel: 'Regenerating…',
    opener: button,
    run: async () => {
      const graceSeconds = Number(grace.querySelector('input[name="grace"]:checked')?.value || 0);
      let out;
      try {
        out = await state.api.regenerate(key.keyId, { graceSeconds });
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

// ----- policies: expiry, IP allow-list, rate limit, quota -----

const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

ui.fExpiryQuick.addEventListener('click', (e) => {
  const days = e.target.closest('button[data-days]')?.dataset.days;
  if (!days) return;
  ui.fExpireAt.value = days === 'never' ? '' : toLocalInput(new Date(Date.now() + Number(days) * DAY_MS));
  clearFieldError(ui.fExpireAt);
  renderPolicyNotes();
});

/** The expiry note under the field and the collapsed section's summary. */
function renderPolicyNotes() {
  let note;
  if (ui.fExpireAt.validity.badInput) {
    note = 'Finish the date and time, or choose Never.';
  } else if (!ui.fExpireAt.value) {
    note = 'Never expires.';
  } else {
    const d = new Date(ui.fExpireAt.value);
    note = d.getTime() <= Date.now()
      ? `Expired ${formatRelative(d)} (your time zone${timeZone ? `, ${timeZone}` : ''}).`
      : `Expires ${formatRelative(d)} (your time zone${timeZone ? `, ${timeZone}` : ''}).`;
  }
  ui.fExpireNote.textContent = note;

  const parts = [];
  if (ui.fExpireAt.value) {
    const d = new Date(ui.fExpireAt.value);
    if (!Number.isNaN(d.getTime())) parts.push(d.getTime() <= Date.now() ? 'expired' : `expires ${formatRelative(d)}`);
  }
  const cidrs = parseList(ui.fCidrs.value);
  if (cidrs.length) parts.push(cidrs.length === 1 ? `IP: ${cidrs[0]}` : `IP: ${cidrs.length} ranges`);
  const limit = parseCount(ui.fRateLimit.value);
  if (limit > 0) parts.push(formatRate(limit, Number(ui.fRatePeriod.value), parseCount(ui.fRateBurst.value) || limit));
  const uses = parseCount(ui.fQuotaLimit.value);
  if (uses > 0) parts.push(formatQuota(uses, ui.fQuotaRefill.value));
  ui.fPoliciesSummary.textContent = parts.length ? parts.join(' · ') : 'none: no expiry, any address, no limits';
}

for (const el of [ui.fExpireAt, ui.fCidrs, ui.fRateLimit, ui.fRatePeriod, ui.fRateBurst, ui.fQuotaLimit, ui.fQuotaRefill]) {
  el.addEventListener('input', renderPolicyNotes);
  el.addEventListener('change', renderPolicyNotes);
}

/** Shows a period a key has that the list does not offer ("every 10 seconds"). */
function setPeriodOption(secs) {
  ui.fRatePeriod.querySelector('option[data-extra]')?.remove();
  if ([...ui.fRatePeriod.options].some((o) => Number(o.value) === secs)) return;
  const o = document.createElement('option');
  o.value = String(secs);
  o.textContent = periodWord(secs);
  o.dataset.extra = '1';
  ui.fRatePeriod.append(o);
}

// ----- errors next to their fields -----

// Proto field names (as Keyward's INVALID_ARGUMENT names them) → the control
// to mark and focus, and how the summary calls it.
const fieldControls = {
  display_name: [ui.fName, 'name'],
  description: [ui.fDescription, 'description'],
  environment: [ui.fEnvironment, 'environment'],
  scopes: [ui.fScopes, 'scopes'],
  metadata: [ui.fMetadataAdd, 'metadata'],
  expire_time: [ui.fExpireAt, 'expiry'],
  ttl: [ui.fExpireAt, 'expiry'],
  allowed_cidrs: [ui.fCidrs, 'IP allow-list'],
  rate_limit: [ui.fRateLimit, 'rate limit'],
  'rate_limit.limit': [ui.fRateLimit, 'rate limit'],
  'rate_limit.period': [ui.fRatePeriod, 'rate limit period'],
  'rate_limit.burst': [ui.fRateBurst, 'rate limit burst'],
  quota: [ui.fQuotaLimit, 'quota'],
  recoverable: [ui.fRecoverable, 'recoverable setting'],
  'quota.limit': [ui.fQuotaLimit, 'quota'],
  'quota.refill': [ui.fQuotaRefill, 'quota refill'],
};

/** The control and label for a field path such as "key.allowed_cidrs[2]". */
function controlFor(field) {
  const path = field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`).replace(/\[[^\]]*\]/g, '').replace(/^key\./, '');
  return fieldControls[path] || fieldControls[path.split('.')[0]] || null;
}

/** The error paragraph of a control: the "-error" id in its aria-describedby. */
function errorElementOf(control) {
  const id = (control.getAttribute('aria-describedby') || '').split(/\s+/).find((x) => x.endsWith('-error'));
  return id ? document.getElementById(id) : null;
}

function setFieldError(control, message) {
  const p = errorElementOf(control);
  control.setAttribute('aria-invalid', 'true');
  if (p) {
    p.textContent = message;
    p.hidden = false;
  }
  const details = control.closest('details');
  if (details) details.open = true;
}

function clearFieldError(control) {
  const p = errorElementOf(control);
  if (!p || p.hidden) {
    control.removeAttribute('aria-invalid');
    return;
  }
  p.hidden = true;
  p.textContent = '';
  for (const el of ui.keyForm.querySelectorAll('[aria-invalid]')) {
    if (errorElementOf(el) === p) el.removeAttribute('aria-invalid');
  }
}

function clearFieldErrors() {
  for (const p of ui.keyForm.querySelectorAll('.field-error')) {
    p.hidden = true;
    p.textContent = '';
  }
  for (const el of ui.keyForm.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

// Typing into a field marked wrong takes its mark away.
ui.keyForm.addEventListener('input', (e) => {
  if (e.target.getAttribute?.('aria-invalid')) clearFieldError(e.target);
});

/**
 * Shows a form problem: next to its field when it names one (the control
 * is marked and focused), and in the summary above the buttons.
 */
function showFieldProblem(field, message, summary, focus) {
  const found = field && controlFor(field);
  if (found) setFieldError(found[0], message);
  showFormError(ui.keyFormError, summary);
  (focus || found?.[0])?.focus();
}

// ----- open, read, submit -----

function resetForm() {
  ui.keyForm.reset();
  clearFieldErrors();
  setPeriodOption(1);
  ui.fEnvironmentOther.hidden = true;
  ui.fMetadata.replaceChildren();
  ui.fExpireAt.value = '';
  showFormError(ui.keyFormError, '');
}

const quotaHelpText = 'Successful validations allowed; daily and monthly quotas start afresh at 00:00 UTC. Empty: unlimited.';
const recoverableHelpText = 'Keyward also keeps the key encrypted under the server’s master key, so Copy on its card works at '
  + 'any time (each copy is recorded in the activity log). Otherwise the key is shown once, now. It cannot be changed later.';

function openGenerate(opener) {
  state.form = { mode: 'create', requestId: crypto.randomUUID(), opener, expireInitial: '' };
  ui.keyDialogTitle.textContent = 'Generate a key';
  ui.keyFormSubmit.textContent = 'Generate';
  resetForm();
  ui.fEnvironment.value = 'live';
  ui.fEnvironment.disabled = false;
  ui.fRecoverable.disabled = false;
  ui.fRecoverableHelp.textContent = recoverableHelpText;
  ui.fPolicies.open = false; // the simple case stays simple
  ui.fQuotaHelp.textContent = quotaHelpText;
  renderPolicyNotes();
  openDialog(ui.keyDialog, { opener, focus: ui.fName });
}

function openEdit(entry, opener) {
  const { key } = entry;
  ui.keyDialogTitle.textContent = `Edit “${nameOf(key)}”`;
  ui.keyFormSubmit.textContent = 'Save';
  resetForm();
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
  ui.fRecoverable.checked = Boolean(key.recoverable);
  ui.fRecoverable.disabled = true; // fixed when a key is created
  ui.fRecoverableHelp.textContent = key.recoverable
    ? 'Keyward keeps this key encrypted, so Copy works at any time. Fixed when a key is created.'
    : 'Keyward showed this key once. Fixed when a key is created: to copy a key later, generate a new, recoverable one.';
  ui.fScopes.value = (key.scopes ?? []).join(', ');
  for (const [k, v] of Object.entries(key.metadata ?? {}).sort(([a], [b]) => a.localeCompare(b))) addMetaRow(k, v);

  const expires = parseTime(key.expireTime);
  ui.fExpireAt.value = expires ? toLocalInput(expires) : '';
  ui.fCidrs.value = (key.allowedCidrs ?? []).join('\n');
  const rate = rateOf(key);
  if (rate) {
    ui.fRateLimit.value = String(rate.limit);
    setPeriodOption(rate.period);
    ui.fRatePeriod.value = String(rate.period);
    ui.fRateBurst.value = rate.burst !== rate.limit ? String(rate.burst) : '';
  }
  const quota = quotaOf(key);
  if (quota) {
    ui.fQuotaLimit.value = String(quota.limit);
    ui.fQuotaRefill.value = quota.refill;
    ui.fQuotaHelp.textContent = `${quota.remaining.toLocaleString()} of ${plural(quota.limit, 'use', 'uses')} left`
      + `${quota.refillTime ? `, until it starts afresh ${formatDateTime(quota.refillTime)}` : ''}. `
      + 'Changing the quota starts its count afresh. Empty: unlimited.';
  } else {
    ui.fQuotaHelp.textContent = quotaHelpText;
  }
  state.form = { mode: 'edit', keyId: key.keyId, opener, expireInitial: ui.fExpireAt.value };
  ui.fPolicies.open = true;
  renderPolicyNotes();
  openDialog(ui.keyDialog, { opener, focus: ui.fName });
}

const RATE_MAX = 1_000_000;
const QUOTA_MAX = 1_000_000_000_000;

/**
 * Reads the form; returns {fields} or {error, field (proto name), focus}.
 * fields.expireTime is undefined when unchanged, null for never; rateLimit
 * and quota are null for none.
 */
function readForm(form) {
  const displayName = ui.fName.value.trim();
  if (!displayName) return { error: 'Give the key a name.', field: 'display_name' };
  const environment = ui.fEnvironment.value || ui.fEnvironmentOther.value.trim();
  if (!environment) return { error: 'Name the environment, or pick live or test.', field: 'environment', focus: ui.fEnvironmentOther };

  const metadata = {};
  for (const row of ui.fMetadata.querySelectorAll('.meta-row')) {
    const k = row.querySelector('.meta-key');
    const v = row.querySelector('.meta-value').value;
    const name = k.value.trim();
    if (!name && !v) continue;
    if (!name) return { error: 'Give every label a name, or remove the row.', field: 'metadata', focus: k };
    if (Object.hasOwn(metadata, name)) return { error: `The label “${name}” appears twice.`, field: 'metadata', focus: k };
    metadata[name] = v;
  }

  let expireTime; // undefined: unchanged
  if (ui.fExpireAt.validity.badInput) {
    return { error: 'Finish the expiry date and time, or choose Never.', field: 'expire_time' };
  }
  if (ui.fExpireAt.value !== form.expireInitial) {
    if (!ui.fExpireAt.value) {
      expireTime = null;
    } else {
      const d = new Date(ui.fExpireAt.value);
      if (Number.isNaN(d.getTime())) return { error: 'Pick the date and time the key expires.', field: 'expire_time' };
      if (d.getTime() <= Date.now()) {
        return { error: 'Pick an expiry in the future. To stop a key now, switch it off.', field: 'expire_time' };
      }
      expireTime = d;
    }
  }

  let rateLimit = null;
  const limit = parseCount(ui.fRateLimit.value);
  const burst = parseCount(ui.fRateBurst.value);
  if (limit === null) {
    if (burst !== null) return { error: 'Set the number of requests too, or clear the burst.', field: 'rate_limit' };
  } else {
    if (!(limit >= 1 && limit <= RATE_MAX)) {
      return { error: 'Requests: a whole number from 1 to 1,000,000, or empty for no limit.', field: 'rate_limit' };
    }
    if (burst !== null && !(burst >= 1 && burst <= RATE_MAX)) {
      return { error: 'Burst: a whole number from 1 to 1,000,000, or empty for the same as requests.', field: 'rate_limit.burst' };
    }
    rateLimit = { limit, period: Number(ui.fRatePeriod.value), burst: burst ?? limit };
  }

  let quota = null;
  const uses = parseCount(ui.fQuotaLimit.value);
  if (uses !== null) {
    if (!(uses >= 1 && uses <= QUOTA_MAX)) {
      return { error: 'Uses: a whole number from 1 to 1,000,000,000,000, or empty for unlimited.', field: 'quota' };
    }
    quota = { limit: uses, refill: ui.fQuotaRefill.value };
  }

  return {
    fields: {
      displayName,
      description: ui.fDescription.value.trim(),
      environment,
      scopes: parseScopes(ui.fScopes.value),
      metadata,
      expireTime,
      allowedCidrs: parseList(ui.fCidrs.value), // checked by Keyward, which names a bad one
      rateLimit,
      quota,
      burstSet: burst !== null,
    },
  };
}

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const sameMap = (a, b) => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
};
const sameRate = (a, b) => (a === null || b === null ? a === b
  : a.limit === b.limit && a.period === b.period && a.burst === b.burst);
const sameQuota = (a, b) => (a === null || b === null ? a === b : a.limit === b.limit && a.refill === b.refill);

/** The REST JSON of a rate limit; burst left out means "same as limit". */
function rateJSON(r, burstSet) {
  const out = { limit: String(r.limit), period: `${r.period}s` };
  if (burstSet) out.burst = String(r.burst);
  return out;
}

const quotaJSON = (qu) => ({ limit: String(qu.limit), refill: qu.refill });

ui.keyForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = state.form;
  if (!form || !state.api || ui.keyDialog.dataset.busy) return;
  clearFieldErrors();
  showFormError(ui.keyFormError, '');
  const read = readForm(form);
  if (read.error) {
    showFieldProblem(read.field, read.error, read.error, read.focus);
    return;
  }
  const f = read.fields;
  setBusy(ui.keyDialog, true, ui.keyFormSubmit, form.mode === 'create' ? 'Generating…' : 'Saving…');
  try {
    if (form.mode === 'create') await create(form, f);
    else await save(form, f);
  } catch (err) {
    setBusy(ui.keyDialog, false, ui.keyFormSubmit);
    const message = dialogErrorText(err);
    if (message == null) return;
    if (err instanceof ApiError && err.failedPrecondition && form.mode === 'create' && ui.fRecoverable.checked) {
      // No master key: Keyward's message says how to set one; it goes next to the box.
      setFieldError(ui.fRecoverable, message);
      showFormError(ui.keyFormError, 'Keyward cannot keep this key recoverable. Untick “Recoverable” to generate a key '
        + 'that is shown only once.');
      ui.fRecoverable.focus();
      return;
    }
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
    // Keyward names the field it refused: mark it, keep everything typed.
    const violations = err instanceof ApiError ? err.fieldViolations : [];
    let focus = null;
    for (const v of violations) {
      const found = controlFor(v.field);
      if (!found) continue;
      setFieldError(found[0], capitalized(v.description || message));
      focus ??= found[0];
    }
    const first = violations.find((v) => controlFor(v.field) && v.description);
    const summary = first ? `Keyward did not accept the ${controlFor(first.field)[1]}: ${first.description}` : message;
    showFormError(ui.keyFormError, summary + extra);
    focus?.focus();
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
  if (f.allowedCidrs.length) body.allowedCidrs = f.allowedCidrs;
  if (f.rateLimit) body.rateLimit = rateJSON(f.rateLimit, f.burstSet);
  if (f.quota) body.quota = quotaJSON(f.quota);
  if (ui.fRecoverable.checked) body.recoverable = true;
  const res = await state.api.create(body, form.requestId);
  state.secrets.set(res.key.keyId, res.secret);
  const li = addCard(res.key, 'start');
  li.classList.add('fresh');
  renderListState();
  setBusy(ui.keyDialog, false, ui.keyFormSubmit);
  ui.keyDialog.close('done');
  showSecret(res.key, res.secret, form.opener, 'created');
}

/** Sends only what changed, naming it in update_mask. */
async function save(form, f) {
  const key = knownKey(form.keyId) ?? {};
  const body = { etag: key.etag };
  const mask = [];
  if (f.displayName !== (key.displayName || '')) { body.displayName = f.displayName; mask.push('display_name'); }
  if (f.description !== (key.description || '')) { body.description = f.description; mask.push('description'); }
  if (!sameList(f.scopes, key.scopes ?? [])) { body.scopes = f.scopes; mask.push('scopes'); }
  if (!sameMap(f.metadata, key.metadata ?? {})) { body.metadata = f.metadata; mask.push('metadata'); }
  if (f.expireTime !== undefined) {
    const before = parseTime(key.expireTime);
    if ((before?.getTime() ?? null) !== (f.expireTime?.getTime() ?? null)) {
      if (f.expireTime) body.expireTime = f.expireTime.toISOString();
      mask.push('expire_time'); // named without a value: clears the expiry
    }
  }
  if (!sameList(f.allowedCidrs, key.allowedCidrs ?? [])) {
    body.allowedCidrs = f.allowedCidrs; // empty: anywhere again
    mask.push('allowed_cidrs');
  }
  if (!sameRate(f.rateLimit, rateOf(key))) {
    if (f.rateLimit) body.rateLimit = rateJSON(f.rateLimit, f.burstSet);
    mask.push('rate_limit');
  }
  if (!sameQuota(f.quota, quotaOf(key))) {
    if (f.quota) body.quota = quotaJSON(f.quota);
    mask.push('quota');
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

const secretWarnings = {
  once: 'This is the only time the full key is shown. Keyward keeps only a hash of it, so it cannot show it again. '
    + 'Store it somewhere safe now; if it is lost, regenerate the key.',
  recoverable: 'Keyward keeps this key encrypted, so Copy on its card can show it again later; each copy is recorded '
    + 'in the activity log. Store it somewhere safe all the same.',
  revealed: 'Keyward revealed this key because you asked, and recorded it in the activity log. Your browser did not let '
    + 'the page copy it: use Copy below, or select the key and copy it yourself.',
};

/** Shows a secret; how is 'created', 'regenerated', 'leak' (regenerated after a leak report) or 'revealed'. */
function showSecret(key, secret, opener, how) {
  ui.secretTitle.textContent = how === 'revealed' ? 'Copy the key' : how === 'created' ? 'Copy your new key' : 'Copy the new key';
  ui.secretWarning.textContent = how === 'revealed' ? secretWarnings.revealed
    : key.recoverable ? secretWarnings.recoverable : secretWarnings.once;
  ui.secretName.textContent = `“${nameOf(key)}”`;
  ui.secretValue.value = secret;
  ui.secretCopied.textContent = '';
  const until = parseTime(key.previousKeyExpireTime);
  if (how === 'regenerated' && key.previousMaskedKey && until && until.getTime() > Date.now()) {
    const code = document.createElement('code');
    code.textContent = key.previousMaskedKey;
    ui.secretGrace.replaceChildren('The previous key ', code, ' keeps working until ',
      timeElement(until, formatDateTime(until)), ` (${formatRelative(until)}): move your applications to the new key before then.`);
    ui.secretGrace.hidden = false;
  } else if (how === 'leak') {
    ui.secretGrace.replaceChildren('The leaked key no longer works: give this one to the applications that used it.');
    ui.secretGrace.hidden = false;
  } else {
    ui.secretGrace.replaceChildren();
    ui.secretGrace.hidden = true;
  }
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

// ---------- views: the keys, the activity log, a key's page ----------

/** The view the URL's fragment names: #/, #/activity[?key=<id>], #/keys/<id>. */
function parseRoute() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  if (path === 'activity') return { view: 'activity', keyId: new URLSearchParams(query).get('key') || '' };
  const m = /^keys\/([^/]+)$/.exec(path);
  if (m) {
    try {
      return { view: 'detail', keyId: decodeURIComponent(m[1]) };
    } catch {
      // a malformed fragment: the list
    }
  }
  return { view: 'keys' };
}

function setView(view) {
  ui.keysView.hidden = view !== 'keys';
  ui.activityView.hidden = view !== 'activity';
  ui.detailView.hidden = view !== 'detail';
  // The key pages belong to "API keys": the current section, not the current page.
  const current = { keys: view === 'keys' ? 'page' : view === 'detail' ? 'true' : '', activity: view === 'activity' ? 'page' : '' };
  for (const [link, v] of [[ui.navKeys, current.keys], [ui.navActivity, current.activity]]) {
    if (v) link.setAttribute('aria-current', v);
    else link.removeAttribute('aria-current');
  }
}

/** Shows the view the URL names, focusing its heading (or, first, the search box). */
function route({ initial = false } = {}) {
  if (!state.api) return;
  const r = parseRoute();
  const from = state.view;
  const fromKey = state.detail?.keyId;
  if (from === 'keys' && r.view !== 'keys') state.listScroll = window.scrollY;
  state.view = r.view;
  setView(r.view);
  if (r.view !== 'detail') closeDetail();
  if (r.view === 'activity') {
    document.title = 'Activity · Keyward';
    showActivity(r.keyId);
    window.scrollTo(0, 0);
    ui.activityTitle.focus();
  } else if (r.view === 'detail') {
    openDetail(r.keyId);
    window.scrollTo(0, 0);
    ui.detailTitle.focus();
  } else {
    document.title = 'API keys · Keyward';
    if (initial) {
      ui.search.focus();
      return;
    }
    window.scrollTo(0, state.listScroll);
    // Back from a key's page: focus returns to that key's card.
    const link = from === 'detail' && fromKey ? state.cards.get(fromKey)?.li.querySelector('.card-details') : null;
    if (link) link.focus();
    else ui.keysTitle.focus({ preventScroll: true });
  }
}

window.addEventListener('hashchange', () => route());

const auditContext = {
  api: () => state.api,
  keyName: (id) => state.names.get(id) || '',
  lookupName,
  selfKeyId: () => state.selfKeyId,
  errorText: dialogErrorText,
  keyHref,
};
const activityList = new AuditList(ui.activityAudit, ui.auditTemplate, ui.eventTemplate,
  { ...auditContext, showKey: true, labelledBy: 'activity-title' });
const detailAudit = new AuditList(ui.detailAudit, ui.auditTemplate, ui.eventTemplate,
  { ...auditContext, showKey: false, labelledBy: 'detail-activity-title' });

function showActivity(keyId) {
  state.activityKey = keyId;
  ui.activityFilter.hidden = !keyId;
  if (keyId) {
    const a = document.createElement('a');
    a.href = keyHref(keyId);
    a.textContent = state.names.get(keyId) || keyId;
    lookupName(keyId).then((name) => {
      if (name) a.textContent = name;
    });
    const code = document.createElement('code');
    code.textContent = keyId;
    ui.activityFilterText.replaceChildren('Only the activity of ', a, ' ', code);
  } else {
    ui.activityFilterText.replaceChildren();
  }
  activityList.reset(keyId);
}

ui.activityRefresh.addEventListener('click', () => activityList.reset(state.activityKey));

// ----- a key's page -----

let detailGen = 0;

/** Forgets the key page's key, and what it showed. */
function closeDetail() {
  detailGen++;
  state.detail = null;
  detailAudit.clear();
  ui.detailTitle.textContent = '';
  ui.detailBadges.replaceChildren();
  ui.detailMasked.textContent = '';
  ui.detailDescription.textContent = '';
  for (const dd of [ui.detailState, ui.detailLastUsed, ui.detailCreated, ui.detailExpires, ui.detailSecret, ui.detailScopes]) {
    dd.replaceChildren();
  }
  ui.detailKeyId.textContent = '';
  renderUsage(null, '');
  hideDetailError();
}

function openDetail(keyId) {
  closeDetail();
  const d = { keyId, key: state.cards.get(keyId)?.key ?? null, gone: false, gen: detailGen, start: chartStart(), lastUsed: '' };
  state.detail = d;
  ui.detailActivityLink.href = `#/activity?key=${encodeURIComponent(keyId)}`;
  renderDetailKey();
  renderUsage(null, 'Loading usage…');
  detailAudit.reset(keyId);
  loadDetail(d);
}

/** Fetches the key and its usage; both go on the page when they come. */
async function loadDetail(d) {
  const api = state.api;
  const [got, usage] = await Promise.allSettled([api.get(d.keyId), api.usage(d.keyId, { startTime: d.start })]);
  if (state.detail !== d) return;
  if (got.status === 'fulfilled') {
    showKey(got.value);
  } else if (got.reason instanceof ApiError && got.reason.notFound) {
    d.gone = true;
    d.key = null;
    if (state.cards.has(d.keyId)) removeCard(d.keyId);
    renderDetailKey();
  } else {
    showDetailError(got.reason, 'Could not load the key');
  }
  if (state.detail !== d || d.gone) return;
  if (usage.status === 'fulfilled') {
    renderUsage(usage.value);
  } else {
    renderUsage(null, 'Usage could not be loaded.');
    showDetailError(usage.reason, 'Could not load the usage');
  }
}

function showDetailError(err, what) {
  if (handledGlobally(err)) return;
  ui.detailErrorText.textContent = `${what}: ${messageOf(err)}`;
  ui.detailError.hidden = false;
}

function hideDetailError() {
  ui.detailError.hidden = true;
  ui.detailErrorText.textContent = '';
}

/** The later of two timestamps, as a Date (null if neither). */
function later(a, b) {
  const x = parseTime(a);
  const y = parseTime(b);
  if (!x || !y) return x || y;
  return x > y ? x : y;
}

function renderDetailKey() {
  const d = state.detail;
  if (!d) return;
  const key = d.key;
  ui.detailPanels.hidden = d.gone;
  ui.detailActions.hidden = !key;
  ui.detailActivityLink.hidden = d.gone;
  if (!key) {
    ui.detailTitle.textContent = d.gone ? 'Key not found' : 'Loading the key…';
    ui.detailDescription.textContent = d.gone
      ? `Keyward has no key ${d.keyId}: it was deleted, or never existed. What the activity log recorded about it is below.`
      : '';
    ui.detailDescription.hidden = !d.gone;
    if (d.gone) document.title = 'Key not found · Keyward';
    return;
  }
  document.title = `${nameOf(key)} · API keys · Keyward`;
  ui.detailTitle.textContent = nameOf(key);
  ui.detailBadges.replaceChildren(...badgesOf(key));
  ui.detailMasked.textContent = key.maskedKey || '';
  ui.detailDescription.textContent = key.description || '';
  ui.detailDescription.hidden = !key.description;
  ui.detailState.textContent = stateLabel(key);
  ui.detailState.classList.toggle('refused', stateLabel(key) !== 'Active');
  const used = later(key.lastUsedTime, d.lastUsed);
  ui.detailLastUsed.replaceChildren(used ? timeElement(used, `${formatRelative(used)} · ${formatDateTime(used)}`) : 'Never');
  const created = parseTime(key.createTime);
  ui.detailCreated.replaceChildren(created ? timeElement(created, formatDateTime(created)) : '—');
  const expires = parseTime(key.expireTime);
  ui.detailExpires.replaceChildren(!expires ? 'Never'
    : expires.getTime() <= Date.now() ? `Expired ${formatDateTime(expires)}` : timeElement(expires, formatDateTime(expires)));
  ui.detailSecret.textContent = key.recoverable
    ? 'Recoverable: Keyward keeps it encrypted, and Copy reveals it (each time recorded below)'
    : state.secrets.has(key.keyId) ? 'Not recoverable: generated in this page, which keeps it until it is closed'
      : 'Not recoverable: shown once, when it was generated';
  ui.detailScopes.textContent = (key.scopes ?? []).join(', ') || 'none';
  ui.detailKeyId.textContent = key.keyId;
  setCopyButton(ui.detailCopy, ui.detailCopyWhy, key);
}

/** Draws the usage answer, or (res null) says message where the chart goes. */
function renderUsage(res, message = '') {
  if (!res) {
    ui.usageChart.replaceChildren();
    ui.usagePeak.textContent = '';
    ui.usageAxisStart.textContent = '';
    ui.usageAxisMid.textContent = '';
    ui.usageSummary.textContent = message;
    ui.usageRefused.textContent = '';
    ui.usageRefused.hidden = true;
    ui.usageRows.replaceChildren();
    return;
  }
  const d = state.detail;
  const series = usageSeries(res.buckets, d?.start ?? chartStart());
  const svg = ui.chartTemplate.content.firstElementChild.cloneNode(true);
  const peak = drawChart(svg, series);
  ui.usageChart.replaceChildren(svg);
  ui.usagePeak.textContent = series.valid + series.refused ? `${peak.toLocaleString()} in the busiest hour` : '';
  [ui.usageAxisStart.textContent, ui.usageAxisMid.textContent] = axisLabels(series);
  ui.usageSummary.textContent = usageSummary(series);
  const refused = refusalSummary(series);
  ui.usageRefused.textContent = refused;
  ui.usageRefused.hidden = !refused;
  ui.usageRows.replaceChildren(...tableRows(series));
  if (d && res.lastUsedTime) {
    d.lastUsed = res.lastUsedTime;
    renderDetailKey();
  }
}

ui.detailCopy.addEventListener('click', () => {
  if (state.detail?.key && state.api) copyKey(state.detail.key, ui.detailCopy);
});
ui.detailEdit.addEventListener('click', () => {
  if (state.detail?.key && state.api) openEdit({ key: state.detail.key }, ui.detailEdit);
});
ui.detailLeak.addEventListener('click', () => {
  if (state.detail?.key && state.api) reportLeak(state.detail.key, ui.detailLeak);
});
ui.detailRefresh.addEventListener('click', () => {
  if (state.detail && state.api) openDetail(state.detail.keyId);
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
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey || !state.api || ui.keysView.hidden) return;
  if (document.querySelector('dialog[open]') || e.target.closest('input, textarea, select, [contenteditable]')) return;
  e.preventDefault();
  ui.search.focus();
});

setupDialogs({
  fallback: () => {
    if (!state.api) return ui.signinKey;
    if (state.view === 'detail') return ui.detailTitle;
    if (state.view === 'activity') return ui.activityTitle;
    return ui.generate;
  },
  errorText: dialogErrorText,
});

const saved = sessionStorage.getItem(STORAGE_KEY);
if (saved) signIn(saved, { restoring: true });
else showSignin();
