// Credentials. Open mode (no key, a server on loopback): nothing to send. With a publishable key
// (pk_...): a short-lived client secret, minted at POST /v1/realtime/client_secrets with the key as
// bearer (the server checks the page's Origin against the key's origins), bound to the session once
// there is one, and minted again before it expires. The secret travels in a WebSocket subprotocol
// and in REST's Authorization header, never in a URL.

function WidgetError(code, message, retryAfter) {
  this.code = code;
  this.message = message || code;
  this.retryAfter = retryAfter || null;
}

function makeCredentials(server, key, ttlSeconds) {
  var current = null; // {value, expiresAt (local ms), sessionId}
  var user = null;
  var inFlight = null;
  var timer = null;
  var sessionOf = function () { return null; };
  var marginMs = Math.min(60, ttlSeconds * 0.25) * 1000;

  function usable(sessionId) {
    return current !== null && current.expiresAt - Date.now() > marginMs &&
      (current.sessionId === null || current.sessionId === sessionId);
  }

  async function mint(sessionId) {
    var body = {expires_after: {seconds: ttlSeconds}};
    if (sessionId) body.session_id = sessionId;
    if (user && user.id && user.hash) body.user = {id: String(user.id), signature: String(user.hash)};
    var started = Date.now();
    var response;
    try {
      response = await fetch(server + "/v1/realtime/client_secrets", {
        method: "POST", mode: "cors", credentials: "omit", cache: "no-store",
        headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
        body: JSON.stringify(body)
      });
    } catch (e) {
      // Refused before any answer could be read: a CORS preflight the server turned down (this
      // page's origin is not the key's) or no server at all; an opaque request tells them apart.
      var reachable = await fetch(server + "/healthz", {mode: "no-cors", credentials: "omit", cache: "no-store"})
        .then(function () { return true; }, function () { return false; });
      throw new WidgetError(reachable ? "origin_not_allowed" : "network", String(e));
    }
    var answer = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      var error = answer.error || {};
      throw new WidgetError(error.code || "http_" + response.status, error.message, error.retry_after_s);
    }
    // The lifetime by the server's answer, counted on this clock (the two clocks may differ).
    var lifetime = answer.expires_at - started / 1000;
    if (!(lifetime > 0 && lifetime <= ttlSeconds)) lifetime = ttlSeconds;
    current = {value: answer.value, expiresAt: started + lifetime * 1000, sessionId: sessionId || null};
    schedule(lifetime * 1000 - marginMs);
    return current.value;
  }

  function schedule(delayMs) {
    clearTimeout(timer);
    timer = setTimeout(function () {
      secret(sessionOf(), true).catch(function () { schedule(5000); });
    }, Math.max(1000, delayMs));
  }

  async function secret(sessionId, renew) {
    if (!key) return null;
    if (!renew && usable(sessionId)) return current.value;
    if (!inFlight) {
      inFlight = mint(sessionId).finally(function () { inFlight = null; });
    }
    return inFlight;
  }

  return {
    enabled: Boolean(key),
    secret: secret,
    headers: async function (sessionId) {
      var value = await secret(sessionId);
      return value ? {"Authorization": "Bearer " + value} : {};
    },
    follow: function (getSession) { sessionOf = getSession; },
    invalidate: function () { current = null; },
    setUser: function (next) { user = next; current = null; },
    stop: function () { clearTimeout(timer); current = null; }
  };
}
