// The open conversation: its state (status, who holds it, reason, summary) and whole history
// (GET /v1/conversations/{id}), then its events live from that read's last_seq (the customer's
// messages, the bot's replies, agents' replies, status changes). The actions: Claim (a 409:
// another agent took it), the reply box (POST .../messages; enabled only while this agent holds
// the conversation; Enter sends, Shift+Enter a new line), Hand back, Resolve.

function makeConversation(api, me, errors, handlers) {
  var section = byId("conversation");
  var title = byId("conversation-title");
  var stateLine = byId("conversation-state");
  var reasonLine = byId("conversation-reason");
  var feedState = byId("conversation-feed");
  var buttons = {claim: byId("claim"), handback: byId("handback"), resolve: byId("resolve")};
  var form = byId("reply-form");
  var input = byId("reply");
  var send = byId("send");
  var history = makeHistory(api, me);
  var current = null; // {id, status, agent, reason, summary}
  var feed = null;
  var busy = false;
  var opened = 0;

  function mine() { return Boolean(current) && current.status === "human" && current.agent === me(); }

  function render() {
    if (!current) return;
    var status = current.status;
    stateLine.textContent = status ? statusText(status, current.agent, me()) : "Loading…";
    stateLine.className = "state " + (status || "");
    reasonLine.textContent = current.reason ? reasonText(current.reason) : "";
    buttons.claim.disabled = busy || status !== "waiting_human";
    var closable = status === "waiting_human" || mine();
    buttons.handback.disabled = busy || !closable;
    buttons.resolve.disabled = busy || !closable;
    input.disabled = !mine();
    send.disabled = busy || !mine();
    input.placeholder = mine() ? "Your reply" : "Claim the conversation to reply";
  }

  function update(state) {
    if (!current || !state) return;
    ["status", "agent", "reason", "summary"].forEach(function (field) {
      if (field in state) current[field] = state[field];
    });
    if (current.status !== "human") current.agent = null;
    render();
  }

  function onEvent(event) {
    if (event.type === "conversation.item.added") history.add(event.data.item);
    else if (event.type === "conversation.status.updated") update(event.data);
  }

  async function open(id) {
    close();
    var ticket = ++opened;
    current = {id: id};
    section.hidden = false;
    title.textContent = "Conversation " + id.slice(-8);
    history.clear(id);
    render();
    title.focus();
    var detail;
    try {
      detail = await api.get(conversationPath(id));
    } catch (error) {
      if (ticket === opened) handlers.failed(error);
      return;
    }
    if (ticket !== opened) return;
    update(detail);
    history.all(detail.messages);
    feed = makeFeed(api, conversationPath(id) + "/events", detail.last_seq, {
      event: onEvent,
      state: function (state) { feedState.textContent = state === "live" ? "Live" : "Reconnecting…"; },
      failed: handlers.failed
    });
  }

  function close() {
    opened += 1;
    if (feed) feed.stop();
    feed = null;
    current = null;
    feedState.textContent = "";
    history.clear(null);
    section.hidden = true;
  }

  function actionError(action, error) {
    if (action === "claim" && error.status === 409) {
      return "Another agent took it (" + error.code + ")";
    }
    if (error.code === "conversation_not_yours") {
      return "Another agent holds this conversation (" + error.code + ")";
    }
    return error;
  }

  async function act(action) {
    if (!current || busy) return;
    var id = current.id;
    errors.clear();
    busy = true;
    render();
    try {
      var state = await api.post(conversationPath(id) + "/" + action);
      if (current && current.id === id) update(state);
      handlers.changed(state);
      if (action === "claim") input.focus();
    } catch (error) {
      if (refusedKey(error)) return handlers.failed(error);
      errors.show(actionError(action, error));
      if (error.status === 409) refresh(id);
    } finally {
      busy = false;
      render();
    }
  }

  async function refresh(id) {
    try {
      var state = await api.get(conversationPath(id));
      if (current && current.id === id) update(state);
      handlers.changed(state);
    } catch (error) { /* the action's own error is shown */ }
  }

  async function reply() {
    var text = input.value.trim();
    if (!text || !mine() || busy) return;
    var id = current.id;
    errors.clear();
    busy = true;
    render();
    try {
      var answer = await api.post(conversationPath(id) + "/messages", {text: text});
      input.value = "";
      if (current && current.id === id) history.add(answer.item);
    } catch (error) {
      if (refusedKey(error)) return handlers.failed(error);
      errors.show(actionError("reply", error));
    } finally {
      busy = false;
      render();
      if (mine()) input.focus();
    }
  }

  Object.keys(buttons).forEach(function (action) {
    buttons[action].addEventListener("click", function () { act(action); });
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    reply();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      reply();
    }
  });

  return {
    open: open,
    close: close,
    current: function () { return current && current.id; }
  };
}
