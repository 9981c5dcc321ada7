// A key's usage over the last 24 hours, from GET /v1/keys/{id}/usage:
// validations per hour, valid and refused stacked, drawn as SVG element by
// element (no markup strings), with a text summary and a table for those who
// do not see the chart.

import { formatDateTime, int64 } from './format.js';

const HOUR_MS = 3600 * 1000;
export const CHART_HOURS = 24;

const hourFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });

/** Why validations were refused, in words; the keys are ValidateResponse.Reason names. */
export const reasonWords = {
  REASON_NOT_FOUND: 'unknown key',
  REASON_MALFORMED: 'malformed',
  REASON_DISABLED: 'switched off',
  REASON_EXPIRED: 'expired',
  REASON_INSUFFICIENT_SCOPE: 'missing scope',
  REASON_WRONG_ENVIRONMENT: 'wrong environment',
  REASON_IP_NOT_ALLOWED: 'address not allowed',
  REASON_RATE_LIMITED: 'rate-limited',
  REASON_USAGE_EXCEEDED: 'quota used up',
};

/**
 * The start of the chart's first hour. Keyward counts by whole UTC hours;
 * the chart ends with the current, unfinished one.
 */
export function chartStart(now = Date.now()) {
  return new Date(Math.floor(now / HOUR_MS) * HOUR_MS - (CHART_HOURS - 1) * HOUR_MS);
}

/**
 * Sums buckets into the chart's hours: {slots: [{start, valid, refused}],
 * valid, refused, refusedBy: {reason: count}}. Buckets outside are ignored.
 */
export function usageSeries(buckets, start) {
  const slots = Array.from({ length: CHART_HOURS }, (_, i) => ({
    start: new Date(start.getTime() + i * HOUR_MS), valid: 0, refused: 0,
  }));
  const refusedBy = {};
  for (const b of buckets ?? []) {
    const t = new Date(b.startTime).getTime();
    const i = Math.floor((t - start.getTime()) / HOUR_MS);
    if (!(i >= 0 && i < CHART_HOURS)) continue;
    for (const [reason, value] of Object.entries(b.counts ?? {})) {
      const n = int64(value);
      if (reason === 'REASON_VALID') {
        slots[i].valid += n;
      } else {
        slots[i].refused += n;
        refusedBy[reason] = (refusedBy[reason] ?? 0) + n;
      }
    }
  }
  const valid = slots.reduce((s, x) => s + x.valid, 0);
  const refused = slots.reduce((s, x) => s + x.refused, 0);
  return { slots, valid, refused, refusedBy };
}

/** "42 valid, 5 refused in the last 24 h". */
export function usageSummary(series) {
  return `${series.valid.toLocaleString()} valid, ${series.refused.toLocaleString()} refused in the last 24 h`;
}

/** "Refused: 3 switched off, 2 rate-limited.", or '' when nothing was refused. */
export function refusalSummary(series) {
  const parts = Object.entries(series.refusedBy)
    .filter(([, n]) => n > 0)
    .sort(([, a], [, b]) => b - a)
    .map(([reason, n]) => `${n.toLocaleString()} ${reasonWords[reason] ?? reason.replace(/^REASON_/, '').toLowerCase().replaceAll('_', ' ')}`);
  return parts.length ? `Refused: ${parts.join(', ')}.` : '';
}

function hourRange(slot) {
  return `${hourFormat.format(slot.start)}–${hourFormat.format(new Date(slot.start.getTime() + HOUR_MS))}`;
}

/** Axis labels: the first hour's start, the middle one's, as local times. */
export function axisLabels(series) {
  const first = series.slots[0].start;
  const mid = series.slots[Math.floor(CHART_HOURS / 2)].start;
  return [hourFormat.format(first), hourFormat.format(mid)];
}

/**
 * Draws the bars into svg (an <svg> element cloned from the page, whose
 * namespace the new elements take), replacing what it held.
 */
export function drawChart(svg, series) {
  const ns = svg.namespaceURI;
  const make = (tag, attrs) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  const width = 240 / CHART_HOURS;
  const height = 100;
  const peak = Math.max(1, ...series.slots.map((s) => s.valid + s.refused));
  // Any use at all gets a visible sliver.
  const scale = (n) => (n > 0 ? Math.max(1.5, (n / peak) * (height - 2)) : 0);
  const children = [];
  series.slots.forEach((slot, i) => {
    const g = make('g', { class: 'slot' });
    const title = make('title', {});
    title.textContent = `${hourRange(slot)}: ${slot.valid.toLocaleString()} valid, ${slot.refused.toLocaleString()} refused`;
    g.append(title, make('rect', { class: 'hit', x: i * width, y: 0, width, height }));
    const vh = scale(slot.valid);
    const rh = scale(slot.refused);
    if (vh) g.append(make('rect', { class: 'bar valid', x: i * width + 1.5, y: height - vh, width: width - 3, height: vh }));
    if (rh) g.append(make('rect', { class: 'bar refused', x: i * width + 1.5, y: height - vh - rh, width: width - 3, height: rh }));
    if (i === CHART_HOURS - 1) g.classList.add('current');
    children.push(g);
  });
  children.push(make('line', { class: 'baseline', x1: 0, y1: height - 0.5, x2: 240, y2: height - 0.5 }));
  svg.replaceChildren(...children);
  const busiest = series.valid + series.refused ? `; at most ${peak.toLocaleString()} in one hour` : '';
  svg.setAttribute('aria-label', `Chart: ${usageSummary(series)}${busiest}.`);
  return peak;
}

/** Table rows for the hours with any validation, newest first. */
export function tableRows(series) {
  const rows = series.slots.filter((s) => s.valid || s.refused).reverse().map((slot) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = hourRange(slot);
    th.title = formatDateTime(slot.start);
    const v = document.createElement('td');
    v.textContent = slot.valid.toLocaleString();
    const r = document.createElement('td');
    r.textContent = slot.refused.toLocaleString();
    tr.append(th, v, r);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 3;
    td.textContent = 'No validations in the last 24 hours.';
    tr.append(td);
    rows.push(tr);
  }
  return rows;
}
