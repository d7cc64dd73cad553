// Server-sent events read with fetch and a ReadableStream (EventSource cannot send the
// Authorization header), with reconnection when the stream drops.

import { askToken, headers } from "./api.js";

/** Split a text/event-stream into events; calls onEvent(type, data) for each complete one. */
export class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.type = "";
    this.data = [];
  }

  feed(text) {
    this.buffer += text;
    let cut;
    while ((cut = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (this.buffer[cut] === "\r" && cut === this.buffer.length - 1) break; // a \n may follow in the next chunk
      const line = this.buffer.slice(0, cut);
      const width = this.buffer.startsWith("\r\n", cut) ? 2 : 1;
      this.buffer = this.buffer.slice(cut + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"));
      this.type = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: ": ping"
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
  }
}

/**
 * Follow a stream: handlers[type](parsedJson) for each event. Reconnects (1s, growing to 15s)
 * when the connection drops, until the server sends `end` or stop() is called.
 * Returns {stop()}.
 */
export function follow(url, handlers, { onState } = {}) {
  let stopped = false;
  let controller = null;
  let delay = 1000;

  const dispatch = (type, text) => {
    const handler = handlers[type];
    if (!handler) return;
    let value = text;
    try {
      value = JSON.parse(text);
    } catch {
      /* not JSON: handed over as text */
    }
    handler(value);
  };

  async function connect() {
    while (!stopped) {
      controller = new AbortController();
      let ended = false;
      try {
        const response = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
        if (response.status === 401) {
          await askToken("");
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`stream: ${response.status}`);
        onState?.("live");
        delay = 1000;
        const parser = new EventParser((type, data) => {
          if (type === "end") ended = true;
          dispatch(type, data);
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      } catch (error) {
        if (stopped) return;
        onState?.("reconnecting");
      }
      if (ended || stopped) {
        onState?.("ended");
        return;
      }
      onState?.("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  connect();
  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}
