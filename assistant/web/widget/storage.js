// What the widget keeps in the visitor's browser (localStorage, per server and per user): the
// session id, so the conversation survives a reload, and small thumbnails of the images the
// visitor sent, by their SHA-256 (the stored history names images by it), so a redrawn thread
// shows them again. Storage may be unavailable (private modes, blocked cookies): then nothing is
// kept and the widget still works for the page's life.

var THUMBS_MAX = 24;

function makeStorage(server) {
  var prefix = "assistant-widget:v1:" + server + ":";
  function get(name) {
    try { return window.localStorage.getItem(prefix + name); } catch (e) { return null; }
  }
  function set(name, value) {
    try {
      if (value === null) window.localStorage.removeItem(prefix + name);
      else window.localStorage.setItem(prefix + name, value);
    } catch (e) { /* full or unavailable: not kept */ }
  }
  function thumbs() {
    try { return JSON.parse(get("thumbs") || "[]"); } catch (e) { return []; }
  }
  return {
    sessionId: function (user) { return get("session:" + (user || "-")); },
    setSessionId: function (user, id) { set("session:" + (user || "-"), id); },
    thumbnail: function (sha) {
      var found = thumbs().filter(function (entry) { return entry[0] === sha; })[0];
      return found ? found[1] : null;
    },
    addThumbnail: function (sha, url) {
      var kept = thumbs().filter(function (entry) { return entry[0] !== sha; });
      kept.push([sha, url]);
      set("thumbs", JSON.stringify(kept.slice(-THUMBS_MAX)));
    }
  };
}
