// A conversation's messages (realtime items), drawn as text: text parts and audio transcripts are
// set with textContent (a customer's words, the bot's and agents' replies are never parsed as
// markup); images are fetched with the key (GET .../images/{sha256}) and shown from blob: URLs,
// revoked when the view is cleared. Items are kept by id: one that comes again (a reply's own
// answer, then the live stream; a resumed stream) is drawn once.

function makeHistory(api, me) {
  var log = byId("history");
  var seen = {};
  var urls = [];
  var conversation = null;

  function author(item) {
    if (item.role === "user") return "Customer";
    if (item.author) return item.author === me() ? "You" : item.author;
    return item.role === "assistant" ? "Bot" : item.role;
  }

  function kind(item) {
    if (item.role === "user") return "customer";
    return item.author ? "agent" : "bot";
  }

  function image(sha256) {
    var figure = el("figure", {"class": "image", "aria-busy": "true"},
      [el("figcaption", {text: "Image (loading…)"})]);
    var id = conversation;
    api.blob(conversationPath(id) + "/images/" + encodeURIComponent(sha256)).then(function (blob) {
      if (id !== conversation) return;
      if (!/^image\//.test(blob.type)) throw new ConsoleError(0, "not_an_image", "Not an image");
      var url = URL.createObjectURL(blob);
      urls.push(url);
      figure.replaceChildren(el("img", {"src": url, "alt": "An image the customer sent"}));
      figure.removeAttribute("aria-busy");
    }).catch(function (error) {
      if (id !== conversation) return;
      figure.replaceChildren(el("figcaption", {text: "The image cannot be shown: " + errorWords(error)}));
      figure.removeAttribute("aria-busy");
    });
    return figure;
  }

  function part(content) {
    if (content.type === "input_image" && content.image_sha256) return image(content.image_sha256);
    if (content.type === "input_audio") {
      return el("p", {"class": "transcript"}, [el("span", {"class": "spoken", text: "Spoken: "}),
        document.createTextNode(content.transcript || "(no transcript)")]);
    }
    if (typeof content.text === "string") return el("p", {"class": "text", text: content.text});
    return null;
  }

  function add(item) {
    if (!item || !item.id || seen[item.id] || item.type !== "message") return;
    seen[item.id] = true;
    var stick = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    var body = el("div", {"class": "body"}, (item.content || []).map(part));
    var note = item.status && item.status !== "completed"
      ? el("div", {"class": "note", text: item.status}) : null;
    log.appendChild(el("article", {"class": "msg " + kind(item), "data-id": item.id,
      "data-author": item.author || null}, [el("div", {"class": "author", text: author(item)}), body, note]));
    if (stick || item.author === me()) log.scrollTop = log.scrollHeight;
  }

  return {
    clear: function (id) {
      urls.forEach(function (url) { URL.revokeObjectURL(url); });
      urls = [];
      seen = {};
      conversation = id || null;
      log.replaceChildren();
    },
    add: add,
    all: function (items) {
      (items || []).forEach(add);
      log.scrollTop = log.scrollHeight;
    }
  };
}
