/* Console enhancements: sortable tables, copy buttons, the workbench mode switch, charts.
   Every page works without this file; it only adds convenience. Text is set with textContent. */
(function () {
  "use strict";

  // --- sortable tables: <table data-sortable>, <th data-type="number|text"><button>…</button></th>,
  //     cells sort by data-value when present, else by their text.
  function cellValue(row, index, type) {
    const cell = row.children[index];
    const raw = cell ? (cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim()) : "";
    if (type === "number") {
      const number = parseFloat(raw);
      return Number.isNaN(number) ? -Infinity : number;
    }
    return raw.toLocaleLowerCase();
  }

  function sortBy(table, th) {
    const headers = Array.from(th.parentElement.children);
    const index = headers.indexOf(th);
    const type = th.dataset.type || "text";
    // First click: ascending, or descending for columns that say so (scores: best first).
    const current = th.getAttribute("aria-sort");
    const ascending = current ? current !== "ascending" : th.dataset.firstSort !== "descending";
    headers.forEach((other) => other.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellValue(a, index, type);
      const y = cellValue(b, index, type);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  }

  function initSortable(root) {
    root.querySelectorAll("table[data-sortable] thead th").forEach((th) => {
      const button = th.querySelector("button");
      if (button && !button.dataset.bound) {
        button.dataset.bound = "1";
        button.addEventListener("click", () => sortBy(th.closest("table"), th));
      }
    });
  }

  // --- copy: <button data-copy="#id-of-textarea-or-element">; the button's form (if any) then
  //     records the copy, so the click both copies and is logged as agent feedback.
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.style.position = "fixed";
    scratch.style.opacity = "0";
    document.body.appendChild(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
  }

  function initCopy(root) {
    root.querySelectorAll("[data-copy]").forEach((button) => {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", async () => {
        const source = document.querySelector(button.dataset.copy);
        if (!source) return;
        const text = "value" in source ? source.value : source.textContent;
        try {
          await copyText(text);
          button.textContent = button.dataset.copied || "Copied";
        } catch (error) {
          button.textContent = "Copy failed";
        }
      });
    });
  }

  // --- workbench: show the fields of the chosen mode only.
  function initModeSwitch(root) {
    root.querySelectorAll("form[data-mode]").forEach((form) => {
      if (form.dataset.modeBound) return;
      form.dataset.modeBound = "1";
      const update = () => {
        const checked = form.querySelector("input[name=mode]:checked");
        if (checked) form.dataset.mode = checked.value;
      };
      form.querySelectorAll("input[name=mode]").forEach((input) => input.addEventListener("change", update));
      update();
    });
  }

  // --- busy state for slow forms (a rerank takes a moment).
  function initBusy(root) {
    root.querySelectorAll("form[data-busy]").forEach((form) => {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", () => {
        const button = form.querySelector("button[type=submit]");
        if (button) {
          button.disabled = true;
          button.textContent = form.dataset.busy;
        }
      });
    });
  }

  // --- charts: <canvas data-chart="kind" data-source="id of a json_script">.
  const COLORS = { answer: "#1f7a4d", suggest: "#d08a00", handoff: "#b42332", accent: "#3056d3", grey: "#a4acbb",
    p50: "#3056d3", p95: "#8a4fd3" };

  function data(canvas) {
    const source = document.getElementById(canvas.dataset.source);
    return source ? JSON.parse(source.textContent) : null;
  }

  const percentAxis = { beginAtZero: true, max: 1, ticks: { callback: (v) => Math.round(v * 100) + "%" } };

  const builders = {
    "score-by-rank": (d) => {
      const gap = d.gap_after;
      const colors = d.scores.map((_, i) => (gap === null || i < gap ? COLORS.accent : COLORS.grey));
      const datasets = [{ type: "bar", label: "Rerank score", data: d.scores, backgroundColor: colors }];
      if (d.fused) {
        datasets.push({ type: "line", label: "Fused recall score", data: d.fused, borderColor: "#d08a00",
          backgroundColor: "#d08a00", pointRadius: 2, borderWidth: 1.5, tension: 0 });
      }
      if (d.thresholds) {
        datasets.push({ type: "line", label: "Answer threshold", data: d.labels.map(() => d.thresholds.answer),
          borderColor: COLORS.answer, borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 });
        datasets.push({ type: "line", label: "Suggest threshold", data: d.labels.map(() => d.thresholds.suggest),
          borderColor: COLORS.handoff, borderDash: [2, 3], pointRadius: 0, borderWidth: 1.5 });
      }
      return { data: { labels: d.labels, datasets },
        options: { scales: { y: { beginAtZero: true, suggestedMax: 1, title: { display: true, text: "score" } },
          x: { title: { display: true, text: "rank" } } } } };
    },
    "asks-daily": (d) => ({ type: "bar", data: { labels: d.labels, datasets: [
      { label: "answer", data: d.answer, backgroundColor: COLORS.answer },
      { label: "suggest", data: d.suggest, backgroundColor: COLORS.suggest },
      { label: "handoff", data: d.handoff, backgroundColor: COLORS.handoff }] },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } }),
    "mix": (d) => ({ type: "doughnut", data: { labels: ["answer", "suggest", "handoff"], datasets: [
      { data: d.mix, backgroundColor: [COLORS.answer, COLORS.suggest, COLORS.handoff] }] } }),
    "rates": (d) => ({ type: "line", data: { labels: d.labels, datasets: [
      { label: "cache hit rate", data: d.hit_rate, borderColor: COLORS.accent, backgroundColor: COLORS.accent, spanGaps: true },
      { label: "degraded rate", data: d.degraded_rate, borderColor: COLORS.handoff, backgroundColor: COLORS.handoff,
        spanGaps: true }] }, options: { scales: { y: percentAxis } } }),
    "latency": (d) => ({ type: "line", data: { labels: d.labels, datasets: [
      { label: "p50 ms", data: d.p50, borderColor: COLORS.p50, backgroundColor: COLORS.p50, spanGaps: true },
      { label: "p95 ms", data: d.p95, borderColor: COLORS.p95, backgroundColor: COLORS.p95, spanGaps: true }] },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } } } }),
  };

  function initCharts(root) {
    if (!window.Chart) return;
    root.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
      if (window.Chart.getChart(canvas)) return;
      const build = builders[canvas.dataset.chart];
      const d = data(canvas);
      if (!build || !d) return;
      const config = build(d);
      config.type = config.type || "bar";
      config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } }, config.options || {});
      new window.Chart(canvas, config);
    });
  }

  // --- selects that apply a filter as soon as they change: <select data-autosubmit>.
  function initAutosubmit(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach((select) => {
      if (select.dataset.bound) return;
      select.dataset.bound = "1";
      select.addEventListener("change", () => select.form.requestSubmit());
    });
  }

  // --- <textarea data-submit-on-ctrl-enter>: Ctrl+Enter (Cmd+Enter on a Mac) sends its form.
  function initCtrlEnter(root) {
    root.querySelectorAll("textarea[data-submit-on-ctrl-enter]").forEach((area) => {
      if (area.dataset.bound) return;
      area.dataset.bound = "1";
      area.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
          event.preventDefault();
          area.form.requestSubmit();
        }
      });
    });
  }

  function init(root) {
    initCtrlEnter(root);
    initAutosubmit(root);
    initSortable(root);
    initCopy(root);
    initModeSwitch(root);
    initBusy(root);
    initCharts(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    init(document);
    // Content swapped in by htmx gets the same treatment.
    if (window.htmx) window.htmx.onLoad((element) => init(element));
  });
})();
