// A grounded reply's sources: the file_citation annotations of its output_text part (in
// response.done, and in the stored history on resume) drawn as numbered footnotes below the
// message (the document's title, its heading and page, the quoted span), and each [n] marker of
// the rendered reply linked to its footnote. A document's words are only ever set as text, never
// parsed as markup. A reply stored "unanswered" (the bot's fallback: nothing in its knowledge base
// matched) carries the class and data-status hooks a handoff offer attaches to.

var CITE_MARKER = /\[(\d{1,2})\]/g;
var citeCount = 0;

// The file_citation annotations of a message's content parts: one per source number, in order.
function citationsOf(parts) {
  var seen = {};
  var found = [];
  (parts || []).forEach(function (part) {
    var list = part && Array.isArray(part.annotations) ? part.annotations : [];
    list.forEach(function (a) {
      var number = a ? Number(a.number) : NaN;
      if (!a || a.type !== "file_citation" || !(number >= 1 && number <= 99) ||
          Math.floor(number) !== number || seen[number]) return;
      seen[number] = true;
      found.push(a);
    });
  });
  return found;
}

function makeCitations(view) {
  function footnote(a, id) {
    var number = Number(a.number);
    var title = String(a.title || a.filename || "");
    var heading = String(a.heading || "");
    if (heading.indexOf(title + " > ") === 0) heading = heading.slice(title.length + 3);
    var where = [heading === title ? "" : heading, a.page ? view.t("page", Number(a.page)) : ""]
      .filter(Boolean).join(" · ");
    var parts = [el("span", {"class": "source-title", text: title})];
    if (where) parts.push(el("span", {"class": "source-where", text: where}));
    if (a.quote) parts.push(el("q", {"class": "source-quote", text: String(a.quote)}));
    return el("li", {id: id, value: String(number), tabindex: "-1", "data-number": String(number),
      "data-file-id": String(a.file_id || "")}, parts);
  }

  function jump(event) {
    event.preventDefault();
    var target = view.shadow.getElementById(event.currentTarget.getAttribute("data-target"));
    if (!target) return;
    target.scrollIntoView({block: "nearest"});
    target.focus({preventScroll: true});
  }

  // The [n] of each cited number in the body's text (not in code) -> a link to its footnote.
  function linkMarkers(body, ids) {
    var walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
    var nodes = [];
    while (walker.nextNode()) {
      var parent = walker.currentNode.parentNode;
      if (!parent.closest("code, pre, a")) nodes.push(walker.currentNode);
    }
    nodes.forEach(function (node) {
      var text = node.nodeValue;
      var pieces = [];
      var last = 0;
      text.replace(CITE_MARKER, function (marker, digits, at) {
        var id = ids[Number(digits)];
        if (!id) return marker;
        if (at > last) pieces.push(document.createTextNode(text.slice(last, at)));
        var link = el("a", {"class": "cite", href: "#" + id, role: "doc-noteref", "data-target": id,
          "aria-label": view.t("source", Number(digits)), text: marker});
        link.addEventListener("click", jump);
        pieces.push(link);
        last = at + marker.length;
        return marker;
      });
      if (!pieces.length) return;
      if (last < text.length) pieces.push(document.createTextNode(text.slice(last)));
      node.replaceWith.apply(node, pieces);
    });
  }

  // Draw the footnotes of ``annotations`` under the message ``node`` (again: replaced).
  function show(node, body, annotations) {
    var old = node.querySelector(".sources");
    if (old) old.remove();
    if (!annotations || !annotations.length) return;
    var prefix = "assistant-source-" + (++citeCount) + "-";
    var ids = {};
    var list = el("ol", {"class": "sources", role: "doc-endnotes", "aria-label": view.t("sources")});
    annotations.forEach(function (a) {
      ids[Number(a.number)] = prefix + Number(a.number);
      list.appendChild(footnote(a, ids[Number(a.number)]));
    });
    node.appendChild(list);
    linkMarkers(body, ids);
  }

  function status(node, value) {
    if (value) node.setAttribute("data-status", value);
    node.classList.toggle("unanswered", value === "unanswered");
  }

  return {show: show, status: status};
}
