// The console's start. Signed in (a key in this tab's sessionStorage): the queue, and the
// conversation the agent opens beside it (on a narrow screen in its place, with a way back). A
// key the server refuses (401/403) on any call: its words on the error line, the key forgotten,
// back to the sign-in form. "Sign out" forgets the key and stops every feed.

(function boot() {
  function start() {
    var errors = makeErrorLine(byId("error"));
    var layout = byId("console");
    var who = byId("who");
    var signout = byId("signout");
    var signin = makeSignin({signedIn: enter});
    var api = makeApi(function () { return signin.key(); });
    var me = function () { return agentName(signin.key()); };
    var conversation = makeConversation(api, me, errors, {failed: failed, changed: changed});
    var queue = makeQueue(api, me, {open: openConversation, failed: failed});

    function refusal(error) {
      if (error.status === 403) {
        return "This key may not use the console: it needs the agent scope. " + errorWords(error);
      }
      return "The key was refused: " + errorWords(error);
    }

    function failed(error) {
      if (refusedKey(error)) {
        leave();
        errors.show(refusal(error));
        return;
      }
      errors.show(error);
    }

    function changed(state) { queue.put(state); }

    function openConversation(id) {
      errors.clear();
      queue.select(id);
      layout.classList.add("reading");
      conversation.open(id);
    }

    function closeConversation() {
      var id = conversation.current();
      conversation.close();
      queue.select(null);
      layout.classList.remove("reading");
      var entry = id && document.querySelector('#queue-list .entry[data-id="' + CSS.escape(id) + '"]');
      (entry || byId("queue-title")).focus();
    }

    async function enter() {
      errors.clear();
      signin.hide();
      layout.hidden = false;
      signout.hidden = false;
      who.textContent = "Signed in as " + (me() || "an agent");
      try {
        await queue.start();
      } catch (error) {
        failed(error);
      }
    }

    function leave() {
      conversation.close();
      queue.stop();
      signin.forget();
      layout.hidden = true;
      layout.classList.remove("reading");
      signout.hidden = true;
      who.textContent = "";
      signin.show();
    }

    signout.addEventListener("click", function () {
      errors.clear();
      leave();
    });
    byId("close").addEventListener("click", closeConversation);
    byId("back").addEventListener("click", closeConversation);
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape" || !conversation.current()) return;
      if (event.target && event.target.tagName === "TEXTAREA" && event.target.value) return;
      closeConversation();
    });

    if (signin.signedIn()) enter();
    else signin.show();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
