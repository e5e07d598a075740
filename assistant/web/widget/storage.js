// What the widget keeps in the visitor's browser (localStorage, per server and per user): the
// session id, so the conversation survives a reload, and small thumbnails of the images the
// visitor sent, by their SHA-256 (the stored history names images by it), so a redrawn thread
// shows them again; and, for the last few sessions, the seq of the last event of the session's
// stream the widget saw (handoff.js: a reconnect asks for the events since, ?after=). Storage
// may be unavailable (private modes, blocked cookies): then nothing is kept and the widget still
// works for the page's life.

var THUMBS_MAX = 24;
var SEQS_MAX = 8; // sessions whose last seen seq is kept

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
  function list(name) {
    var value;
    try { value = JSON.parse(get(name) || "[]"); } catch (e) { value = null; }
    return Array.isArray(value) ? value : [];
  }
  function thumbs() { return list("thumbs"); }
  return {
    sessionId: function (user) { return get("session:" + (user || "-")); },
    setSessionId: function (user, id) { set("session:" + (user || "-"), id); },
    seq: function (session) {
      var found = list("seqs").filter(function (entry) { return entry[0] === session; })[0];
      return found ? found[1] : null;
    },
    setSeq: function (session, seq) {
      var kept = list("seqs").filter(function (entry) { return entry[0] !== session; });
      kept.push([session, seq]);
      set("seqs", JSON.stringify(kept.slice(-SEQS_MAX)));
    },
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
