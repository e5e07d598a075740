// Settings: defaults, then the page's `window.AssistantWidgetSettings` object, then the script
// tag's data-* attributes (data-key="pk_...", data-title, ...). The server is where this script
// came from unless the settings name another. A switch is off when it is false, or "false",
// "off", "no" or "0" (data-handoff="off").

var DEFAULTS = {
  key: "",                 // a publishable key (pk_...); empty: the server's open mode (loopback)
  server: "",              // the assistant server; empty: the origin widget.js was loaded from
  position: "right",       // "right" | "left"
  color: "#2563eb",        // the primary colour (launcher, user bubbles, buttons)
  theme: "auto",           // "light" | "dark" | "auto" (follows the visitor's system)
  title: "",               // the panel's title; empty: the locale's "Assistant"
  welcome: "",             // the first message in an empty thread; empty: the locale's greeting
  locale: "",              // "en", "de", "fr", "es"...; empty: the browser's language
  launcher: true,          // false: no round button (open it with AssistantWidget.open())
  open: false,             // start opened
  images: true,            // offer image upload (file button, paste, drag and drop)
  mic: true,               // offer the mic button
  handoff: true,           // offer "Talk to a person" (a person's replies show either way)
  spokenReplies: "mic",    // "mic": speak replies while the mic is on; true: always; false: never
  user: null,              // {id, name, email, hash}: see AssistantWidget.setUser
  clientSecretTtl: 600,    // seconds a client secret lives (publishable-key mode)
  imageMaxSide: 1568       // images are downscaled to this many pixels on their longer side
};

var BOOLEAN_SETTINGS = ["launcher", "open", "images", "mic", "handoff"];
var OFF_WORDS = ["false", "off", "no", "0"];

function currentScript() {
  var script = document.currentScript;
  if (script && script.src) return script;
  var all = document.querySelectorAll("script[src]");
  for (var i = all.length - 1; i >= 0; i--) {
    if (/\/widget\.js(\?|$)/.test(all[i].src)) return all[i];
  }
  return null;
}

function readSettings(script) {
  var settings = {};
  var given = window.AssistantWidgetSettings;
  Object.keys(DEFAULTS).forEach(function (name) { settings[name] = DEFAULTS[name]; });
  if (given && typeof given === "object") {
    Object.keys(DEFAULTS).forEach(function (name) {
      if (given[name] !== undefined && given[name] !== null) settings[name] = given[name];
    });
  }
  if (script) {
    Object.keys(DEFAULTS).forEach(function (name) {
      var attr = script.getAttribute("data-" + name.replace(/[A-Z]/g, function (c) {
        return "-" + c.toLowerCase();
      }));
      if (attr === null) return;
      if (BOOLEAN_SETTINGS.indexOf(name) >= 0) settings[name] = attr;
      else if (name === "spokenReplies") settings[name] = attr === "true" ? true : attr === "false" ? false : attr;
      else if (name === "clientSecretTtl" || name === "imageMaxSide") settings[name] = Number(attr);
      else settings[name] = attr;
    });
  }
  BOOLEAN_SETTINGS.forEach(function (name) { settings[name] = switchedOn(settings[name]); });
  settings.server = serverOrigin(settings.server, script);
  if (!settings.locale) settings.locale = navigator.language || "en";
  settings.clientSecretTtl = Math.max(5, Math.min(7200, Number(settings.clientSecretTtl) || 600));
  settings.imageMaxSide = Math.max(64, Math.min(LIMITS.maxImageSide, Number(settings.imageMaxSide) || 1568));
  if (!/^#[0-9a-f]{3,8}$/i.test(String(settings.color))) settings.color = DEFAULTS.color;
  if (["light", "dark", "auto"].indexOf(settings.theme) < 0) settings.theme = "auto";
  if (settings.position !== "left") settings.position = "right";
  return settings;
}

function switchedOn(value) {
  if (typeof value === "string") return OFF_WORDS.indexOf(value.trim().toLowerCase()) < 0;
  return Boolean(value);
}

function serverOrigin(given, script) {
  var base = given || (script ? script.src : location.href);
  try {
    var url = new URL(base, location.href);
    return url.protocol + "//" + url.host;
  } catch (e) {
    return location.protocol + "//" + location.host;
  }
}
