// The human handoff, the widget's side. Every connection follows its session's event stream:
// conversation.item.added (a support agent's reply: an assistant item with an `author`; a message
// another tab of the same session sent, and the bot's reply to it) and conversation.status.updated
// (bot / waiting_human / human / resolved). An item is drawn once, by its id (the stored history
// redrawn, this tab's own bubbles); a person's words as plain text, under the person's name
// (`author_name` when an item carries one, else "Support agent"). A status change is a notice in
// the thread (a polite live region). "Talk to a person" in the header sends
// conversation.handoff.request; it is offered while the bot answers, on a server that has the
// handoff (its session.created carries `last_seq`), unless the `handoff` setting is off.
// The seq of the last event seen is kept per session (storage.js); a reconnect asks for the events
// since (?after=, connection.js). Events that come while the thread is redrawn from the stored
// history wait for it (ready), and then the notice of the status as it is now is shown again.
// A resume from a seq the stream no longer keeps is told `events_lost`: nothing to say to the
// visitor, the thread is drawn from the stored history on every resume.

var HANDOFF_STATUSES = ["bot", "waiting_human", "human", "resolved"];
var SEQ_PATTERN = /^\d{1,19}(-\d{1,19})?$/;
var QUEUE_MAX = 2000; // events kept while the thread is redrawn

function makeHandoff(settings, view, thread, storage, connection, hooks) {
  // hooks: sessionId() -> the session's id; message(detail): an assistant message was drawn
  var status = "bot";       // as last told: session.created, then the stream's events
  var known = null;         // the status shown before the thread was last redrawn (null: none)
  var session = null;       // the session those are of
  var available = false;    // the server follows its sessions' events
  var ready = false;        // the thread is drawn: events are drawn as they come
  var queue = [];           // events that came while it was being redrawn
  var requesting = null;    // the event_id of the handoff request not answered yet
  var agentName = "";       // the display name of the person who joined, when an event names one
  var button = el("button", {"class": "handoff", type: "button", hidden: true});
  button.addEventListener("click", request);
  view.headControl(button);
  label();

  function label() { button.textContent = view.t("talkToPerson"); }

  function refresh() {
    button.hidden = !(settings.handoff && available && (status === "bot" || status === "resolved"));
    button.disabled = !ready || requesting !== null;
  }

  function request() {
    if (button.hidden || button.disabled) return;
    var id = "evt_handoff_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    if (!connection.send({type: "conversation.handoff.request", event_id: id})) return;
    requesting = id;
    refresh();
  }

  function remember(id, seq) {
    if (id && typeof seq === "string" && SEQ_PATTERN.test(seq)) storage.setSeq(id, seq);
  }

  function noticeOf(next) {
    var words = {waiting_human: "waitingHuman", resolved: "resolved", bot: "backToBot"}[next];
    if (words) return view.t(words);
    return view.t("joined").split("{n}").join(agentName || view.t("supportAgent"));
  }

  function onStatus(event, quiet) {
    if (HANDOFF_STATUSES.indexOf(event.status) < 0) return;
    if (event.status === "human") agentName = nameOf(event.agent_name);
    requesting = null;
    var changed = event.status !== status;
    status = event.status;
    if (changed && !quiet) thread.notice(noticeOf(status), status);
    refresh();
  }

  function onItem(item) {
    if (!item || typeof item.id !== "string" || thread.has(item.id)) return;
    var parts = Array.isArray(item.content) ? item.content : [];
    var text = textOf(parts);
    if (item.role === "user") {
      if (pendingWith(text)) return; // this tab's own, stored before a drop: its ack names it
      var thumbs = parts.filter(function (part) { return part && part.type === "input_image"; })
        .map(function (part) { return storage.thumbnail(part.image_sha256); });
      if (text || thumbs.length) thread.user(text, thumbs, false).sent(item.id);
      return;
    }
    if (item.role !== "assistant" || !text) return;
    if (item.author) thread.person(text, item.id, String(item.author), nameOf(item.author_name));
    else thread.assistant(text, item.status, item.id, citationsOf(parts));
    hooks.message({id: item.id, role: "assistant", text: text, status: item.status || "completed",
      author: item.author ? String(item.author) : null});
  }

  function pendingWith(text) {
    var nodes = view.thread.querySelectorAll(".msg.user.pending .body");
    for (var i = 0; i < nodes.length; i++) if (nodes[i].textContent === text) return true;
    return false;
  }

  function apply(event, quiet) {
    if (event.type === "conversation.status.updated") onStatus(event, quiet);
    else onItem(event.item);
    remember(session, event.seq);
  }

  return {
    // The seq to resume the session's events from (connection.js), or null.
    after: function (id) {
      var seq = storage.seq(id);
      return seq && SEQ_PATTERN.test(seq) ? seq : null;
    },
    // session.created: the thread is redrawn next (or not: a new session), then ready().
    session: function (info) {
      if (info.id !== session) known = null;
      session = info.id;
      available = typeof info.last_seq === "string";
      if (HANDOFF_STATUSES.indexOf(info.status) >= 0) status = info.status;
      if (available && !storage.seq(session)) remember(session, info.last_seq);
      ready = false;
      queue = [];
      refresh();
    },
    ready: function () {
      var waiting = queue;
      queue = [];
      ready = true;
      waiting.forEach(function (event) { apply(event, true); });
      var last = thread.lastNotice();
      var back = status === "bot" && known !== null && known !== "bot" && last !== "bot";
      if ((status !== "bot" && last !== status) || back) thread.notice(noticeOf(status), status);
      known = status;
      refresh();
    },
    // Every event: true when it was the handoff's (drawn now, or once the thread is ready).
    event: function (event) {
      var type = event.type;
      if (type === "error") {
        var error = event.error || {};
        if (error.code === "events_lost") return true; // the stored history is drawn anyway
        if (requesting && error.event_id === requesting) requesting = null;
        refresh();
        return false;
      }
      if (type !== "conversation.item.added" && type !== "conversation.status.updated") return false;
      if (hooks.sessionId() !== session) return true;
      if (ready) apply(event, false);
      else if (queue.length < QUEUE_MAX) queue.push(event);
      return true;
    },
    closed: function () {
      if (ready) known = status;
      ready = false;
      requesting = null;
      refresh();
    },
    setLocale: label,
    status: function () {
      return {status: status, offered: !button.hidden, seq: session ? storage.seq(session) : null};
    }
  };
}

function textOf(parts) {
  return parts.map(function (part) {
    if (!part) return "";
    if (part.type === "input_audio") return part.transcript || "";
    return part.type === "input_text" || part.type === "output_text" ? part.text || "" : "";
  }).filter(Boolean).join("\n");
}

function nameOf(value) {
  return typeof value === "string" ? value.trim().slice(0, 80) : "";
}
