// The layered layout of a graph: the order within each layer (a downward and an upward
// barycenter pass over the layers the graph endpoint gives) and each drawn box's position.
// Both are linear in nodes + edges (but for the sort within each layer).

export const GROUP_LIMIT = 25; // a layer with more nodes than this is drawn as one group node
export const NODE_W = 168;
export const NODE_H = 46;
export const PAD = 24;
const COL_GAP = 60;
const ROW_GAP = 14;
const WRAP_GAP = 24;

/** Sort each layer (arrays of ids, in place) by the mean position of its neighbours. */
export function orderLayers(layers, preds, succs) {
  const pos = new Map();
  const place = (layer) => layer.forEach((id, i) => pos.set(id, layer.length > 1 ? i / (layer.length - 1) : 0.5));
  layers.forEach(place);
  const pass = (some, neighbours) => {
    for (const layer of some) {
      const key = new Map();
      for (const id of layer) {
        const near = neighbours.get(id).filter((n) => pos.has(n));
        key.set(id, near.length ? near.reduce((a, n) => a + pos.get(n), 0) / near.length : pos.get(id));
      }
      layer.sort((a, b) => key.get(a) - key.get(b));
      place(layer);
    }
  };
  pass(layers.slice(1), preds);
  pass(layers.slice(0, -1).reverse(), succs);
}

/**
 * Boxes by drawn id: one column per layer, left to right; a grouped layer is one box
 * ("group:<layer>"), an expanded wide layer wraps into columns of GROUP_LIMIT. Columns are
 * centred vertically. Returns {boxes, width, height}.
 */
export function layoutBoxes(layers, isGrouped) {
  const boxes = new Map();
  let x = 0;
  let height = 0;
  layers.forEach((layer, index) => {
    if (!layer.length) return;
    if (isGrouped(index)) {
      boxes.set(`group:${index}`, { x, y: 0, group: index });
      height = Math.max(height, NODE_H + 20);
      x += NODE_W + COL_GAP;
      return;
    }
    const columns = Math.ceil(layer.length / GROUP_LIMIT);
    layer.forEach((id, i) => {
      const col = Math.floor(i / GROUP_LIMIT);
      const row = i % GROUP_LIMIT;
      boxes.set(id, { x: x + col * (NODE_W + WRAP_GAP), y: row * (NODE_H + ROW_GAP), id });
    });
    height = Math.max(height, Math.min(layer.length, GROUP_LIMIT) * (NODE_H + ROW_GAP));
    x += columns * (NODE_W + WRAP_GAP) - WRAP_GAP + COL_GAP;
  });
  const columnHeight = new Map();
  for (const box of boxes.values()) columnHeight.set(box.x, Math.max(columnHeight.get(box.x) ?? 0, box.y + NODE_H));
  for (const box of boxes.values()) box.y += (height - columnHeight.get(box.x)) / 2;
  return { boxes, width: x, height };
}
