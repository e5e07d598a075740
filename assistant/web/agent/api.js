// The agents' REST on this page's own server, with the key as `Authorization: Bearer` on every
// request (never in a URL, no cookies, no referrer): JSON calls, an image's bytes, and the
// response of an event stream for feed.js (read with fetch: EventSource cannot send a header).
// A failure is a ConsoleError with the HTTP status and the API's own code and message.

function ConsoleError(status, code, message) {
  this.status = status;
  this.code = code;
  this.message = message;
}

function refusedKey(error) {
  return error instanceof ConsoleError && (error.status === 401 || error.status === 403);
}

function makeApi(keyOf) {
  async function send(method, path, options) {
    var headers = {"Accept": options.accept || "application/json"};
    var key = keyOf();
    if (key) headers["Authorization"] = "Bearer " + key;
    var init = {method: method, headers: headers, cache: "no-store", credentials: "omit",
      referrerPolicy: "no-referrer", signal: options.signal};
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    var response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new ConsoleError(0, "network", "The server cannot be reached");
    }
    if (!response.ok) {
      var body = await response.json().catch(function () { return {}; });
      var problem = body.error || {};
      throw new ConsoleError(response.status, problem.code || "http_" + response.status,
        problem.message || response.statusText || "The request failed");
    }
    return response;
  }

  return {
    get: async function (path) { return (await send("GET", path, {})).json(); },
    post: async function (path, body) { return (await send("POST", path, {body: body})).json(); },
    blob: async function (path) { return (await send("GET", path, {accept: "image/*"})).blob(); },
    stream: function (path, signal) {
      return send("GET", path, {accept: "text/event-stream", signal: signal});
    }
  };
}
