// The widget's frame, in a shadow root on one element of its own: the launcher (with the unread
// badge), the panel (a dialog with a focus trap; Escape closes it), its header, status line,
// thread (a live log), alert and composer (text, image button, mic, send / stop). Everything is
// built with DOM calls; the only markup parsed is the sanitised markdown of thread.js.
// On small screens the panel fills the visible viewport, following the on-screen keyboard.

var ICONS = {
  chat: "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z",
  close: "M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12z",
  send: "M2 21l21-9L2 3v7l15 2-15 2z",
  stop: "M6 6h12v12H6z",
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z",
  image: "M21 19V5a2 2 0 0 0-2-2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2zM8.5 13.5l2.5 3 3.5-4.5 4.5 6H5z",
  reset: "M17.65 6.35A7.95 7.95 0 0 0 12 4a8 8 0 1 0 7.75 10h-2.08A6 6 0 1 1 12 6c1.66 0 3.14.69 4.22 1.78L13 11h7V4z"
};

function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (name) {
    if (name === "text") node.textContent = attrs[name];
    else if (attrs[name] === true) node.setAttribute(name, "");
    else if (attrs[name] !== false && attrs[name] !== null) node.setAttribute(name, attrs[name]);
  });
  (children || []).forEach(function (child) { node.appendChild(child); });
  return node;
}

function icon(name) {
  var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.appendChild(path);
  return svg;
}

function makeView(settings, handlers) {
  var host = document.createElement("assistant-widget");
  var shadow = host.attachShadow({mode: "open"});
  var css = typeof CSSStyleSheet === "function" && "replaceSync" in CSSStyleSheet.prototype;
  if (css && shadow.adoptedStyleSheets !== undefined) {
    var sheet = new CSSStyleSheet(); // constructed: a page's CSP for <style> does not apply
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.appendChild(el("style", {text: CSS}));
  }
  var badge = el("span", {"class": "badge", hidden: true});
  var launcher = el("button", {"class": "launcher", type: "button", "aria-expanded": "false",
    "aria-controls": "assistant-panel"}, [icon("chat"), badge]);
  var title = el("h2", {"class": "title", id: "assistant-title"});
  var resetButton = el("button", {"class": "reset", type: "button"}, [icon("reset")]);
  var closeButton = el("button", {"class": "close", type: "button"}, [icon("close")]);
  var status = el("div", {"class": "status", role: "status", "aria-live": "polite"});
  var thread = el("div", {"class": "thread", role: "log", "aria-live": "polite", tabindex: "0",
    "aria-labelledby": "assistant-title"});
  var alert = el("div", {"class": "alert", role: "alert", hidden: true});
  var attachments = el("div", {"class": "attachments"});
  var fileInput = el("input", {type: "file", accept: IMAGE_TYPES.join(","), multiple: true, hidden: true});
  var attach = el("button", {"class": "attach", type: "button", hidden: !settings.images}, [icon("image")]);
  var input = el("textarea", {rows: "1", enterkeyhint: "send"});
  var mic = el("button", {"class": "mic", type: "button", "aria-pressed": "false", hidden: !settings.mic}, [icon("mic")]);
  var send = el("button", {"class": "send", type: "submit"}, [icon("send")]);
  var stop = el("button", {"class": "stop", type: "button", hidden: true}, [icon("stop")]);
  var composer = el("form", {"class": "composer"}, [attachments,
    el("div", {"class": "row"}, [attach, fileInput, input, mic, send, stop])]);
  var panel = el("div", {"class": "panel", id: "assistant-panel", role: "dialog", "aria-modal": "true",
    "aria-labelledby": "assistant-title", hidden: true}, [
    el("div", {"class": "head"}, [title, resetButton, closeButton]), status, thread, alert, composer
  ]);
  var root = el("div", {"class": ["root", settings.theme, settings.position,
    settings.launcher ? "" : "no-launcher"].join(" ").trim()}, [launcher, panel]);
  root.style.setProperty("--primary", settings.color);
  launcher.hidden = !settings.launcher;
  shadow.appendChild(root);
  var returnFocus = null;
  var t = makeTranslator(settings.locale);

  function setOpen(open) {
    if (open === !panel.hidden) return;
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    if (open) {
      returnFocus = document.activeElement;
      followViewport();
      thread.scrollTop = thread.scrollHeight; // drawn while hidden: to the newest message
      input.focus({preventScroll: true});
    } else if (shadow.activeElement) {
      (settings.launcher ? launcher : returnFocus || document.body).focus({preventScroll: true});
    }
    handlers.openChanged(open);
  }

  function focusables() {
    return Array.prototype.filter.call(panel.querySelectorAll("button, textarea, [tabindex='0']"),
      function (node) { return !node.hidden && !node.disabled && node.getClientRects().length > 0; });
  }

  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      setOpen(false);
    } else if (event.key === "Tab") {
      var nodes = focusables();
      var first = nodes[0];
      var last = nodes[nodes.length - 1];
      var active = shadow.activeElement;
      if (event.shiftKey && (active === first || !panel.contains(active))) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && (active === last || !panel.contains(active))) {
        event.preventDefault();
        first.focus();
      }
    }
  });

  function followViewport() {
    var viewport = window.visualViewport;
    if (!viewport) return;
    root.style.setProperty("--viewport-height", viewport.height + "px");
    root.style.setProperty("--viewport-top", viewport.offsetTop + "px");
  }
  if (window.visualViewport) {
    window.visualViewport.addEventListener("resize", followViewport);
    window.visualViewport.addEventListener("scroll", followViewport);
  }

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(140, input.scrollHeight + 2) + "px";
  }

  launcher.addEventListener("click", function () { setOpen(panel.hidden); });
  closeButton.addEventListener("click", function () { setOpen(false); });
  resetButton.addEventListener("click", function () { handlers.reset(); });
  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    handlers.submit(input.value);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      handlers.submit(input.value);
    }
  });
  input.addEventListener("input", grow);
  stop.addEventListener("click", function () { handlers.stop(); });
  mic.addEventListener("click", function () { handlers.mic(); });
  attach.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    handlers.files(imageFiles(fileInput.files));
    fileInput.value = "";
  });
  input.addEventListener("paste", function (event) {
    var data = event.clipboardData;
    var files = settings.images && data ? imageFiles(data.items) : [];
    if (files.length === 0) return;
    if (!data.getData("text/plain")) event.preventDefault();
    handlers.files(files);
  });
  ["dragenter", "dragover"].forEach(function (name) {
    panel.addEventListener(name, function (event) {
      if (!settings.images || !event.dataTransfer || event.dataTransfer.types.indexOf("Files") < 0) return;
      event.preventDefault();
      panel.classList.add("dragging");
    });
  });
  panel.addEventListener("dragleave", function () { panel.classList.remove("dragging"); });
  panel.addEventListener("drop", function (event) {
    panel.classList.remove("dragging");
    if (!settings.images || !event.dataTransfer) return;
    event.preventDefault();
    handlers.files(imageFiles(event.dataTransfer.files));
  });

  var view = {
    host: host, shadow: shadow, thread: thread, t: t,
    mount: function () { (document.body || document.documentElement).appendChild(host); },
    unmount: function () { host.remove(); },
    isOpen: function () { return !panel.hidden; },
    setOpen: setOpen,
    setLocale: function (locale) {
      t = view.t = makeTranslator(locale);
      title.textContent = settings.title || t("title");
      resetButton.setAttribute("aria-label", t("reset"));
      closeButton.setAttribute("aria-label", t("close"));
      input.setAttribute("placeholder", t("placeholder"));
      input.setAttribute("aria-label", t("placeholder"));
      attach.setAttribute("aria-label", t("attach"));
      send.setAttribute("aria-label", t("send"));
      stop.setAttribute("aria-label", t("stop"));
      view.setMic(mic.getAttribute("aria-pressed") === "true");
      view.setBadge(Number(badge.textContent) || 0);
    },
    setBadge: function (count) {
      badge.hidden = !count;
      badge.textContent = count ? String(count) : "";
      launcher.setAttribute("aria-label", count ? t("open") + " (" + t("unread", count) + ")" : t("open"));
    },
    setStatus: function (text) { status.textContent = text || ""; },
    showAlert: function (text) {
      alert.hidden = !text;
      alert.textContent = text || "";
    },
    setStreaming: function (streaming) {
      send.hidden = streaming;
      stop.hidden = !streaming;
      if (streaming && shadow.activeElement === send) stop.focus();
    },
    headControl: function (node) { resetButton.parentNode.insertBefore(node, resetButton); },
    setMicAvailable: function (available) { mic.hidden = !available; },
    setMic: function (on) {
      mic.setAttribute("aria-pressed", String(on));
      mic.setAttribute("aria-label", on ? t("micOff") : t("micOn"));
    },
    text: function () { return input.value; },
    clearText: function () { input.value = ""; grow(); },
    renderAttachments: function (list, remove) {
      attachments.replaceChildren();
      list.forEach(function (image, index) {
        var close = el("button", {type: "button", "aria-label": t("remove"), text: "×"});
        close.addEventListener("click", function () { remove(index); input.focus(); });
        attachments.appendChild(el("div", {"class": "attachment"}, [
          el("img", {"class": "thumb", src: image.thumb, alt: t("image")}), close
        ]));
      });
    }
  };
  view.setLocale(settings.locale);
  return view;
}
