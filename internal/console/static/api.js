// Keyward's REST API, as the console uses it. Every call carries the admin
// key as a Bearer header. Searches use POST /v1/keys:search, so a pasted
// secret travels in a request body and never in a URL (URLs end up in logs
// and browser history).

/** An error answer from Keyward ({code, message, details}), or no answer. */
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // HTTP status; 0 when the server could not be reached
    this.code = code; // gRPC code
    this.details = details;
  }
  get unauthenticated() { return this.status === 401; }
  get forbidden() { return this.status === 403; }
  get notFound() { return this.status === 404; }
  get aborted() { return this.code === 10; } // ABORTED: the etag no longer matches
  get alreadyExists() { return this.code === 6; }
  get failedPrecondition() { return this.code === 9; } // e.g. no master key, or a key that is not recoverable
  get tooMany() { return this.code === 8 || this.status === 429; } // RESOURCE_EXHAUSTED

  /** Seconds to wait before a retry, from a google.rpc.RetryInfo detail; 0 if none. */
  get retryAfterSeconds() {
    for (const d of Array.isArray(this.details) ? this.details : []) {
      if (!d || !String(d['@type'] || '').endsWith('google.rpc.RetryInfo')) continue;
      const m = /^(\d+(?:\.\d+)?)s$/.exec(String(d.retryDelay ?? ''));
      if (m) return Math.ceil(Number(m[1]));
    }
    return 0;
  }

  /**
   * The fields an INVALID_ARGUMENT names, from its google.rpc.BadRequest
   * detail: [{field, description}], field as the proto names it
   * ("allowed_cidrs", "rate_limit.burst"). Falls back to the message's
   * "invalid <field>: <reason>" form.
   */
  get fieldViolations() {
    if (this.code !== 3) return [];
    const out = [];
    for (const d of Array.isArray(this.details) ? this.details : []) {
      if (!d || !String(d['@type'] || '').endsWith('google.rpc.BadRequest')) continue;
      for (const v of d.fieldViolations ?? []) {
        if (v && typeof v.field === 'string' && v.field) out.push({ field: v.field, description: String(v.description || '') });
      }
    }
    if (!out.length) {
      const m = /^invalid ([a-z_][a-z0-9_.[\]]*): (.+)$/s.exec(this.message);
      if (m) out.push({ field: m[1], description: m[2] });
    }
    return out;
  }
}

const keyPath = (id) => `/v1/keys/${encodeURIComponent(id)}`;

export class Api {
  /** @param {string} adminKey */
  constructor(adminKey) {
    this.adminKey = adminKey;
  }

  async request(method, path, body, { signal } = {}) {
    const headers = { authorization: `Bearer ${this.adminKey}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new ApiError(0, 14, 'Could not reach Keyward. Check that the server is running, then try again.');
    }
    const text = await res.text().catch(() => '');
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const message = data && typeof data.message === 'string' && data.message
        ? data.message
        : `Keyward answered ${res.status} ${res.statusText}`.trim();
      throw new ApiError(res.status, data && Number.isInteger(data.code) ? data.code : 0, message,
        (data && data.details) || []);
    }
    return data ?? {};
  }

  /** ListKeys through POST /v1/keys:search → {keys, nextPageToken}. */
  search(query, pageSize, pageToken = '', opts = {}) {
    return this.request('POST', '/v1/keys:search', { query, pageSize, pageToken }, opts);
  }

  /** CreateKey → {key, secret}. requestId makes a retry safe (AIP-155). */
  create(key, requestId) {
    const q = requestId ? `?request_id=${encodeURIComponent(requestId)}` : '';
    return this.request('POST', `/v1/keys${q}`, key);
  }

  get(id) { return this.request('GET', keyPath(id)); }

  /**
   * UpdateKey: changes exactly the fields named in mask (proto names), so a
   * field can be cleared by naming it and leaving it out of key.
   */
  update(id, key, mask) {
    const q = `?update_mask=${encodeURIComponent(mask.join(','))}`;
    return this.request('PATCH', `${keyPath(id)}${q}`, key);
  }

  enable(id) { return this.request('POST', `${keyPath(id)}:enable`, {}); }
  disable(id) { return this.request('POST', `${keyPath(id)}:disable`, {}); }
  /**
   * RegenerateKey → {key, secret}. With graceSeconds, the replaced secret
   * keeps working that long beside the new one.
   */
  regenerate(id, { graceSeconds = 0 } = {}) {
    return this.request('POST', `${keyPath(id)}:regenerate`, graceSeconds ? { gracePeriod: `${graceSeconds}s` } : {});
  }
  remove(id) { return this.request('DELETE', keyPath(id)); }

  /** RevealKey → {key, secret}: the secret of a recoverable key, again. Audited and rate-limited. */
  reveal(id) { return this.request('POST', `${keyPath(id)}:reveal`, {}); }

  /**
   * ReportLeakedKey → {key, secret?}. action is ACTION_DISABLE or
   * ACTION_REGENERATE; the key is named by keyId (or by the leaked secret,
   * which then travels in the body only).
   */
  reportLeak({ keyId, secret, action, reason }) {
    const body = { action, reason };
    if (keyId) body.keyId = keyId;
    else body.secret = secret;
    return this.request('POST', '/v1/keys:reportLeaked', body);
  }

  /** ListAuditEvents, newest first → {auditEvents, nextPageToken}. */
  auditEvents({ keyId = '', pageSize = 50, pageToken = '' } = {}, opts = {}) {
    const q = new URLSearchParams();
    if (keyId) q.set('key_id', keyId);
    q.set('page_size', String(pageSize));
    if (pageToken) q.set('page_token', pageToken);
    return this.request('GET', `/v1/auditEvents?${q}`, undefined, opts);
  }

  /** GetKeyUsage → {buckets: [{startTime, counts}], lastUsedTime}. */
  usage(id, { startTime, endTime } = {}, opts = {}) {
    const q = new URLSearchParams();
    if (startTime) q.set('start_time', startTime.toISOString());
    if (endTime) q.set('end_time', endTime.toISOString());
    return this.request('GET', `${keyPath(id)}/usage${q.size ? `?${q}` : ''}`, undefined, opts);
  }
}
