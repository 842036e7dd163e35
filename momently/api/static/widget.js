/* Momently in-app widget: one script tag, no build step.
 *
 *   <script src="https://momently.example.com/widget.js"
 *           data-write-key="wk_..." data-user-id="ada" data-user-token="..." async></script>
 *
 * data-user-token is the person's user token, made by your backend (HMAC-SHA256 of the userId
 * with the workspace's identity secret, docs/security.md): with the public write key the inbox
 * answers only for a verified person. It shows the person's next card in the corner of the
 * page, with a short entrance animation, listens for new cards over server-sent events, marks
 * a card seen when shown, and runs its one action: the act call records the tap for the
 * verified person and answers where to go next. Styles live in a shadow root, so the page's
 * CSS and the widget's cannot touch each other.
 *
 * The card is a non-modal dialog named by its title; Escape (from the card, or from a page
 * with nothing focused) dismisses it. A card leaves the screen when it expires: at its
 * expiresAt the widget asks the server, whose clock decides (the browser's may be off), and
 * asks again a little later while the server still lists it. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__momentlyWidget) return;
  window.__momentlyWidget = true;
  var base = new URL(script.src, location.href).origin;
  var who = {
    writeKey: script.getAttribute("data-write-key"),
    userId: script.getAttribute("data-user-id") || undefined,
    userToken: script.getAttribute("data-user-token") || undefined
  };
  if (!who.writeKey || !who.userId || !who.userToken) {
    console.warn("momently widget: set data-write-key, data-user-id and data-user-token");
    return;
  }
  var query = new URLSearchParams({ writeKey: who.writeKey, userId: who.userId, userToken: who.userToken });

  var queue = [], shown = null, known = {}, expiry = null;

  var host = document.createElement("div");
  host.setAttribute("data-momently", "");
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" +
    ":host{all:initial}" +
    ".card{position:fixed;right:16px;bottom:16px;z-index:2147483000;max-width:340px;" +
    "font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#111827;background:#fff;" +
    "border-radius:12px;box-shadow:0 10px 30px rgba(0,0,0,.18);padding:16px 18px;" +
    "animation:in .32s cubic-bezier(.2,.8,.2,1) both}" +
    ".card.out{animation:out .2s ease-in both}" +
    "@keyframes in{from{opacity:0;transform:translateY(16px) scale(.98)}to{opacity:1;transform:none}}" +
    "@keyframes out{to{opacity:0;transform:translateY(8px)}}" +
    "@media (prefers-reduced-motion:reduce){.card,.card.out{animation:none}}" +
    "h2{font-size:16px;margin:0 24px 6px 0}p{margin:0 0 12px}" +
    "button.act{font:inherit;font-weight:600;border:0;border-radius:8px;padding:8px 14px;" +
    "background:#1a56db;color:#fff;cursor:pointer}" +
    "button.close{position:absolute;top:8px;right:8px;border:0;background:none;font-size:18px;" +
    "line-height:1;color:#6b7280;cursor:pointer;padding:4px}" +
    "</style>";

  function post(card, mark) {
    var body = JSON.stringify({ writeKey: who.writeKey, userId: who.userId, userToken: who.userToken });
    return fetch(base + "/v1/inbox/" + card.id + "/" + mark, {
      method: "POST", body: body, keepalive: true, headers: { "Content-Type": "text/plain" }
    }).then(function (r) { return r.ok ? r.json() : {}; }).catch(function () { return {}; });
  }

  function hide(el, then) {
    if (el.classList.contains("out")) {  // already leaving (expired as it was acted on, say)
      if (then) setTimeout(then, 200);
      return;
    }
    clearTimeout(expiry);
    el.classList.add("out");
    setTimeout(function () { el.remove(); shown = null; if (then) then(); else next(); }, 200);
  }

  function render(card) {
    var el = document.createElement("div");
    el.className = "card";
    el.setAttribute("role", "dialog");
    el.setAttribute("aria-live", "polite");
    el.tabIndex = -1;  // focusable from script, not a tab stop of the page
    if (card.title) {
      var h = document.createElement("h2");
      h.id = "momently-title-" + card.id;
      h.textContent = card.title;
      el.appendChild(h);
      el.setAttribute("aria-labelledby", h.id);
    } else {
      el.setAttribute("aria-label", "Message");
    }
    var p = document.createElement("p");
    p.id = "momently-body-" + card.id;
    p.textContent = card.body;
    el.appendChild(p);
    el.setAttribute("aria-describedby", p.id);
    var close = document.createElement("button");
    close.className = "close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    el.dismiss = function () { post(card, "dismiss"); hide(el); };
    close.onclick = el.dismiss;
    el.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.stopPropagation(); el.dismiss(); }
    });
    el.appendChild(close);
    if (card.action) {
      var act = document.createElement("button");
      act.className = "act";
      act.textContent = card.action.label || "Open";
      act.onclick = function () {
        act.disabled = true;
        post(card, "act").then(function (answer) {
          var to = answer && answer.redirect;
          hide(el, function () { if (to) location.href = to; else next(); });
        });
      };
      el.appendChild(act);
    }
    return el;
  }

  function next() {
    if (shown || !queue.length) return;
    var card = queue.shift();
    if (!host.isConnected) document.body.appendChild(host);
    shown = render(card);
    root.appendChild(shown);
    post(card, "seen");
    watchExpiry(card, shown);
  }

  // Expiry: the server's clock decides. At expiresAt by this browser's clock, ask whether the
  // card is still to be shown; while it is (this clock runs ahead), ask again, less and less
  // often. A card the server no longer lists (expired, or acted on in another tab) goes.
  function watchExpiry(card, el) {
    if (!card.expiresAt) return;
    var wait = Math.max(0, card.expiresAt - Date.now()), retry = 2000;
    function check() {
      if (shown !== el) return;
      fetch(base + "/v1/inbox?" + query).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (shown !== el) return;
          var listed = !d || (d.cards || []).some(function (c) { return c.id === card.id; });
          if (!listed) { hide(el); return; }
          expiry = setTimeout(check, retry);
          retry = Math.min(retry * 2, 60000);
        })
        .catch(function () { expiry = setTimeout(check, retry); retry = Math.min(retry * 2, 60000); });
    }
    expiry = setTimeout(check, Math.min(wait, 2147483647));  // setTimeout's longest delay
  }

  // Escape with nothing focused on the page dismisses the card too (from inside the card,
  // its own handler did); a page that handles Escape itself (its own dialog) keeps it.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape" || e.defaultPrevented || !shown) return;
    var active = document.activeElement;
    if (active && active !== document.body && active !== document.documentElement && active !== host) return;
    shown.dismiss();
  });

  function add(card) {
    if (known[card.id]) return;
    known[card.id] = true;
    queue.push(card);
    next();
  }

  function start() {
    fetch(base + "/v1/inbox?" + query).then(function (r) { return r.ok ? r.json() : { cards: [] }; })
      .then(function (d) { (d.cards || []).forEach(add); })
      .catch(function () {});
    if (window.EventSource) {
      var source = new EventSource(base + "/v1/inbox/stream?" + query);
      source.addEventListener("card", function (e) { add(JSON.parse(e.data)); });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
