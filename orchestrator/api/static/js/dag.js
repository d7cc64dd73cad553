// The plan drawn as SVG: a layered layout (layers from the graph endpoint, order within a layer
// by two barycenter passes), wide layers collapsed into group nodes with status counts, pan and
// zoom, and live updates applied by patching classes and texts of the nodes that changed.
// Every step is linear in nodes + edges: the SVG is built once per layout, never per update.

import { s } from "./dom.js";
import { GROUP_LIMIT, NODE_H, NODE_W, layoutBoxes, orderLayers } from "./layout.js";
import { PanZoom } from "./panzoom.js";

export { GROUP_LIMIT };

const LABEL_MAX = 22;
const ACTIVE = ["running", "waiting", "queued"];
const RANK = { failed: 6, running: 5, waiting: 4, queued: 3, cancelled: 2, pending: 1, skipped: 0, succeeded: 0 };

/** The state a machine's visit row belongs to: "review#2" -> "review". */
export function stateOf(row) {
  const m = /^(.+)#\d+$/.exec(row);
  return m ? m[1] : row;
}

/** What a node does, briefly: a task's function name ("pkg.mod:fn" -> "fn"), else its detail. */
function does(n) {
  const detail = n.detail || n.kind;
  if (n.kind === "task" && detail.includes(":")) return detail.slice(detail.lastIndexOf(":") + 1);
  return detail;
}

function clip(text, max = LABEL_MAX) {
  text = String(text ?? "");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** "37/200": finished items over all, for a foreach step's view. */
export function progress(items) {
  if (!items || !items.total) return null;
  const open = ACTIVE.reduce((n, k) => n + (items[k] || 0), 0) + (items.pending || 0);
  return { done: items.total - open, total: items.total, failed: items.failed || 0 };
}

export class DagView {
  /**
   * graph: the graph endpoint's answer; options.onSelect(stepId) when a node is clicked;
   * options.childHref(stepId) -> "#/runs/<child>" or null for a sub-workflow node.
   */
  constructor(container, graph, options = {}) {
    this.container = container;
    this.graph = graph;
    this.options = options;
    this.expanded = new Set(); // layers drawn node by node although wide
    this.status = new Map(); // step id -> status
    this.views = new Map(); // step id -> latest step view
    this.taken = new Map(); // "from\u0000to" -> times (state machines)
    this.current = null; // a machine's current state
    this.selected = null;
    this.svg = s("svg", { class: "dag", role: "img", "aria-label": `graph of ${graph.workflow}` });
    this.viewport = s("g", { class: "viewport" });
    this.svg.append(defs(), this.viewport);
    container.append(this.svg);
    this.byId = new Map(graph.nodes.map((n) => [n.id, n]));
    this.preds = new Map(graph.nodes.map((n) => [n.id, []]));
    this.succs = new Map(graph.nodes.map((n) => [n.id, []]));
    for (const e of graph.edges) {
      if (!this.byId.has(e.from) || !this.byId.has(e.to)) continue;
      this.preds.get(e.to).push(e.from);
      this.succs.get(e.from).push(e.to);
    }
    this.layers = [];
    for (const n of graph.nodes) (this.layers[n.layer] ??= []).push(n.id);
    for (let i = 0; i < this.layers.length; i++) this.layers[i] ??= [];
    this.order();
    this.pan = new PanZoom(this.svg, this.viewport);
    this.render();
    this.fit();
  }

  /** Order within layers: by declaration, then barycenter passes (a machine keeps its
   * distance order: its loops read best that way). */
  order() {
    if (this.graph.kind !== "machine") orderLayers(this.layers, this.preds, this.succs);
  }

  /** Where each step is drawn: its own node, or its layer's group. */
  visibleOf(id) {
    const layer = this.byId.get(id).layer;
    return this.isGrouped(layer) ? `group:${layer}` : id;
  }

  isGrouped(layer) {
    return this.layers[layer].length > GROUP_LIMIT && !this.expanded.has(layer);
  }

  layout() {
    return layoutBoxes(this.layers, (layer) => this.isGrouped(layer));
  }

  render() {
    this.viewport.replaceChildren();
    const { boxes, width, height } = this.layout();
    this.size = { width, height };
    this.boxes = boxes;
    this.nodes = new Map(); // visible id -> {g, rect, sub, bar, link}
    this.edgeEls = new Map(); // "from\u0000to" (visible ids) -> path
    const edges = s("g", { class: "edges" });
    const nodes = s("g", { class: "nodes" });
    this.viewport.append(edges, nodes);
    for (const e of this.graph.edges) {
      if (!this.byId.has(e.from) || !this.byId.has(e.to)) continue;
      const a = this.visibleOf(e.from);
      const b = this.visibleOf(e.to);
      const key = `${a}\u0000${b}`;
      if (this.edgeEls.has(key)) continue;
      const path = this.edge(boxes.get(a), boxes.get(b), a === b, e.label);
      const wide = (id) => this.layers[this.byId.get(id).layer].length > GROUP_LIMIT;
      if (wide(e.from) || wide(e.to)) path.dataset.faint = "1"; // an expanded wide layer: many crossing edges
      this.edgeEls.set(key, path);
      edges.append(path);
    }
    for (const [id, box] of boxes) nodes.append(box.group !== undefined ? this.groupNode(id, box) : this.node(id, box));
    this.groupCounts = new Map();
    for (const [id, status] of this.status) this.count(this.visibleOf(id), null, status);
    for (const id of this.nodes.keys()) this.paint(id);
    this.paintEdges();
    this.pan.apply();
  }

  edge(a, b, self, label) {
    const g = s("g", { class: "edge" });
    let d;
    if (self) {
      const x = a.x + NODE_W / 2;
      d = `M${x - 20},${a.y} C${x - 30},${a.y - 40} ${x + 30},${a.y - 40} ${x + 20},${a.y}`;
    } else if (b.x <= a.x) {
      // a transition back (a loop in a machine): under the nodes
      const y = Math.max(a.y, b.y) + NODE_H + 28;
      d = `M${a.x + NODE_W / 2},${a.y + NODE_H} C${a.x + NODE_W / 2},${y} ${b.x + NODE_W / 2},${y} ${b.x + NODE_W / 2},${b.y + NODE_H}`;
    } else {
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    }
    g.append(s("path", { d, "marker-end": "url(#arrow)" }));
    if (label) {
      const lx = self ? a.x + NODE_W / 2 : (a.x + NODE_W + b.x) / 2;
      const ly = self ? a.y - 34 : b.x <= a.x ? Math.max(a.y, b.y) + NODE_H + 22 : (a.y + b.y + NODE_H) / 2 - 4;
      g.append(s("text", { class: "edge-label", x: lx, y: ly, "text-anchor": "middle" }, [clip(label, 34), s("title", {}, label)]));
    }
    return g;
  }

  node(id, box) {
    const n = this.byId.get(id);
    const g = s("g", { class: `node kind-${n.kind}`, transform: `translate(${box.x},${box.y})`, tabindex: 0, "data-step": id });
    const rect = s("rect", { width: NODE_W, height: NODE_H, rx: 7 });
    const title = s("title", {}, `${n.label} (${n.detail || n.kind})`);
    const label = s("text", { class: "label", x: 10, y: 19 }, clip(n.label));
    const sub = s("text", { class: "sub", x: 10, y: 36 }, clip(this.subtitle(n), 26));
    g.append(rect, title, label, sub);
    const record = { g, rect, sub, node: n };
    if (n.foreach) {
      g.append(s("rect", { class: "bar-bg", x: 10, y: NODE_H - 6, width: NODE_W - 20, height: 3, rx: 1.5 }));
      record.bar = s("rect", { class: "bar", x: 10, y: NODE_H - 6, width: 0, height: 3, rx: 1.5 });
      g.append(record.bar);
    }
    if (n.kind === "workflow") {
      record.link = s("a", { class: "child-link", href: "#" }, s("text", { x: NODE_W - 10, y: 19, "text-anchor": "end" }, "child ↗"));
      record.link.addEventListener("click", (event) => event.stopPropagation());
      record.link.setAttribute("visibility", "hidden");
      g.append(record.link);
    }
    const select = () => this.options.onSelect?.(id);
    g.addEventListener("click", select);
    g.addEventListener("keydown", (event) => event.key === "Enter" && select());
    this.nodes.set(id, record);
    return g;
  }

  groupNode(id, box) {
    const layer = box.group;
    const size = this.layers[layer].length;
    const g = s("g", { class: "node group", transform: `translate(${box.x},${box.y})`, tabindex: 0, "data-group": layer });
    g.append(
      s("rect", { class: "shadow", x: 6, y: 6, width: NODE_W, height: NODE_H + 20, rx: 7 }),
      s("rect", { width: NODE_W, height: NODE_H + 20, rx: 7 }),
      s("title", {}, `layer ${layer}: ${size} steps, click to expand`),
      s("text", { class: "label", x: 10, y: 19 }, `${size} steps · layer ${layer}`),
    );
    const sub = s("text", { class: "sub", x: 10, y: 37 }, "");
    const hint = s("text", { class: "sub hint", x: 10, y: 55 }, "click to expand");
    g.append(sub, hint);
    const expand = () => {
      this.expanded.add(layer);
      this.render();
      this.focusLayer(layer);
    };
    g.addEventListener("click", expand);
    g.addEventListener("keydown", (event) => event.key === "Enter" && expand());
    this.nodes.set(id, { g, sub, group: layer, rect: g.querySelector("rect:not(.shadow)") });
    return g;
  }

  subtitle(n) {
    if (n.foreach) return `foreach · ${does(n)}`;
    if (n.kind === "end") return `end: ${n.end}`;
    return does(n);
  }

  count(visible, before, after) {
    if (!visible.startsWith("group:")) return;
    const counts = this.groupCounts.get(visible) ?? new Map();
    this.groupCounts.set(visible, counts);
    if (before) counts.set(before, (counts.get(before) || 1) - 1);
    if (after) counts.set(after, (counts.get(after) || 0) + 1);
  }

  /**
   * Apply step views ({step: view}) from the run or from a change event: only the nodes named
   * are touched. A state machine's visit rows ("review#2") count for their state.
   */
  update(steps) {
    const touched = new Set();
    for (const [row, view] of Object.entries(steps || {})) {
      const id = this.graph.kind === "machine" ? stateOf(row) : row;
      if (!this.byId.has(id)) continue; // a compensation step: not in the plan's graph
      const before = this.status.get(id) ?? null;
      const after = view.status || "pending";
      this.views.set(id, view);
      if (before !== after) {
        this.status.set(id, after);
        this.count(this.visibleOf(id), before, after);
      }
      touched.add(this.visibleOf(id));
    }
    for (const id of touched) this.paint(id);
  }

  /** A machine's path: transitions [{from, to}] and the current state. */
  path(transitions, current) {
    this.taken = new Map();
    for (const t of transitions || []) {
      const key = `${t.from}\u0000${t.to}`;
      this.taken.set(key, (this.taken.get(key) || 0) + 1);
    }
    const previous = this.current;
    this.current = current ?? null;
    for (const id of [previous, this.current]) if (id && this.nodes.has(id)) this.paint(id);
    this.paintEdges();
  }

  paintEdges() {
    for (const [key, el] of this.edgeEls) {
      const times = this.taken.get(key) || 0;
      el.setAttribute("class", times ? "edge taken" : el.dataset.faint ? "edge faint" : "edge");
      let badge = el.querySelector(".times");
      if (times > 1) {
        if (!badge) {
          const label = el.querySelector("text.edge-label");
          if (label) badge = s("tspan", { class: "times" });
          else {
            const path = el.querySelector("path");
            const mid = path.getPointAtLength(path.getTotalLength() / 2);
            badge = s("text", { class: "times", x: mid.x, y: mid.y - 5, "text-anchor": "middle" });
          }
          (label || el).append(badge);
        }
        badge.textContent = ` ×${times}`;
      } else badge?.remove();
    }
  }

  paint(id) {
    const record = this.nodes.get(id);
    if (!record) return;
    if (record.group !== undefined) return this.paintGroup(id, record);
    const n = record.node;
    const status = this.status.get(id) || "pending";
    const view = this.views.get(id);
    const classes = [`node`, `kind-${n.kind}`, `st-${status}`];
    if (this.selected === id) classes.push("selected");
    if (this.current === id) classes.push("current");
    record.g.setAttribute("class", classes.join(" "));
    let sub = this.subtitle(n);
    if (n.foreach && view?.items) {
      const p = progress(view.items);
      sub = `${p.done}/${p.total}${p.failed ? ` · ${p.failed} failed` : ""} · ${status}`;
      record.bar.setAttribute("width", String(((NODE_W - 20) * p.done) / Math.max(1, p.total)));
    } else if (view) sub = `${status}${view.attempts > 1 ? ` · ${view.attempts} attempts` : ""} · ${does(n)}`;
    record.sub.textContent = clip(sub, 28);
    if (record.link) {
      const href = this.options.childHref?.(id);
      record.link.setAttribute("visibility", href ? "visible" : "hidden");
      if (href) record.link.setAttribute("href", href);
    }
  }

  paintGroup(id, record) {
    const counts = this.groupCounts.get(id) ?? new Map();
    const size = this.layers[record.group].length;
    let known = 0;
    let worst = "succeeded";
    const parts = [];
    for (const [status, n] of [...counts].sort((a, b) => (RANK[b[0]] ?? 0) - (RANK[a[0]] ?? 0))) {
      if (n <= 0) continue;
      known += n;
      parts.push(`${n} ${status}`);
      if ((RANK[status] ?? 0) > (RANK[worst] ?? 0)) worst = status;
    }
    if (size - known > 0) {
      parts.push(`${size - known} pending`);
      if (RANK.pending > (RANK[worst] ?? 0)) worst = "pending";
    }
    if (!known) worst = "pending";
    record.g.setAttribute("class", `node group st-${worst}`);
    record.sub.textContent = clip(parts.join(" · "), 30);
    record.g.querySelector("title").textContent = `layer ${record.group}: ${parts.join(", ")}; click to expand`;
  }

  select(id) {
    const before = this.selected;
    this.selected = id;
    if (before) this.paint(this.visibleOf(before));
    if (id && this.byId.has(id)) {
      if (this.isGrouped(this.byId.get(id).layer)) {
        this.expanded.add(this.byId.get(id).layer);
        this.render();
      }
      this.paint(id);
    }
  }

  /** After a layer expands: readable size, its first column at the left, its top in view. */
  focusLayer(layer) {
    const boxes = this.layers[layer].map((id) => this.boxes.get(id)).filter(Boolean);
    if (boxes.length) this.pan.focus(Math.min(...boxes.map((b) => b.x)), Math.min(...boxes.map((b) => b.y)));
  }

  /** Bring node ``id`` into view left of ``inset`` pixels (an open drawer). */
  reveal(id, inset = 0) {
    this.pan.reveal(this.boxes.get(this.visibleOf(id)), this.size, inset);
  }

  fit(inset = 0) {
    this.pan.fit(this.size, inset);
  }

  zoom(factor) {
    this.pan.zoom(factor);
  }

  /** How many nodes and groups are drawn (the page stays usable when this stays small). */
  drawn() {
    return this.nodes.size;
  }
}

function defs() {
  return s("defs", {}, [
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 9, markerHeight: 9, orient: "auto-start-reverse" }, [
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }),
    ]),
  ]);
}
