// The live queue: the tenant's conversations waiting for a person, and those this agent holds,
// each with why it was handed off, its summary and since when. Listed once (GET
// /v1/conversations?status=..., whose last_seq is the queue stream's position then), then kept
// right from GET /v1/queue/events?after=<last_seq>: every status change of the tenant's
// conversations, each with the conversation's id and whole state, in order. The agent's own
// first, then the longest waiting.

function makeQueue(api, me, handlers) {
  var list = byId("queue-list");
  var empty = byId("queue-empty");
  var title = byId("queue-title");
  var feedState = byId("queue-feed");
  var entries = {}; // conversation id -> its state
  var feed = null;
  var clock = null;
  var selected = null;

  function wanted(state) {
    return state.status === "waiting_human" || (state.status === "human" && state.agent === me());
  }

  function put(state) {
    if (!state || !state.id) return;
    if (wanted(state)) entries[state.id] = state;
    else delete entries[state.id];
    render();
  }

  function order(a, b) {
    var mineA = a.status === "human" ? 0 : 1;
    var mineB = b.status === "human" ? 0 : 1;
    if (mineA !== mineB) return mineA - mineB;
    return (a.handoff_at || a.since || 0) - (b.handoff_at || b.since || 0);
  }

  function entry(state) {
    var when = state.status === "human" ? state.since : state.handoff_at || state.since;
    var button = el("button", {"type": "button", "class": "entry " + state.status, "data-id": state.id,
      "aria-current": state.id === selected ? "true" : null}, [
      el("span", {"class": "entry-head"}, [
        el("span", {"class": "badge " + state.status, text: statusText(state.status, state.agent, me())}),
        el("span", {"class": "entry-reason", text: reasonText(state.reason)}),
        el("time", {"datetime": when ? new Date(when).toISOString() : null, text: ago(when)})
      ]),
      el("span", {"class": "summary", text: state.summary || "(no messages yet)"})
    ]);
    button.addEventListener("click", function () { handlers.open(state.id); });
    return el("li", {}, [button]);
  }

  function render() {
    var focused = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest("#queue-list .entry") : null;
    var focusId = focused ? focused.getAttribute("data-id") : null;
    var states = Object.keys(entries).map(function (id) { return entries[id]; }).sort(order);
    list.replaceChildren.apply(list, states.map(entry));
    empty.hidden = states.length > 0;
    title.textContent = states.length ? "Queue (" + states.length + ")" : "Queue";
    if (focusId) {
      var again = list.querySelector('.entry[data-id="' + CSS.escape(focusId) + '"]');
      if (again) again.focus();
    }
  }

  function fromEvent(data) {
    return {id: data.conversation, status: data.status, agent: data.agent || null,
      reason: data.reason || null, summary: data.summary || "", since: data.since,
      handoff_at: data.handoff_at};
  }

  async function start() {
    stop();
    var waiting = await api.get("/v1/conversations?status=waiting_human&limit=500");
    var held = await api.get("/v1/conversations?status=human&limit=500");
    entries = {};
    waiting.data.concat(held.data).forEach(function (state) { if (wanted(state)) entries[state.id] = state; });
    render();
    // From the first listing's position: what changed since is replayed, in order, onto both.
    feed = makeFeed(api, "/v1/queue/events", waiting.last_seq || "0", {
      event: function (event) {
        if (event.type === "conversation.status.updated" && event.data.conversation) {
          put(fromEvent(event.data));
        }
      },
      state: function (state) { feedState.textContent = state === "live" ? "Live" : "Reconnecting…"; },
      failed: handlers.failed
    });
    clock = setInterval(render, 30000);
  }

  function stop() {
    if (feed) feed.stop();
    feed = null;
    clearInterval(clock);
    entries = {};
    feedState.textContent = "";
    render();
  }

  return {
    start: start,
    stop: stop,
    put: put,
    select: function (id) { selected = id; render(); }
  };
}
