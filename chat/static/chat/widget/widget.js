/*! kbservice chat widget. Embed with:
 *   <script src="https://HOST/widget.js" data-kb="demo" data-key="kb_pk_…" async></script>
 * Optional: data-lang="zh|en" (default: the host page's <html lang>, then the browser's language),
 * data-api (default: this script's origin), data-title, data-customer.
 *
 * The conversation is kept per site in localStorage (the ticket id and the last reply seen), so a
 * reload shows its history. While a person may answer, the widget polls the ticket's messages after
 * a cursor (GET /api/v1/tickets/{id}/messages?after=N): every few seconds while handed off and the
 * page is visible, rarely otherwise, never once resolved. Replies that arrive while the panel is
 * closed show as a count on the button.
 *
 * Safety: everything from the API is put on the page with textContent. The one exception is the
 * answer's highlight, which the API sends as escaped text with <mark> tags; it is split on those
 * tags and rebuilt as text nodes and <mark> elements, so no HTML from an FAQ entry is ever parsed
 * into the page. The widget lives in a shadow root so the host page's CSS cannot break it.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__kbWidgetLoaded) return;
  window.__kbWidgetLoaded = true;

  var STRINGS = {
    en: {
      launcher: "Questions? Ask us", title: "Help center", close: "Close chat", label: "Your question",
      placeholder: "Type your question and press Enter", send: "Send", thinking: "Looking for an answer…",
      greeting: "Hi! Ask a question and I'll look it up in our help center.", found: "Here is what I found:",
      suggest: "These answers might help:", nothing: "Sorry, I couldn't find an answer to that.",
      helpful: "Was this helpful?", yes: "Yes", no: "No", thanks: "Thanks for the feedback!",
      human: "Talk to a person", handedOff: "A support agent will take over this conversation. Reference: ",
      degraded: "Quick answer (our ranking service is busy): ", error: "Something went wrong. Please try again.",
      throttled: "Too many questions at once. Please wait a minute.", origin: "This chat is not enabled for this site.",
      you: "You", bot: "Help center", agent: "Support agent", resolved: "This conversation is closed. Ask a new question any time.",
      assigned: "{name} has joined the conversation.", unread: "{n} new replies", writeAgent: "Write to the support agent",
      tooLong: "Your question is {n} characters long; please keep it to {max}.",
    },
    zh: {
      launcher: "有问题？问我们", title: "帮助中心", close: "关闭对话", label: "您的问题",
      placeholder: "输入问题，按回车发送", send: "发送", thinking: "正在查找答案…",
      greeting: "您好！请输入您的问题，我会在帮助中心为您查找答案。", found: "为您找到以下答案：",
      suggest: "以下答案可能有帮助：", nothing: "抱歉，没有找到这个问题的答案。",
      helpful: "这个回答有帮助吗？", yes: "有帮助", no: "没帮助", thanks: "感谢您的反馈！",
      human: "转人工客服", handedOff: "已为您转接人工客服，客服会在这里继续为您服务。工单号：",
      degraded: "快速答案（排序服务繁忙）：", error: "出错了，请稍后再试。",
      throttled: "提问太频繁了，请稍等一分钟。", origin: "此网站未开通在线客服。",
      you: "您", bot: "帮助中心", agent: "人工客服", resolved: "本次对话已结束，欢迎随时提出新问题。",
      assigned: "客服 {name} 已加入对话。", unread: "{n} 条新回复", writeAgent: "给人工客服留言",
      tooLong: "问题太长了（{n} 字），请控制在 {max} 字以内。",
    },
  };

  // The longest question the API accepts (characters, after trimming): /widget.js writes the
  // server's KB_MAX_QUESTION_CHARS here.
  var MAX_QUESTION = 2000;

  // While a person may answer: often enough to show a reply within 5 s; hidden pages and tickets
  // nobody took over are polled rarely, so hundreds of open widgets cost the server little.
  var POLL_MS = 3000, POLL_IDLE_MS = 20000;

  var data = script.dataset;
  var pageLang = data.lang || document.documentElement.lang || navigator.language || "en";
  var lang = pageLang.toLowerCase().indexOf("zh") === 0 ? "zh" : "en";
  var t = STRINGS[lang];
  var api = (data.api || new URL(script.src, location.href).origin).replace(/\/$/, "");
  var kb = data.kb || "";
  // localStorage is per site already; the API and knowledge base keep two widgets on one site apart.
  var storageKey = "kbw:" + api + ":" + kb;
  var state = { ticket: null, status: "open", cursor: 0, seen: 0, busy: false, shown: {}, unread: 0, timer: null };
  try {
    var saved = JSON.parse(localStorage.getItem(storageKey) || "null");
    if (saved && saved.ticket) { state.ticket = saved.ticket; state.seen = saved.seen || 0; }
  } catch (e) { /* storage blocked or unreadable: start afresh */ }

  var CSS = [
    ":host { all: initial; }",
    "* { box-sizing: border-box; }",
    ".wrap { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; font: 14px/1.5 system-ui, -apple-system,",
    "  'Segoe UI', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', sans-serif; color: #1d2330; }",
    "button { font: inherit; cursor: pointer; }",
    ".launcher { background: #3056d3; color: #fff; border: 0; border-radius: 999px; padding: 12px 18px;",
    "  box-shadow: 0 6px 18px rgba(20,30,60,.25); font-weight: 600; }",
    ".launcher .count { display: inline-block; min-width: 20px; margin-left: 8px; padding: 0 6px; border-radius: 999px; background: #d92d20; color: #fff; font-size: 12px; line-height: 20px; text-align: center; }",
    ".launcher .count[hidden] { display: none; }",
    ".msg.agent { align-self: flex-start; background: #e7f6ec; border: 1px solid #b8e0c6; border-bottom-left-radius: 4px; }",
    ".msg .by { display: block; font-size: 12px; font-weight: 700; color: #23663d; }",
    ".launcher:focus-visible, button:focus-visible, textarea:focus-visible { outline: 3px solid #8aa4ef; outline-offset: 1px; }",
    ".panel { width: 370px; max-width: calc(100vw - 40px); height: 540px; max-height: calc(100vh - 40px); background: #fff;",
    "  border-radius: 14px; box-shadow: 0 12px 40px rgba(20,30,60,.28); display: flex; flex-direction: column; overflow: hidden; }",
    ".panel[hidden], .launcher[hidden] { display: none; }",
    ".head { display: flex; align-items: center; justify-content: space-between; padding: 12px 14px; background: #1b2233; color: #fff; }",
    ".head h2 { margin: 0; font-size: 15px; }",
    ".head button { background: none; border: 0; color: #fff; font-size: 20px; line-height: 1; padding: 2px 6px; border-radius: 6px; }",
    ".log { flex: 1; overflow-y: auto; padding: 12px; background: #f5f6f8; display: flex; flex-direction: column; gap: 8px; }",
    ".msg { max-width: 88%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; word-break: break-word; }",
    ".msg.user { align-self: flex-end; background: #3056d3; color: #fff; border-bottom-right-radius: 4px; }",
    ".msg.bot { align-self: flex-start; background: #fff; border: 1px solid #dde1e8; border-bottom-left-radius: 4px; }",
    ".msg.note { align-self: center; background: #fdf1dc; color: #7a4d00; font-size: 13px; max-width: 100%; }",
    ".msg .title { font-weight: 700; margin: 4px 0; }",
    ".msg details { margin-top: 6px; border-top: 1px solid #eceff4; padding-top: 6px; }",
    ".msg summary { cursor: pointer; font-weight: 600; }",
    "mark { background: #ffe58a; color: inherit; border-radius: 2px; padding: 0 1px; }",
    ".rate { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-top: 8px; font-size: 13px; color: #5d6677; }",
    ".rate button, .human { border: 1px solid #c8ced9; background: #fff; border-radius: 999px; padding: 3px 10px; color: #1d2330; }",
    ".human { align-self: flex-start; border-color: #3056d3; color: #3056d3; font-weight: 600; }",
    ".form { border-top: 1px solid #dde1e8; padding: 10px; display: flex; gap: 8px; align-items: flex-end; background: #fff; }",
    ".form label { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }",
    ".form textarea { flex: 1; resize: none; font: inherit; padding: 8px 10px; border: 1px solid #c8ced9; border-radius: 10px; min-height: 40px; max-height: 120px; }",
    ".form .send { background: #3056d3; color: #fff; border: 0; border-radius: 10px; padding: 9px 14px; font-weight: 600; }",
    ".form .send[disabled] { opacity: .6; cursor: progress; }",
    ".limit { padding: 0 12px 6px; background: #fff; color: #b42318; font-size: 12px; }",
    ".foot { display: flex; justify-content: space-between; align-items: center; padding: 0 12px 8px; background: #fff; font-size: 12px; color: #8a93a5; }",
  ].join("\n");

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Escaped text + <mark> → text nodes and <mark> elements. Entities are decoded by an inert
  // document (DOMParser runs no scripts and loads nothing), and only its text is kept.
  function decode(escaped) {
    return new DOMParser().parseFromString("<!doctype html><body>" + escaped, "text/html").body.textContent || "";
  }
  function marked(html) {
    var fragment = document.createDocumentFragment();
    var inside = false;
    String(html || "").split(/(<mark>|<\/mark>)/).forEach(function (part) {
      if (part === "<mark>") { inside = true; return; }
      if (part === "</mark>") { inside = false; return; }
      if (!part) return;
      var text = decode(part);
      fragment.appendChild(inside ? el("mark", {}, text) : document.createTextNode(text));
    });
    return fragment;
  }

  // --- DOM ------------------------------------------------------------------------------------
  var host = el("div", { id: "kb-chat-widget" });
  var root = host.attachShadow({ mode: "open" });
  var style = el("style");
  // A host page whose CSP allows styles by nonce lets ours in when our script tag carries one.
  if (script.nonce) style.nonce = script.nonce;
  style.textContent = CSS;
  var wrap = el("div", { class: "wrap", lang: lang === "zh" ? "zh-CN" : "en" });
  var launcher = el("button", { class: "launcher", type: "button", "aria-expanded": "false", "aria-controls": "kbw-panel" });
  launcher.appendChild(el("span", {}, data.title ? data.title : t.launcher));
  var badge = el("span", { class: "count" });
  badge.hidden = true;
  launcher.appendChild(badge);
  var panel = el("section", { class: "panel", id: "kbw-panel", role: "dialog", "aria-label": data.title || t.title });
  panel.hidden = true;
  var head = el("div", { class: "head" });
  head.appendChild(el("h2", {}, data.title || t.title));
  var close = el("button", { type: "button", "aria-label": t.close, title: t.close }, "×");
  head.appendChild(close);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": t.title });
  var form = el("form", { class: "form" });
  var label = el("label", { for: "kbw-question" }, t.label);
  // No maxlength: it would cut a pasted question silently. Too long is said, and the text stays.
  var input = el("textarea", { id: "kbw-question", name: "question", rows: "1", placeholder: t.placeholder,
    autocomplete: "off", "aria-describedby": "kbw-limit" });
  var send = el("button", { class: "send", type: "submit" }, t.send);
  form.appendChild(label); form.appendChild(input); form.appendChild(send);
  var limit = el("div", { class: "limit", id: "kbw-limit", "aria-live": "polite" });
  limit.hidden = true;
  var foot = el("div", { class: "foot" });
  var human = el("button", { class: "human", type: "button" }, t.human);
  human.hidden = !state.ticket;
  foot.appendChild(human);
  panel.appendChild(head); panel.appendChild(log); panel.appendChild(form); panel.appendChild(limit);
  panel.appendChild(foot);
  wrap.appendChild(launcher); wrap.appendChild(panel);
  root.appendChild(style); root.appendChild(wrap);

  function scroll() { log.scrollTop = log.scrollHeight; }
  function say(kind, text) {
    var node = el("div", { class: "msg " + kind });
    if (text !== undefined) node.textContent = text;
    log.appendChild(node);
    scroll();
    return node;
  }

  function open() {
    panel.hidden = false;
    launcher.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    if (!log.childElementCount) say("bot", t.greeting);
    markSeen();
    scroll();
    input.focus();
  }
  function shut() {
    panel.hidden = true;
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  // --- API ------------------------------------------------------------------------------------
  function call(path, body, method) {
    return fetch(api + path, {
      method: method || "POST", mode: "cors", credentials: "omit",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + (data.key || "") },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) {
          var error = new Error("HTTP " + response.status);
          error.status = response.status;
          error.details = (json.error && json.error.details) || {};
          throw error;
        }
        return json;
      });
    });
  }
  function problem(error) {
    if (error && error.status === 429) return t.throttled;
    if (error && error.status === 403) return t.origin;
    return t.error;
  }
  function save() {
    try {
      if (state.ticket) localStorage.setItem(storageKey, JSON.stringify({ ticket: state.ticket, seen: state.seen }));
      else localStorage.removeItem(storageKey);
    } catch (e) { /* storage blocked: the conversation lasts as long as the page */ }
  }
  function remember(ticket) {
    if (state.ticket !== ticket) { state.ticket = ticket; state.status = "open"; state.cursor = 0; state.seen = 0; }
    if (state.status === "open") {  // the footer's offer again; an older one in the log goes
      log.querySelectorAll(".human").forEach(function (button) { button.remove(); });
      human.hidden = false;
    }
    save();
    schedule();
  }
  function forget() {
    state.ticket = null; state.status = "open"; state.cursor = 0; state.seen = 0; state.shown = {};
    human.hidden = true;
    save();
  }

  function entryBlock(parent, entry, withHighlight) {
    parent.appendChild(el("div", { class: "title" }, entry.question));
    var body = el("div", { class: "body" });
    if (withHighlight && entry.highlight && entry.highlight.html) body.appendChild(marked(entry.highlight.html));
    else body.textContent = entry.answer;
    parent.appendChild(body);
  }

  function rating(node, result) {
    var row = el("div", { class: "rate" });
    row.appendChild(el("span", {}, t.helpful));
    [[true, t.yes], [false, t.no]].forEach(function (choice) {
      var button = el("button", { type: "button", "data-helpful": String(choice[0]) }, choice[1]);
      button.addEventListener("click", function () {
        row.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        call("/api/v1/feedback", { ticket: result.ticket, question_id: result.question_id, helpful: choice[0] })
          .then(function () {
            row.textContent = t.thanks;
            if (!choice[0]) offerHuman();
          })
          .catch(function (error) { row.textContent = problem(error); });
      });
      row.appendChild(button);
    });
    node.appendChild(row);
  }

  // One "Talk to a person" in the log at a time, and none once a person has been asked for.
  function offerHuman() {
    if (state.status !== "open") return;
    log.querySelectorAll(".human").forEach(function (button) { button.remove(); });
    human.hidden = true;  // the offer in the log replaces the one in the footer
    var button = el("button", { class: "human", type: "button" }, t.human);
    button.addEventListener("click", handOff);
    log.appendChild(button);
    scroll();
  }

  function show(result, fromHistory) {
    if (!fromHistory) remember(result.ticket);
    var node = say("bot");
    if (result.decision === "handoff" || !result.answer) {
      node.textContent = t.nothing;
      offerHuman();
      return;
    }
    var degraded = result.rerank && result.rerank.status === "degraded";
    if (result.decision === "answer") {
      node.appendChild(el("div", {}, (degraded ? t.degraded : "") + t.found));
      entryBlock(node, result.answer, true);
    } else {
      node.appendChild(el("div", {}, (degraded ? t.degraded : "") + t.suggest));
      [result.answer].concat(result.alternatives || []).slice(0, 3).forEach(function (entry, index) {
        var details = el("details");
        if (index === 0) details.open = true;
        var summary = el("summary", {}, entry.question);
        details.appendChild(summary);
        var body = el("div", { class: "body" });
        if (index === 0 && entry.highlight) body.appendChild(marked(entry.highlight.html));
        else body.textContent = entry.answer;
        details.appendChild(body);
        node.appendChild(details);
      });
    }
    if (!fromHistory) rating(node, result);
    scroll();
  }

  // --- the conversation after the engine: history, replies, polling ---------------------------
  function showItem(item) {
    if (state.shown[item.id]) return;
    state.shown[item.id] = true;
    if (item.seq && item.seq > state.cursor) state.cursor = item.seq;
    if (item.kind === "question" || item.kind === "customer") { say("user", item.text); return; }
    if (item.kind === "answer") {
      show({ ticket: state.ticket, question_id: item.question_id, decision: item.decision, answer: item.answer,
             alternatives: item.alternatives, rerank: item.rerank }, true);
      return;
    }
    if (item.kind === "agent") {
      var node = say("agent");
      node.appendChild(el("span", { class: "by" }, item.author || t.agent));
      node.appendChild(document.createTextNode(item.text));
      if (item.seq > state.seen) { if (panel.hidden) state.unread += 1; else markSeen(); }
      showUnread();
      return;
    }
    if (item.event === "handed_off") { setStatus("handed_off"); say("note", t.handedOff + state.ticket.slice(0, 8)); }
    else if (item.event === "assigned" && item.text) say("note", t.assigned.replace("{name}", item.text));
    else if (item.event === "resolved") { setStatus("resolved"); say("note", t.resolved); }
  }
  function setStatus(status) {
    state.status = status;
    if (status !== "open") {
      human.hidden = true;
      log.querySelectorAll(".human").forEach(function (button) { button.remove(); });
    }
    input.placeholder = status === "handed_off" ? t.writeAgent : t.placeholder;
  }
  function markSeen() {
    if (state.cursor > state.seen) { state.seen = state.cursor; save(); }
    state.unread = 0;
    showUnread();
  }
  function showUnread() {
    badge.hidden = !state.unread;
    badge.textContent = state.unread ? String(state.unread) : "";
    badge.setAttribute("aria-label", t.unread.replace("{n}", state.unread));
  }
  function get(path) {
    return fetch(api + path, { method: "GET", mode: "cors", credentials: "omit",
      headers: { Authorization: "Bearer " + (data.key || "") } }).then(function (response) {
      if (!response.ok) { var error = new Error("HTTP " + response.status); error.status = response.status; throw error; }
      return response.json();
    });
  }
  function restore() {
    var ticket = state.ticket;
    get("/api/v1/tickets/" + encodeURIComponent(ticket)).then(function (body) {
      if (state.ticket !== ticket) return;
      state.status = body.status;
      human.hidden = body.status !== "open";
      if (!log.childElementCount) say("bot", t.greeting);
      (body.messages || []).forEach(showItem);
      setStatus(body.status);
      if (!panel.hidden) markSeen();
      schedule();
    }).catch(function (error) {
      if (error.status === 404 || error.status === 403) forget();  // gone, or not this site's any more
      else schedule();
    });
  }
  function poll() {
    state.timer = null;
    if (!state.ticket || state.status === "resolved") return;
    var ticket = state.ticket, started = Date.now();
    get("/api/v1/tickets/" + encodeURIComponent(ticket) + "/messages?after=" + state.cursor).then(function (body) {
      if (state.ticket !== ticket) return;
      body.messages.forEach(showItem);
      if (body.status !== state.status) setStatus(body.status);
    }).catch(function (error) {
      if (error.status === 404) forget();
    }).then(function () { schedule(Date.now() - started); });
  }
  // The next poll, by the interval that fits the ticket now (a hand-off shortens a pending wait),
  // counted from when the last poll started: a slow answer must not add its time to every wait.
  function schedule(spentMs) {
    if (state.timer) { clearTimeout(state.timer); state.timer = null; }
    if (!state.ticket || state.status === "resolved") return;
    var often = state.status === "handed_off" && !document.hidden;
    state.timer = setTimeout(poll, Math.max(0, (often ? POLL_MS : POLL_IDLE_MS) - (spentMs || 0)));
  }
  document.addEventListener("visibilitychange", function () {
    // Back on the page: look at once rather than after the idle interval.
    if (!document.hidden && state.timer) { clearTimeout(state.timer); poll(); }
  });

  function ask(question) {
    state.busy = true;
    send.disabled = true;
    say("user", question);
    var waiting = say("bot", t.thinking);
    var body = { kb: kb, question: question };
    if (state.ticket) body.ticket = state.ticket;
    if (data.customer) body.customer = data.customer;
    call("/api/v1/ask", body)
      .then(function (result) {
        waiting.remove();
        state.shown["q" + result.question_id] = state.shown["a" + result.question_id] = true;
        show(result);
      })
      .catch(function (error) {
        // A ticket from another session or knowledge base: start a new one next time.
        if (error && error.status === 400 && error.details.ticket) { forget(); }
        waiting.textContent = problem(error);
        // Nothing typed is lost: the question goes back into the box to be sent again.
        if (!input.value) { input.value = question; checkLength(); }
      })
      .then(function () { state.busy = false; send.disabled = false; input.focus(); });
  }

  // After a hand-off the box writes to the person, not to the engine.
  function tell(text) {
    state.busy = true;
    send.disabled = true;
    var mine = say("user", text);
    call("/api/v1/tickets/" + encodeURIComponent(state.ticket) + "/messages", { text: text })
      .then(function (item) { state.shown[item.id] = true; if (item.seq > state.cursor) state.cursor = item.seq; markSeen(); })
      .catch(function (error) {
        mine.remove();
        say("note", problem(error));
        if (!input.value) { input.value = text; checkLength(); }
        if (error && error.status === 404) forget();
      })
      .then(function () { state.busy = false; send.disabled = false; input.focus(); });
  }

  function handOff() {
    if (!state.ticket || state.status !== "open") return;
    root.querySelectorAll(".human").forEach(function (button) { button.disabled = true; });
    call("/api/v1/tickets/" + encodeURIComponent(state.ticket) + "/handoff")
      .then(function (body) {
        (body.messages || []).forEach(function (item) { if (item.kind !== "question" && item.kind !== "answer") showItem(item); });
        setStatus(body.status);
        schedule();
        input.focus();  // the button pressed is gone: keep the keyboard in the panel
      })
      .catch(function (error) {
        root.querySelectorAll(".human").forEach(function (button) { button.disabled = false; });
        say("note", problem(error));
      });
  }

  launcher.addEventListener("click", open);
  close.addEventListener("click", shut);
  human.addEventListener("click", handOff);
  panel.addEventListener("keydown", function (event) { if (event.key === "Escape") shut(); });
  input.addEventListener("keydown", function (event) {
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME composition (pinyin) does not send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  function checkLength() {
    var length = Array.from(input.value.trim()).length;  // code points, as the API counts
    var over = length > MAX_QUESTION;
    limit.hidden = !over;
    limit.textContent = over ? t.tooLong.replace("{n}", length).replace("{max}", MAX_QUESTION) : "";
    if (over) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    return !over;
  }
  input.addEventListener("input", checkLength);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value.trim();
    if (!question || state.busy || !checkLength()) return;
    input.value = "";
    if (state.status === "resolved") forget();  // a closed conversation: the next question opens a new one
    if (state.ticket && state.status === "handed_off") tell(question); else ask(question);
  });

  function mount() {
    document.body.appendChild(host);
    if (state.ticket) restore();
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
