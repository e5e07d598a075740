// The agent's key: pasted into the sign-in form and kept in this tab's sessionStorage only (never
// localStorage, never a URL: the input has no name, the form is never submitted; never logged).
// The server names the agent `agent:<key id>`, the id being the key's middle part
// (sk_<id>_<secret>): that tells which held conversations are this agent's. An empty key is the
// server's open mode (loopback, no keys), whose agent is `agent:open`.

var KEY_SLOT = "assistant.agent.key";

function agentName(key) {
  if (!key) return "agent:open";
  var match = /^sk_([0-9A-Za-z]+)_/.exec(key);
  return match ? "agent:" + match[1] : null;
}

function makeSignin(handlers) {
  var section = byId("signin");
  var form = byId("signin-form");
  var input = byId("key");

  function read() {
    try { return window.sessionStorage.getItem(KEY_SLOT); } catch (e) { return null; }
  }
  function write(key) {
    try {
      if (key === null) window.sessionStorage.removeItem(KEY_SLOT);
      else window.sessionStorage.setItem(KEY_SLOT, key);
    } catch (e) { /* storage refused: the key lives in this page only */ }
  }

  var key = read();

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    key = input.value.trim();
    input.value = "";
    write(key);
    handlers.signedIn();
  });

  return {
    key: function () { return key; },
    signedIn: function () { return key !== null; },
    show: function () {
      section.hidden = false;
      input.focus();
    },
    hide: function () { section.hidden = true; },
    forget: function () {
      key = null;
      write(null);
    }
  };
}
