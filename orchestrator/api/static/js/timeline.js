// A Gantt chart of a run's attempts (the run view with attempts=true): one row per step, one bar
// per attempt from started_at to finished_at (a running one to now); a foreach step's items are
// one span, from its first start to its last finish, so 10,000 items are still one row.

import { duration, h, s } from "./dom.js";

const ROW = 22;
const LEFT = 170;
const MAX_ROWS = 200;

function spans(name, step) {
  const log = step.attempt_log || [];
  const bars = log.filter((a) => a.started_at).map((a) => ({ start: a.started_at, end: a.finished_at, status: a.status, label: `attempt ${a.number}` }));
  if (step.item_attempts) {
    let start = null;
    let end = null;
    let n = 0;
    let failed = 0;
    for (const tries of Object.values(step.item_attempts)) {
      for (const a of tries) {
        n += 1;
        if (a.status === "failed") failed += 1;
        if (a.started_at && (!start || a.started_at < start)) start = a.started_at;
        if (a.finished_at && (!end || a.finished_at > end)) end = a.finished_at;
      }
    }
    if (start) bars.push({ start, end: step.finished_at || end, status: step.status, label: `${n} item attempts${failed ? `, ${failed} failed` : ""}` });
  }
  if (!bars.length && step.started_at) bars.push({ start: step.started_at, end: step.finished_at, status: step.status, label: step.status });
  return bars.map((b) => ({ ...b, name }));
}

export function timeline(run, { all = false, width = 900 } = {}) {
  const rows = Object.entries(run.steps || {})
    .map(([name, step]) => ({ name, bars: spans(name, step) }))
    .filter((r) => r.bars.length);
  if (!rows.length) return h("p", { class: "muted empty" }, "No attempts yet.");
  const now = Date.now();
  const t = (iso) => (iso ? new Date(iso).getTime() : now);
  let min = Infinity;
  let max = -Infinity;
  for (const r of rows) for (const b of r.bars) {
    min = Math.min(min, t(b.start));
    max = Math.max(max, t(b.end));
  }
  rows.sort((a, b) => t(a.bars[0].start) - t(b.bars[0].start));
  const shown = all ? rows : rows.slice(0, MAX_ROWS);
  width = Math.max(480, Math.round(width));
  const span = Math.max(1, max - min);
  const x = (ms) => LEFT + ((ms - min) / span) * (width - LEFT - 10);
  const height = shown.length * ROW + 24;
  const svg = s("svg", { class: "gantt", viewBox: `0 0 ${width} ${height}`, width, height });
  for (let i = 0; i <= 4; i++) {
    const gx = LEFT + (i / 4) * (width - LEFT - 10);
    svg.append(s("line", { class: "tick", x1: gx, x2: gx, y1: 0, y2: height - 18 }));
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(s("text", { class: "tick-label", x: gx, y: height - 4, "text-anchor": anchor }, `+${duration((span * i) / 4000)}`));
  }
  shown.forEach((r, i) => {
    const y = i * ROW + 4;
    svg.append(s("text", { class: "row-label", x: LEFT - 8, y: y + 13, "text-anchor": "end" }, r.name.length > 24 ? `${r.name.slice(0, 23)}…` : r.name));
    for (const b of r.bars) {
      const x1 = x(t(b.start));
      const w = Math.max(2, x(t(b.end)) - x1);
      svg.append(
        s("rect", { class: `span st-${b.status}`, x: x1, y, width: w, height: ROW - 8, rx: 3 }, s("title", {}, `${r.name}: ${b.label}, ${b.status}, ${duration((t(b.end) - t(b.start)) / 1000)}`)),
      );
    }
  });
  const box = h("div", { class: "timeline" }, svg);
  if (rows.length > shown.length) box.append(h("p", { class: "muted" }, `${rows.length - shown.length} more steps not drawn`));
  return box;
}
