// The thread's bubbles. A visitor's words are set as text, never parsed; the assistant's are
// sanitised markdown (markdown.js), and while a reply streams its text so far is rendered again on
// the next animation frame (not once per token). Images show as thumbnails; the typing indicator
// stands between a send and the reply's first token; a live transcript grows while the visitor
// speaks. A stored thread (GET /v1/sessions/{id}/messages) is drawn with the same bubbles; a
// grounded reply's sources are footnotes under it (citations.js). A person's reply (an assistant
// message with an `author`: a support agent's) is plain text, never parsed, under the person's
// name (class from-person, data-author); a notice (handoff.js) is a line of text between bubbles.

function makeThread(view, storage, render) {
  var container = view.thread;
  var typing = null;
  var cites = makeCitations(view);

  function atBottom() {
    return container.scrollHeight - container.scrollTop - container.clientHeight < 80;
  }
  function follow(stick) {
    if (stick) container.scrollTop = container.scrollHeight;
  }

  function bubble(role, extra) {
    var stick = atBottom();
    var body = el("div", {"class": "body"});
    var node = el("div", {"class": "msg " + role + (extra ? " " + extra : "")}, [body]);
    container.insertBefore(node, typing ? typing : null);
    follow(stick || role === "user");
    return {node: node, body: body};
  }

  function addImages(node, thumbs) {
    if (!thumbs || thumbs.length === 0) return;
    var box = el("div", {"class": "images"});
    thumbs.forEach(function (url) {
      box.appendChild(url
        ? el("img", {"class": "thumb", src: url, alt: view.t("image")})
        : el("div", {"class": "thumb missing", role: "img", "aria-label": view.t("image"), text: view.t("image")}));
    });
    node.insertBefore(box, node.firstChild);
  }

  function note(node, text) {
    var existing = node.querySelector(".note");
    if (existing) existing.remove();
    if (text) node.appendChild(el("div", {"class": "note", text: text}));
  }

  function user(text, thumbs, pending) {
    var b = bubble("user", pending ? "pending" : "");
    b.body.textContent = text || "";
    addImages(b.node, thumbs);
    if (pending) note(b.node, view.t("sending"));
    return {
      node: b.node,
      sent: function (id) {
        b.node.classList.remove("pending");
        if (id) b.node.setAttribute("data-id", id);
        note(b.node, "");
      },
      waiting: function () { b.node.classList.add("pending"); note(b.node, view.t("sending")); },
      failed: function (words) { b.node.classList.remove("pending"); note(b.node, words); }
    };
  }

  function assistant(text, status, id, annotations) {
    var b = bubble("assistant");
    b.body.replaceChildren(render(text));
    cites.show(b.node, b.body, annotations);
    cites.status(b.node, status);
    if (id) b.node.setAttribute("data-id", id);
    if (status === "interrupted") note(b.node, view.t("stopped"));
    return b.node;
  }

  function person(text, id, author, name) {
    var b = bubble("assistant", "from-person");
    b.node.setAttribute("data-author", author || "");
    if (id) b.node.setAttribute("data-id", id);
    b.node.insertBefore(el("div", {"class": "author", text: name || view.t("supportAgent")}), b.body);
    b.body.textContent = text || "";
    return b.node;
  }

  function notice(text, status) {
    var stick = atBottom();
    var node = el("div", {"class": "notice", "data-status": status || "", text: text});
    container.insertBefore(node, typing ? typing : null);
    follow(stick);
    return node;
  }

  function has(id) {
    var nodes = container.querySelectorAll("[data-id]");
    for (var i = 0; i < nodes.length; i++) if (nodes[i].getAttribute("data-id") === id) return true;
    return false;
  }

  function stream() {
    var b = bubble("assistant", "streaming");
    b.node.setAttribute("aria-busy", "true");
    var text = "";
    var frame = 0;
    function paint() {
      frame = 0;
      var stick = atBottom();
      b.body.replaceChildren(render(text));
      follow(stick);
    }
    return {
      node: b.node,
      append: function (delta) {
        text += delta;
        if (!frame) frame = requestAnimationFrame(paint);
      },
      text: function () { return text; },
      finish: function (final, status, id, annotations) {
        if (frame) cancelAnimationFrame(frame);
        text = typeof final === "string" ? final : text;
        paint();
        cites.show(b.node, b.body, annotations);
        cites.status(b.node, status);
        b.node.classList.remove("streaming");
        b.node.removeAttribute("aria-busy");
        if (id) b.node.setAttribute("data-id", id);
        if (status === "interrupted" || status === "cancelled") note(b.node, view.t("stopped"));
        if (!text && status !== "interrupted" && status !== "cancelled") b.node.remove();
      }
    };
  }

  function partial(itemId) {
    var b = bubble("user", "partial");
    b.node.setAttribute("data-id", itemId);
    b.body.textContent = view.t("listening");
    var heard = "";
    return {
      node: b.node,
      append: function (delta) {
        heard += delta;
        b.body.textContent = heard;
        follow(atBottom());
      },
      finish: function (transcript) {
        b.node.classList.remove("partial");
        b.body.textContent = transcript || heard;
        if (!b.body.textContent) b.node.remove();
      },
      drop: function () { b.node.remove(); }
    };
  }

  function showTyping(on) {
    if (on && !typing) {
      typing = el("div", {"class": "msg assistant typing", role: "status", "aria-label": view.t("typing")},
        [el("span"), el("span"), el("span")]);
      container.appendChild(typing);
      follow(true);
    } else if (!on && typing) {
      typing.remove();
      typing = null;
    }
  }

  function stored(messages) {
    messages.forEach(function (message) {
      var parts = message.content || [];
      var text = parts.map(function (part) {
        return part.type === "text" ? part.text : part.type === "audio" ? part.transcript : "";
      }).filter(Boolean).join("\n");
      if (message.role === "assistant" && message.author) {
        person(text, message.id, message.author, message.author_name);
      } else if (message.role === "assistant") {
        assistant(text, message.status, message.id, citationsOf(parts));
      } else if (message.role === "user") {
        var thumbs = parts.filter(function (part) { return part.type === "image"; })
          .map(function (part) { return storage.thumbnail(part.sha256); });
        var handle = user(text, thumbs, false);
        handle.sent(message.id);
      }
    });
    follow(true);
  }

  return {
    clear: function () { typing = null; container.replaceChildren(); },
    welcome: function (text) { assistant(text, "completed").classList.add("welcome"); },
    hasMessages: function () { return container.querySelector(".msg:not(.welcome):not(.typing)") !== null; },
    removeWelcome: function () {
      var node = container.querySelector(".welcome");
      if (node) node.remove();
    },
    lastNotice: function () {
      var nodes = container.querySelectorAll(".notice");
      return nodes.length ? nodes[nodes.length - 1].getAttribute("data-status") : null;
    },
    user: user, assistant: assistant, person: person, notice: notice, has: has, stream: stream,
    partial: partial, typing: showTyping, stored: stored
  };
}
