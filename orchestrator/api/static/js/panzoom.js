// Pan and zoom of an SVG drawing: one transform on one group, so the drawing is never rebuilt
// for it. Drag the background to pan, the wheel to zoom around the pointer.

import { NODE_W, PAD } from "./layout.js";

export class PanZoom {
  constructor(svg, group) {
    this.svg = svg;
    this.group = group;
    this.view = { x: PAD, y: PAD, k: 1 };
    this.listen();
  }

  apply() {
    const { x, y, k } = this.view;
    this.group.setAttribute("transform", `translate(${x},${y}) scale(${k})`);
  }

  zoom(factor, cx, cy) {
    const rect = this.svg.getBoundingClientRect();
    cx ??= rect.width / 2;
    cy ??= rect.height / 2;
    const k = Math.min(2.5, Math.max(0.05, this.view.k * factor));
    const ratio = k / this.view.k;
    this.view.x = cx - (cx - this.view.x) * ratio;
    this.view.y = cy - (cy - this.view.y) * ratio;
    this.view.k = k;
    this.apply();
  }

  /** The scale at which a drawing of ``size`` fits left of ``inset`` pixels on the right. */
  fitting(size, inset = 0) {
    const rect = this.svg.getBoundingClientRect();
    const w = (rect.width || 900) - inset;
    const h = rect.height || 420;
    return Math.min((w - 2 * PAD) / Math.max(1, size.width), (h - 2 * PAD) / Math.max(1, size.height + 40));
  }

  /** Scale (at most 1.2) and centre the whole drawing, left of ``inset`` pixels on the right. */
  fit(size, inset = 0) {
    const rect = this.svg.getBoundingClientRect();
    const w = (rect.width || 900) - inset;
    const h = rect.height || 420;
    this.view.k = Math.max(0.05, Math.min(1.2, this.fitting(size, inset)));
    this.view.x = Math.max(PAD, (w - size.width * this.view.k) / 2);
    this.view.y = Math.max(PAD + 10, (h - size.height * this.view.k) / 2);
    this.apply();
  }

  /** Top-left corner (x, y) of a region brought near the top left, at a readable scale. */
  focus(x, y) {
    this.view.k = Math.max(this.view.k, 0.75);
    this.view.x = PAD + 40 - x * this.view.k + (x > 0 ? NODE_W * 0.5 * this.view.k : 0);
    this.view.y = PAD + 40 - y * this.view.k;
    this.apply();
  }

  /** Bring ``box`` into view left of ``inset`` pixels: the whole drawing when it still reads
   * well there, else a pan to the box. */
  reveal(box, size, inset = 0) {
    if (this.fitting(size, inset) >= 0.6) return this.fit(size, inset);
    if (!box) return;
    const rect = this.svg.getBoundingClientRect();
    const right = (box.x + NODE_W) * this.view.k + this.view.x;
    const left = box.x * this.view.k + this.view.x;
    const room = rect.width - inset - PAD;
    if (right > room) this.view.x -= right - room;
    else if (left < PAD) this.view.x += PAD - left;
    this.apply();
  }

  listen() {
    let drag = null;
    this.svg.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const rect = this.svg.getBoundingClientRect();
        this.zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - rect.left, event.clientY - rect.top);
      },
      { passive: false },
    );
    this.svg.addEventListener("pointerdown", (event) => {
      if (event.target.closest(".node")) return;
      drag = { x: event.clientX, y: event.clientY, vx: this.view.x, vy: this.view.y };
      this.svg.setPointerCapture(event.pointerId);
      this.svg.classList.add("dragging");
    });
    this.svg.addEventListener("pointermove", (event) => {
      if (!drag) return;
      this.view.x = drag.vx + event.clientX - drag.x;
      this.view.y = drag.vy + event.clientY - drag.y;
      this.apply();
    });
    const end = () => {
      drag = null;
      this.svg.classList.remove("dragging");
    };
    this.svg.addEventListener("pointerup", end);
    this.svg.addEventListener("pointercancel", end);
  }
}
