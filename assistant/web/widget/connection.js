// The WebSocket to /v1/realtime: one at a time, resumed with ?session_id= (and &after=, the seq of
// the last event of the session's stream seen: those since come first) after a drop (tries back
// off from 0.25 s doubling to 5 s, with jitter; at once when the browser is back online). Close
// codes are read: 4404 (the session is gone: a new one is started), 1008 (refused: the error code
// is the reason's first word; an expired secret is minted again, a refused key stops the tries
// until the visitor acts again).

var FATAL_CODES = [
  "origin_not_allowed", "invalid_api_key", "missing_credentials", "invalid_credentials",
  "insufficient_scope", "invalid_user_signature"
];

function makeConnection(server, credentials, handlers) {
  var url = server.replace(/^http/, "ws") + "/v1/realtime";
  var socket = null;
  var attempt = 0;
  var timer = null;
  var wanted = false;
  var opening = false;

  async function open() {
    clearTimeout(timer);
    timer = null;
    if (!wanted || socket || opening) return;
    opening = true;
    var sessionId = handlers.sessionId();
    var protocols = ["realtime"];
    try {
      var secret = await credentials.secret(sessionId);
      if (secret) protocols.push("assistant-secret." + secret);
    } catch (error) {
      opening = false;
      if (error.code === "session_not_found") {
        handlers.sessionLost();
        return retry(0);
      }
      handlers.failed(error);
      if (FATAL_CODES.indexOf(error.code) >= 0) wanted = false;
      return retry();
    }
    opening = false;
    if (!wanted || socket) return;
    var query = sessionId ? "?session_id=" + encodeURIComponent(sessionId) : "";
    var after = sessionId && handlers.after ? handlers.after(sessionId) : null;
    if (after) query += "&after=" + encodeURIComponent(after); // the session's events since
    var ws = new WebSocket(url + query, protocols);
    socket = ws;
    ws.onmessage = function (message) {
      if (ws !== socket || typeof message.data !== "string") return;
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type === "session.created") attempt = 0;
      handlers.event(event);
    };
    ws.onclose = function (event) {
      if (ws !== socket) return;
      socket = null;
      var code = (event.reason || "").split(":")[0];
      if (event.code === 4404) {
        handlers.sessionLost();
      } else if (event.code === 1008 && (code === "token_expired" || code === "invalid_token")) {
        credentials.invalidate();
      } else if (event.code === 1008 && FATAL_CODES.indexOf(code) >= 0) {
        handlers.failed(new WidgetError(code, event.reason));
        wanted = false;
      }
      handlers.closed(event.code);
      retry();
    };
  }

  function retry(delayMs) {
    if (!wanted || timer) return;
    var backoff = Math.min(5000, 250 * Math.pow(2, attempt)) * (0.75 + Math.random() * 0.5);
    attempt += 1;
    timer = setTimeout(open, delayMs === undefined ? backoff : delayMs);
  }

  window.addEventListener("online", function () {
    if (wanted && !socket) { attempt = 0; open(); }
  });
  window.addEventListener("offline", function () {
    if (socket) socket.close(4000, "offline"); // a dead line may not close by itself for minutes
  });

  function sendRaw(data) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(data);
    return true;
  }

  return {
    connect: function () { wanted = true; open(); },
    disconnect: function () {
      wanted = false;
      clearTimeout(timer);
      timer = null;
      if (socket) {
        var ws = socket;
        socket = null;
        ws.close(1000, "bye");
      }
    },
    send: function (event) { return sendRaw(JSON.stringify(event)); },
    sendBinary: function (buffer) { return sendRaw(buffer); },
    isOpen: function () { return Boolean(socket && socket.readyState === WebSocket.OPEN); }
  };
}
