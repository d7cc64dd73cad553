// Simple SVG bar charts for the report: horizontal bars with their values as text.

import { h, s } from "./dom.js";

/**
 * rows: [{label, values: [{value, cls, title}]}] drawn as side-by-side (grouped) bars per row;
 * format(value) gives the text after each bar.
 */
export function bars(rows, { format = String, max, width = 840 } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, "No data.");
  const left = 150;
  const barH = 12;
  const per = rows[0].values.length;
  const rowH = per * (barH + 3) + 10;
  const top = Math.max(1e-9, max ?? Math.max(...rows.flatMap((r) => r.values.map((v) => v.value ?? 0))));
  const height = rows.length * rowH + 4;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height });
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    svg.append(s("text", { class: "row-label", x: left - 8, y: y + barH, "text-anchor": "end" }, r.label.length > 22 ? `${r.label.slice(0, 21)}…` : r.label));
    r.values.forEach((v, j) => {
      const by = y + j * (barH + 3);
      const w = v.value ? Math.max(1, ((width - left - 80) * v.value) / top) : 0;
      svg.append(s("rect", { class: `bar ${v.cls || ""}`, x: left, y: by, width: w, height: barH, rx: 2 }, s("title", {}, `${r.label} ${v.title || ""}: ${format(v.value)}`)));
      svg.append(s("text", { class: "value", x: left + w + 5, y: by + barH - 2 }, format(v.value)));
    });
  });
  return svg;
}

/** One stacked bar of parts [{value, cls, label}] with a legend. */
export function stacked(parts, { width = 840, format = String } = {}) {
  const total = parts.reduce((n, p) => n + (p.value || 0), 0);
  const svg = s("svg", { class: "chart stacked", viewBox: `0 0 ${width} 22`, width, height: 22 });
  let x = 0;
  for (const p of parts) {
    if (!p.value) continue;
    const w = (width * p.value) / Math.max(1, total);
    svg.append(s("rect", { class: `bar ${p.cls}`, x, y: 2, width: w, height: 18 }, s("title", {}, `${p.label}: ${format(p.value)}`)));
    x += w;
  }
  if (!total) svg.append(s("rect", { class: "bar empty", x: 0, y: 2, width, height: 18 }));
  const legend = h("div", { class: "legend" }, parts.map((p) => h("span", { class: `key ${p.cls}` }, p.plain ? p.label : `${p.label} ${format(p.value ?? 0)}`)));
  return h("div", { class: "stack" }, [svg, legend]);
}

/** Columns over time: [{label, value}], e.g. runs per bucket. */
export function columns(points, { width = 840, height = 90, format = String } = {}) {
  if (!points.length) return h("p", { class: "muted empty" }, "No data.");
  const top = Math.max(1, ...points.map((p) => p.value || 0));
  const w = width / points.length;
  const svg = s("svg", { class: "chart columns", viewBox: `0 0 ${width} ${height + 14}`, width, height: height + 14 });
  points.forEach((p, i) => {
    const bh = ((p.value || 0) / top) * height;
    svg.append(s("rect", { class: "bar", x: i * w + 1, y: height - bh, width: Math.max(1, w - 2), height: bh }, s("title", {}, `${p.label}: ${format(p.value)}`)));
  });
  svg.append(s("text", { class: "tick-label", x: 0, y: height + 12 }, points[0].label));
  svg.append(s("text", { class: "tick-label", x: width, y: height + 12, "text-anchor": "end" }, points[points.length - 1].label));
  return svg;
}
