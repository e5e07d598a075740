// Markdown -> sanitised DOM, for the assistant's messages (a visitor's own text is only ever set as
// text). marked renders it; raw HTML in the text, images and links whose URL is not http(s) or
// mailto come out as their literal text. DOMPurify then keeps an allow-list of tags and attributes
// (a second line of defence: nothing from a model reply or a stored message reaches the DOM as
// markup it did not allow), and every link opens in a new tab without an opener or referrer.

var SAFE_URL = /^(?:https?:|mailto:)/i;
var ALLOWED_TAGS = [
  "p", "br", "strong", "em", "del", "s", "code", "pre", "ul", "ol", "li", "blockquote", "a",
  "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td"
];
var ALLOWED_ATTR = ["href", "title", "start", "align"];

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c];
  });
}

function makeMarkdown() {
  var parser = new vendor.marked.Marked({gfm: true, breaks: true, async: false});
  parser.use({
    renderer: {
      html: function (token) { return escapeHtml(token.raw || token.text); },
      image: function (token) { return escapeHtml(token.raw); },
      link: function (token) { return SAFE_URL.test(token.href) ? false : escapeHtml(token.raw); }
    }
  });
  var purifier = vendor.DOMPurify(window); // an instance of our own: its hook is ours alone
  purifier.addHook("afterSanitizeAttributes", function (node) {
    if (node.nodeName !== "A") return;
    var href = node.getAttribute("href");
    if (!href || !SAFE_URL.test(href)) {
      node.removeAttribute("href");
      return;
    }
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  });
  var config = {
    ALLOWED_TAGS: ALLOWED_TAGS, ALLOWED_ATTR: ALLOWED_ATTR, ALLOWED_URI_REGEXP: SAFE_URL,
    ALLOW_DATA_ATTR: false, RETURN_DOM_FRAGMENT: true
  };
  return function render(text) {
    var html;
    try {
      html = parser.parse(String(text || ""));
    } catch (e) {
      html = escapeHtml(text);
    }
    return purifier.sanitize(html, config);
  };
}
