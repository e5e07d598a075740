// A live feed of server-sent events (the queue's, or one conversation's), read with fetch and a
// ReadableStream as `id:` / `event:` / `data:` lines. A dropped stream is opened again after a
// short backoff (0.5 s doubling to 5 s) from the last `id:` it was handed (`?after=<seq>`): the
// server sends only what follows it, so nothing is missed and nothing comes twice. A refused
// key (401/403) or a gone conversation (404) is not retried: `failed` is told.
//   var feed = makeFeed(api, "/v1/queue/events", lastSeq, {event, state, failed});  feed.stop();
//   event({id, type, data})   state("live" | "reconnecting")   failed(ConsoleError)

function makeFeed(api, path, after, handlers) {
  var last = after || "0";
  var stopped = false;
  var controller = null;
  var timer = null;
  var attempt = 0;

  async function open() {
    timer = null;
    if (stopped) return;
    controller = new AbortController();
    try {
      var response = await api.stream(path + "?after=" + encodeURIComponent(last), controller.signal);
      attempt = 0;
      handlers.state("live");
      await read(response.body);
    } catch (error) {
      if (stopped) return;
      if (error instanceof ConsoleError && [401, 403, 404].indexOf(error.status) >= 0) {
        stopped = true;
        handlers.failed(error);
        return;
      }
    }
    if (stopped) return;
    handlers.state("reconnecting");
    var delay = Math.min(5000, 500 * Math.pow(2, attempt)) * (0.8 + Math.random() * 0.4);
    attempt += 1;
    timer = setTimeout(open, delay);
  }

  async function read(body) {
    var reader = body.pipeThrough(new TextDecoderStream()).getReader();
    var buffer = "";
    var event = {id: "", type: "message", data: []};
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done || stopped) return;
      buffer += chunk.value;
      var lines = buffer.split("\n");
      buffer = lines.pop();
      for (var i = 0; i < lines.length; i++) {
        var line = lines[i].replace(/\r$/, "");
        if (line === "") {
          if (event.data.length) dispatch(event);
          event = {id: "", type: "message", data: []};
          continue;
        }
        if (line.charAt(0) === ":") continue; // a comment (keep-alive)
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") event.id = value;
        else if (field === "event") event.type = value;
        else if (field === "data") event.data.push(value);
      }
    }
  }

  function dispatch(event) {
    if (stopped) return;
    var data;
    try { data = JSON.parse(event.data.join("\n")); } catch (e) { return; }
    try {
      handlers.event({id: event.id, type: event.type, data: data});
    } catch (error) {
      setTimeout(function () { throw error; }); // a bug of the page: reported, the feed goes on
    }
    if (event.id) last = event.id;
  }

  open();
  return {
    stop: function () {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
    },
    last: function () { return last; }
  };
}
