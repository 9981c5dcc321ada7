// Small pure helpers: dates, scopes, key shapes.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** A Keyward secret as its format defines it (see README, "Key format"). */
export const SECRET_PATTERN = /^kw_[a-z][a-z0-9]{0,15}_[0-9A-Za-z]{49}$/;

export function looksLikeSecret(s) {
  return SECRET_PATTERN.test(s.trim());
}

/** Parses a timestamp from the API; null for none. */
export function parseTime(ts) {
  if (!ts) return null;
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatDateTime(d) {
  return dateTime.format(d);
}

const units = [
  ['year', 365 * 24 * 3600],
  ['month', 30 * 24 * 3600],
  ['week', 7 * 24 * 3600],
  ['day', 24 * 3600],
  ['hour', 3600],
  ['minute', 60],
];

/** "3 minutes ago", "in 2 weeks", "now". Within 5% of a unit counts as
 * one: a grace period of an hour, shown a second later, is "in 1 hour". */
export function formatRelative(d, now = new Date()) {
  const secs = (d.getTime() - now.getTime()) / 1000;
  for (const [unit, size] of units) {
    if (Math.abs(secs) >= size * 0.95) return relative.format(Math.round(secs / size), unit);
  }
  return relative.format(0, 'second');
}

/** Splits "a, b c" into ["a", "b", "c"], dropping empties and duplicates. */
export function parseScopes(text) {
  const out = [];
  for (const s of text.split(/[\s,]+/)) {
    if (s && !out.includes(s)) out.push(s);
  }
  return out;
}

/** The value for an <input type="datetime-local"> showing d in local time. */
export function toLocalInput(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

/** Seconds in a protobuf Duration as JSON ("3600s", "1.5s"); NaN if not one. */
export function parseDuration(s) {
  const m = /^(-?\d+(?:\.\d+)?)s$/.exec(String(s ?? ''));
  return m ? Number(m[1]) : NaN;
}

/** An int64 from the API (JSON string or number); 0 for none. */
export function int64(v) {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
}

/** A whole number typed into a field: null if empty, NaN if not one. */
export function parseCount(text) {
  const t = String(text).trim().replace(/[\s,_]/g, '');
  if (!t) return null;
  return /^\d+$/.test(t) ? Number(t) : NaN;
}

/** One CIDR (or address) per line; commas and spaces separate too. */
export function parseList(text) {
  const out = [];
  for (const s of text.split(/[\s,]+/)) {
    if (s && !out.includes(s)) out.push(s);
  }
  return out;
}

const periodUnits = { 1: 's', 60: 'min', 3600: 'h', 86400: 'day' };
const periodWords = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day' };

/** "second", "minute", …, or "10 seconds" for another period in seconds. */
export function periodWord(secs) {
  return periodWords[secs] ?? `${secs.toLocaleString()} seconds`;
}

/** A rate limit, compactly: "100/s · burst 200", "5,000/day". */
export function formatRate(limit, periodSecs, burst) {
  const per = periodUnits[periodSecs] ? `/${periodUnits[periodSecs]}` : ` per ${periodSecs.toLocaleString()}s`;
  let out = `${limit.toLocaleString()}${per}`;
  if (burst && burst !== limit) out += ` · burst ${burst.toLocaleString()}`;
  return out;
}

export const refillWords = { REFILL_DAILY: 'daily', REFILL_MONTHLY: 'monthly' };

/** A quota, compactly: "quota 742/1,000 daily"; without remaining, "quota 1,000 daily". */
export function formatQuota(limit, refill, remaining) {
  const count = remaining === undefined ? limit.toLocaleString() : `${remaining.toLocaleString()}/${limit.toLocaleString()}`;
  return `quota ${count} ${refillWords[refill] ?? 'total'}`;
}
