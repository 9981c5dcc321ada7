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

/** "3 minutes ago", "in 2 weeks", "now". */
export function formatRelative(d, now = new Date()) {
  const secs = (d.getTime() - now.getTime()) / 1000;
  for (const [unit, size] of units) {
    if (Math.abs(secs) >= size) return relative.format(Math.round(secs / size), unit);
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
