// The controller: the protocol's events -> the thread; the visitor's actions -> events. It holds
// the session (its id kept in storage: a reload resumes it, and the thread is drawn again from
// GET /v1/sessions/{id}/messages), the messages not yet acknowledged (each sent once, with its
// client turn id, when the socket is up; a message typed offline waits for it, and one whose turn
// id the stored history already holds is not sent again), and the response that streams.
// Voice (the mic, transcripts, spoken replies) is in voice.js, the human handoff in handoff.js.

function makeController(settings) {
  var storage = makeStorage(settings.server);
  var credentials = makeCredentials(settings.server, settings.key, settings.clientSecretTtl);
  var user = normalUser(settings.user);
  var state = {
    sessionId: storage.sessionId(user && user.id), connected: false, live: false, ever: false,
    pending: [], inFlight: null, response: null, unread: 0, attachments: [], preparing: []
  };
  var view = makeView(settings, {
    submit: function (text) { submit(text, true); },
    stop: stop,
    mic: function () { voice.toggle(); },
    files: addImages,
    reset: function () { newConversation(); },
    openChanged: function (open) {
      if (open) {
        state.unread = 0;
        view.setBadge(0);
        connection.connect();
      }
      emit(open ? "opened" : "closed", {});
    }
  });
  var thread = makeThread(view, storage, makeMarkdown());
  var connection = makeConnection(settings.server, credentials, {
    sessionId: function () { return state.sessionId; },
    sessionLost: forgetSession,
    after: function (id) { return handoff.after(id); },
    event: onEvent,
    closed: onClosed,
    failed: function (error) { showError(error.code, error.retryAfter); }
  });
  var voice = makeVoice(settings, state, view, thread, connection, showError);
  var handoff = makeHandoff(settings, view, thread, storage, connection,
    {sessionId: function () { return state.sessionId; }, message: arrived});
  credentials.follow(function () { return state.sessionId; });
  if (user) credentials.setUser(user);

  function emit(name, detail) {
    window.dispatchEvent(new CustomEvent("assistant:" + name, {detail: detail}));
  }

  function arrived(detail) { // a finished assistant message
    if (!view.isOpen()) view.setBadge(++state.unread);
    emit("message", detail);
  }

  function welcomeText() { return settings.welcome || view.t("welcome"); }

  function showError(code, retryAfter) {
    var words = errorWords(view.t, code, retryAfter);
    view.showAlert(words);
    emit("error", {code: code, message: words});
    return words;
  }

  // -- sending --------------------------------------------------------------------------------

  async function submit(text, fromComposer) {
    await Promise.all(state.preparing);
    text = String(text || "").trim();
    var images = fromComposer ? state.attachments : [];
    if (!text && images.length === 0) return;
    var content = images.map(function (image) { return {type: "input_image", image_url: image.url}; });
    if (text) content.push({type: "input_text", text: text});
    images.forEach(function (image) { if (image.sha256) storage.addThumbnail(image.sha256, image.thumb); });
    var thumbs = images.map(function (image) { return image.thumb; });
    if (fromComposer) {
      view.clearText();
      state.attachments = [];
      view.renderAttachments([], removeImage);
    }
    view.showAlert("");
    voice.unlock();
    var message = {turnId: newTurnId(), content: content, text: text, thumbs: thumbs, sent: false};
    message.handle = thread.user(text, thumbs, state.ever && !state.connected);
    state.pending.push(message);
    connection.connect();
    flush();
  }

  function flush() {
    if (!state.live || state.response || state.inFlight) return;
    var message = state.pending[0];
    if (!message) return;
    state.inFlight = message;
    message.sent = connection.send({
      type: "conversation.item.create", event_id: "evt_" + message.turnId,
      item: {id: message.turnId, type: "message", role: "user", content: message.content}
    });
    if (!message.sent) state.inFlight = null;
  }

  function acknowledged(item) {
    var message = state.inFlight;
    if (!message) return;
    state.inFlight = null;
    state.pending.shift();
    message.handle.sent(item.id);
    requestResponse();
  }

  function requestResponse() {
    state.response = {id: null, stream: null};
    view.setStreaming(true);
    thread.typing(true);
    connection.send({type: "response.create"});
  }

  function stop() {
    if (!state.response) return;
    var cancel = {type: "response.cancel"};
    if (state.response.id) cancel.response_id = state.response.id;
    connection.send(cancel);
    voice.silence();
  }

  // -- events ---------------------------------------------------------------------------------

  function onEvent(event) {
    var type = event.type;
    if (handoff.event(event)) return;
    if (type === "session.created") return onSession(event.session);
    if (type === "conversation.item.created") {
      if (event.item.role === "user" && !voice.owns(event.item)) acknowledged(event.item);
      return;
    }
    if (type === "response.created") {
      if (!state.response) state.response = {id: null, stream: null};
      state.response.id = event.response.id;
      view.setStreaming(true);
      if (!state.response.stream) thread.typing(true);
      return;
    }
    if (type === "response.output_text.delta") {
      var response = state.response || (state.response = {id: event.response_id, stream: null});
      if (!response.stream) {
        thread.typing(false);
        response.stream = thread.stream();
      }
      response.stream.append(event.delta);
      return;
    }
    if (type === "response.done") return onDone(event.response);
    if (type === "error") return onError(event.error || {});
    voice.event(event);
  }

  function onSession(session) {
    var resumed = state.sessionId === session.id;
    state.sessionId = session.id;
    storage.setSessionId(user && user.id, session.id);
    handoff.session(session);
    state.connected = true;
    state.ever = true;
    view.setStatus("");
    voice.session(session);
    if (!resumed && !thread.hasMessages()) {
      thread.clear();
      thread.welcome(welcomeText());
      redrawPending();
    }
    (resumed ? restore() : Promise.resolve()).then(function () {
      if (state.sessionId !== session.id || !state.connected) return;
      state.live = true;
      handoff.ready();
      flush();
    });
  }

  function onDone(response) {
    var current = state.response || {stream: null};
    state.response = null;
    thread.typing(false);
    view.setStreaming(false);
    var item = (response.output || [])[0];
    var text = item && item.content && item.content[0] ? item.content[0].text || "" : "";
    var status = item ? item.status : response.status;
    var annotations = citationsOf(item && item.content);
    if (!current.stream && text) current.stream = thread.stream();
    if (current.stream) current.stream.finish(text, status, item && item.id, annotations);
    if (item && text) arrived({id: item.id, role: "assistant", text: text, status: item.status,
      annotations: annotations});
    flush();
  }

  function onError(error) {
    var code = error.code || "internal_error";
    if (code === "session_not_found" || code === "response_cancel_not_active") return;
    var failed = state.inFlight && error.event_id === "evt_" + state.inFlight.turnId;
    var words = showError(code, error.retry_after_s);
    if (failed) {
      var message = state.inFlight;
      state.inFlight = null;
      state.pending.shift();
      message.handle.failed(words);
      flush();
    }
    if (!state.response) thread.typing(false);
  }

  function onClosed() {
    state.connected = state.live = false;
    if (state.inFlight) state.inFlight.sent = false;
    state.inFlight = null;
    state.pending.forEach(function (message) { message.handle.waiting(); });
    if (state.response) {
      if (state.response.stream) state.response.stream.finish(undefined, "interrupted");
      state.response = null;
    }
    thread.typing(false);
    view.setStreaming(false);
    voice.silence();
    handoff.closed();
    if (state.ever) view.setStatus(view.t("offline"));
  }

  // -- the stored thread ----------------------------------------------------------------------

  async function restore() {
    var id = state.sessionId;
    var answer;
    try {
      answer = await fetchHistory(id);
    } catch (error) {
      if (error.code === "session_not_found") forgetSession();
      return;
    }
    if (id !== state.sessionId) return;
    var messages = answer.data || [];
    var last = messages[messages.length - 1];
    var stored = {};
    messages.forEach(function (message) { if (message.turn_id) stored[message.turn_id] = true; });
    var unanswered = false;
    state.pending = state.pending.filter(function (message) {
      if (!stored[message.turnId]) return true;
      unanswered = unanswered || (last.role === "user" && last.turn_id === message.turnId);
      return false; // stored already: never sent again
    });
    thread.clear();
    if (messages.length) thread.stored(messages); else thread.welcome(welcomeText());
    redrawPending();
    if (unanswered) requestResponse();
  }

  async function fetchHistory(id) {
    var headers = await credentials.headers(id);
    var response = await fetch(settings.server + "/v1/sessions/" + encodeURIComponent(id) + "/messages",
      {headers: headers, mode: "cors", credentials: "omit", cache: "no-store"});
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      var error = body.error || {};
      throw new WidgetError(error.code || "http_" + response.status, error.message);
    }
    return body;
  }

  function redrawPending() {
    state.pending.forEach(function (message) {
      message.handle = thread.user(message.text, message.thumbs, true);
    });
  }

  function forgetSession() {
    state.sessionId = null;
    storage.setSessionId(user && user.id, null);
    credentials.invalidate();
    thread.clear();
    thread.welcome(welcomeText());
    redrawPending();
  }

  // -- images ---------------------------------------------------------------------------------

  function addImages(files) {
    files.slice(0, Math.max(0, IMAGES_PER_MESSAGE - state.attachments.length)).forEach(function (file) {
      var job = prepareImage(file, settings.imageMaxSide).then(function (image) {
        state.attachments.push(image);
        view.renderAttachments(state.attachments, removeImage);
      }, function (error) { showError(error.code); });
      state.preparing.push(job);
      job.finally(function () {
        state.preparing = state.preparing.filter(function (other) { return other !== job; });
      });
    });
  }

  function removeImage(index) {
    state.attachments.splice(index, 1);
    view.renderAttachments(state.attachments, removeImage);
  }

  // -- the session's owner --------------------------------------------------------------------

  function stopConversation() {
    voice.stop();
    connection.disconnect();
    onClosed();
    view.setStatus("");
    view.showAlert("");
    state.pending = [];
    state.ever = false;
  }

  function newConversation() {
    stopConversation();
    forgetSession();
    if (view.isOpen()) connection.connect();
  }

  function setUser(next) {
    next = normalUser(next);
    var changed = (next && next.id) !== (user && user.id);
    user = next;
    credentials.setUser(user);
    if (!changed) return;
    stopConversation();
    state.sessionId = storage.sessionId(user && user.id); // this user's own conversation, if any
    thread.clear();
    if (!state.sessionId) thread.welcome(welcomeText());
    if (state.sessionId || view.isOpen()) connection.connect();
  }

  return {
    start: function () {
      view.mount();
      if (!state.sessionId) thread.welcome(welcomeText());
      else connection.connect(); // a conversation to resume: its thread is drawn at once
      if (settings.open) view.setOpen(true);
    },
    open: function () { view.setOpen(true); },
    close: function () { view.setOpen(false); },
    toggle: function () { view.setOpen(!view.isOpen()); },
    send: function (text) { return submit(text, false); },
    setUser: setUser,
    reset: function () { // logout: the user, and every session this page kept, forgotten
      stopConversation();
      forgetSession(); // the user's
      user = null;
      credentials.setUser(null);
      newConversation();
    },
    setLocale: function (locale) {
      settings.locale = locale || navigator.language || "en";
      view.setLocale(settings.locale);
      handoff.setLocale();
      var welcome = view.thread.querySelector(".welcome");
      if (welcome && !settings.welcome) welcome.querySelector(".body").textContent = view.t("welcome");
    },
    status: function () {
      return {
        connected: state.connected, sessionId: state.sessionId, open: view.isOpen(),
        unread: state.unread, pending: state.pending.length, streaming: Boolean(state.response),
        mic: voice.active(), audio: voice.stats(), handoff: handoff.status()
      };
    }
  };
}

function normalUser(given) {
  if (!given || typeof given !== "object" || !given.id) return null;
  return {id: String(given.id), name: given.name || "", email: given.email || "", hash: given.hash || ""};
}

function newTurnId() {
  if (window.crypto && window.crypto.randomUUID) return "turn_" + window.crypto.randomUUID();
  return "turn_" + Date.now().toString(16) + Math.random().toString(16).slice(2);
}
