// The one global: window.AssistantWidget, the widget's API. It mounts once per page (a second
// copy of the script leaves the first in place) when the document has a body, and then fires
// `assistant:ready` on window. Events, all on window, with `event.detail`:
//   assistant:ready    {version}                  mounted; the API's calls act from now on
//   assistant:opened   {}        assistant:closed {}
//   assistant:message  {id, role, text, status}   each finished assistant message
//   assistant:error    {code, message}            a problem, in the visitor's words (message)

(function boot() {
  if (window.AssistantWidget && window.AssistantWidget.version) return;
  var settings = readSettings(currentScript());
  var controller = null;

  function call(name) {
    return function () {
      if (!controller) throw new Error("AssistantWidget is not ready yet: wait for 'assistant:ready'");
      return controller[name].apply(null, arguments);
    };
  }

  var api = {
    version: VERSION,
    open: call("open"),
    close: call("close"),
    toggle: call("toggle"),
    send: call("send"),
    setUser: call("setUser"),
    reset: call("reset"),
    setLocale: call("setLocale"),
    status: call("status")
  };
  Object.defineProperty(window, "AssistantWidget", {value: Object.freeze(api), configurable: true});

  function start() {
    controller = makeController(settings);
    controller.start();
    window.dispatchEvent(new CustomEvent("assistant:ready", {detail: {version: VERSION}}));
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start, {once: true});
})();
