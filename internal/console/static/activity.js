// The audit trail as a list, for the Activity page (every key, or one) and
// a key's own page. Events come from GET /v1/auditEvents, newest first, a
// page at a time ("Load more"). Each shows when, what (in words, and the
// action's name), which key, who (the admin key that acted), from where,
// which fields changed (before → after) and the detail (a leak's reason).

import {
  formatDateTime, formatQuota, formatRate, formatRelative, int64, parseDuration, parseTime, plural,
} from './format.js';

const PAGE_SIZE = 50;

export const actionWords = {
  'key.create': 'Created',
  'key.update': 'Edited',
  'key.enable': 'Switched on',
  'key.disable': 'Switched off',
  'key.regenerate': 'Regenerated',
  'key.delete': 'Deleted',
  'key.reveal': 'Secret revealed (copied)',
  'key.leak_reported': 'Reported as leaked',
  'key.reseal': 'Secret re-encrypted under a new master key',
  'admin.sign_in_failed': 'Admin sign-in refused',
};

/** Actors that are not keys. */
const actorWords = {
  bootstrap: 'Keyward, at its first start',
  'rotate-master-key': 'keyward rotate-master-key',
};

const orNone = (v, none) => (v === undefined || v === null || v === '' ? none : v);
const timeOr = (ts, none) => {
  const d = parseTime(ts);
  return d ? formatDateTime(d) : none;
};

// The fields of an event's changed_fields (the audit snapshot's names): how
// to call them, and their value in a Key (before or after).
const fields = {
  name: ['Name', (k) => orNone(k.displayName, '—')],
  description: ['Description', (k) => orNone(k.description, 'none')],
  environment: ['Environment', (k) => orNone(k.environment, '—')],
  state: ['State', (k) => ({ STATE_ACTIVE: 'active', STATE_DISABLED: 'switched off' })[k.state] ?? '—'],
  masked_key: ['Key', (k) => orNone(k.maskedKey, '—'), true],
  previous_masked_key: ['Previous key', (k) => orNone(k.previousMaskedKey, 'none'), true],
  previous_key_expire_time: ['Previous key works until', (k) => timeOr(k.previousKeyExpireTime, 'not at all')],
  expire_time: ['Expires', (k) => timeOr(k.expireTime, 'never')],
  scopes: ['Scopes', (k) => orNone((k.scopes ?? []).join(', '), 'none')],
  metadata: ['Metadata', (k) => orNone(Object.entries(k.metadata ?? {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([n, v]) => `${n}=${v}`).join(', '), 'none')],
  allowed_cidrs: ['IP allow-list', (k) => orNone((k.allowedCidrs ?? []).join(', '), 'any address')],
  rate_limit: ['Rate limit', (k) => {
    const limit = int64(k.rateLimit?.limit);
    if (limit <= 0) return 'none';
    return formatRate(limit, parseDuration(k.rateLimit.period) || 1, int64(k.rateLimit.burst) || limit);
  }],
  quota: ['Quota', (k) => (int64(k.quota?.limit) > 0 ? formatQuota(int64(k.quota.limit), k.quota.refill) : 'none')],
  recoverable: ['Recoverable', (k) => (k.recoverable ? 'yes' : 'no')],
};

const MAX_VALUE = 160;
const clip = (s) => (s.length > MAX_VALUE ? `${s.slice(0, MAX_VALUE - 1)}…` : s);

function valueElement(text, isCode, cls) {
  const e = document.createElement(isCode ? 'code' : 'span');
  e.className = cls;
  e.textContent = clip(String(text));
  return e;
}

function srOnly(text) {
  const s = document.createElement('span');
  s.className = 'sr-only';
  s.textContent = text;
  return s;
}

/** One changed field: "Name  old → new" (the arrow read as "changed to"). */
function changeItem(field, before, after) {
  const [label, value, isCode] = fields[field] ?? [field.replaceAll('_', ' '), () => null];
  const li = document.createElement('li');
  const name = document.createElement('span');
  name.className = 'change-field';
  name.textContent = label;
  li.append(name, ' ');
  const b = before ? value(before) : null;
  const a = after ? value(after) : null;
  if (b === null && a === null) return li; // a field this console does not know: named only
  if (b !== null && a !== null) {
    const arrow = document.createElement('span');
    arrow.className = 'change-arrow';
    arrow.setAttribute('aria-hidden', 'true');
    arrow.textContent = ' → ';
    li.append(valueElement(b, isCode, 'change-before'), arrow, srOnly(' changed to '), valueElement(a, isCode, 'change-after'));
  } else {
    li.append(valueElement(a ?? b, isCode, 'change-after'));
  }
  return li;
}

/** What an event's detail says, in words: a leak report's response and reason. */
function detailText(e) {
  const d = e.detail || '';
  if (!d) return '';
  if (e.action === 'key.leak_reported') {
    const m = /^(disable|regenerate): ([\s\S]*)$/.exec(d);
    if (m) return `${m[1] === 'disable' ? 'Switched off' : 'Regenerated'}. Reason: ${m[2]}`;
  }
  return d;
}

/**
 * A paged list of audit events in root. ctx gives what the list needs from
 * the page: api(), keyName(id) (a name known already, or ''),
 * lookupName(id) (a promise of the name, or of null for no such key),
 * selfKeyId(), errorText(err) (null when the error was handled elsewhere),
 * keyHref(id), and showKey (false on a key's own page: its name goes
 * without saying).
 */
export class AuditList {
  constructor(root, template, eventTemplate, ctx) {
    this.ctx = ctx;
    this.eventTemplate = eventTemplate;
    const el = template.content.firstElementChild.cloneNode(true);
    this.status = el.querySelector('.audit-status');
    this.error = el.querySelector('.audit-error');
    this.list = el.querySelector('.events');
    this.more = el.querySelector('.more');
    this.moreButton = el.querySelector('.audit-more');
    if (ctx.labelledBy) this.list.setAttribute('aria-labelledby', ctx.labelledBy);
    this.moreButton.addEventListener('click', () => this.load());
    root.replaceChildren(el);
    this.keyId = '';
    this.gen = 0;
    this.clear();
  }

  /** Forgets every event shown (sign-out), and any answer on its way. */
  clear() {
    this.gen++;
    this.abort?.abort();
    this.abort = null;
    this.token = '';
    this.hasMore = false;
    this.loading = false;
    this.count = 0;
    this.list.replaceChildren();
    this.error.hidden = true;
    this.error.textContent = '';
    this.render();
  }

  /** Shows keyId's events ('' for all) from the newest. */
  reset(keyId = '') {
    this.clear();
    this.keyId = keyId;
    this.load();
  }

  async load() {
    const api = this.ctx.api();
    if (!api || this.loading) return;
    const gen = this.gen;
    const ctrl = new AbortController();
    this.abort = ctrl;
    this.loading = true;
    this.error.hidden = true;
    this.render();
    try {
      const res = await api.auditEvents({ keyId: this.keyId, pageSize: PAGE_SIZE, pageToken: this.token }, { signal: ctrl.signal });
      if (gen !== this.gen) return;
      const items = (res.auditEvents ?? []).map((e) => this.item(e));
      this.list.append(...items);
      this.count += items.length;
      this.token = res.nextPageToken ?? '';
      this.hasMore = Boolean(this.token);
    } catch (err) {
      if (gen !== this.gen) return;
      const message = this.ctx.errorText(err);
      if (message != null) {
        this.error.textContent = `Could not load the activity: ${message}`;
        this.error.hidden = false;
      }
    } finally {
      if (gen === this.gen) {
        this.loading = false;
        this.abort = null;
        this.render();
      }
    }
  }

  render() {
    const n = this.count;
    let text = '';
    if (this.loading) text = n ? `${plural(n, 'event', 'events')} shown · loading more…` : 'Loading activity…';
    else if (!this.error.hidden && !n) text = '';
    else if (!n) text = this.keyId ? 'Nothing recorded about this key yet.' : 'Nothing recorded yet.';
    else if (this.hasMore) text = `Showing the latest ${plural(n, 'event', 'events')} · Load more for older ones`;
    else text = `Showing all ${plural(n, 'event', 'events')}`;
    this.status.textContent = text;
    this.list.setAttribute('aria-busy', String(this.loading));
    this.more.hidden = !this.hasMore;
    this.moreButton.disabled = this.loading;
  }

  /** A name that fills in when it is known. */
  keyLabel(id, known) {
    const span = document.createElement('span');
    span.className = 'name';
    span.textContent = known || this.ctx.keyName(id) || id;
    if (!known && !this.ctx.keyName(id)) {
      this.ctx.lookupName(id).then((name) => {
        if (name) span.textContent = name;
        else if (id.startsWith('key_')) span.textContent = 'a deleted key';
      });
    }
    return span;
  }

  item(e) {
    const li = this.eventTemplate.content.firstElementChild.cloneNode(true);
    const q = (sel) => li.querySelector(sel);
    li.dataset.action = e.action || '';
    li.dataset.sequence = String(e.sequence ?? '');
    if (e.keyId) li.dataset.keyId = e.keyId;
    q('.event-what').textContent = actionWords[e.action] ?? e.action;
    q('.event-code').textContent = e.action;
    q('.event-code').title = `Event ${e.sequence} of the audit trail; hash ${e.hash || '—'}`;

    const keyEl = q('.event-key');
    if (e.keyId && this.ctx.showKey) {
      const a = document.createElement('a');
      a.href = this.ctx.keyHref(e.keyId);
      a.append(this.keyLabel(e.keyId, e.after?.displayName || e.before?.displayName));
      a.title = e.keyId;
      keyEl.replaceChildren(a);
    } else {
      keyEl.remove();
    }

    const when = parseTime(e.eventTime);
    const t = q('.event-time');
    if (when) {
      t.dateTime = when.toISOString();
      t.textContent = formatRelative(when);
      q('.event-exact').textContent = formatDateTime(when);
    }

    // Who and from where.
    const by = q('.event-by');
    const actor = e.actorKeyId || '';
    if (!actor) {
      by.replaceChildren('By an unknown caller');
    } else if (actorWords[actor]) {
      by.replaceChildren(`By ${actorWords[actor]}`);
    } else {
      const code = document.createElement('code');
      code.className = 'event-actor-id';
      code.textContent = actor;
      by.replaceChildren('By ', this.keyLabel(actor, ''), ' ', code);
      if (actor === this.ctx.selfKeyId()) by.append(' (you)');
    }
    by.classList.add('event-actor');
    q('.event-from').textContent = e.sourceAddress ? ` · from ${e.sourceAddress}` : '';

    // What changed.
    const changes = [];
    if (e.action === 'key.create' && e.after) {
      changes.push(changeItem('masked_key', null, e.after));
      if (e.after.recoverable) changes.push(changeItem('recoverable', null, e.after));
    } else if (e.action === 'key.delete' && e.before) {
      changes.push(changeItem('masked_key', e.before, null));
    } else {
      for (const f of e.changedFields ?? []) changes.push(changeItem(f, e.before, e.after));
    }
    const ul = q('.event-changes');
    if (changes.length) ul.replaceChildren(...changes);
    else ul.remove();

    const detail = detailText(e);
    const p = q('.event-detail');
    p.textContent = detail;
    p.hidden = !detail;
    return li;
  }
}
