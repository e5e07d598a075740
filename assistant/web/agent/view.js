// The helpers every other file builds with. el() sets text with textContent only: stored text (a
// customer's, the bot's, an agent's) is never parsed as markup. The error line says what went
// wrong in the API's own words and code, never nothing. Words for statuses, reasons and times.

function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (name) {
    var value = attrs[name];
    if (name === "text") node.textContent = value;
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value);
  });
  (children || []).forEach(function (child) { if (child) node.appendChild(child); });
  return node;
}

function byId(id) { return document.getElementById(id); }

function conversationPath(id) { return "/v1/conversations/" + encodeURIComponent(id); }

var REASONS = {
  customer_request: "Asked for a person",
  unanswered: "The bot could not answer",
  model_error: "The bot failed",
  agent: "Handed over by an agent",
  api: "Handed over by the API"
};

function reasonText(reason) { return REASONS[reason] || reason || ""; }

function statusText(status, agent, me) {
  if (status === "waiting_human") return "Waiting for a person";
  if (status === "human") return agent === me ? "Held by you" : "Held by " + (agent || "another agent");
  if (status === "bot") return "With the bot";
  if (status === "resolved") return "Resolved";
  return String(status || "");
}

function ago(ms) {
  if (!ms) return "";
  var seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 45) return "just now";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return new Date(ms).toLocaleString();
}

// A failure in words: the API's message and its code ("The key was refused (invalid_api_key)").
function errorWords(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  var message = error.message || "Something went wrong";
  return error.code ? message + " (" + error.code + ")" : message;
}

function makeErrorLine(node) {
  return {
    show: function (error) {
      node.textContent = errorWords(error);
      node.hidden = !node.textContent;
    },
    clear: function () { node.textContent = ""; node.hidden = true; }
  };
}
