// One run: its DAG (or state machine with the path taken) coloured by step status, live from the
// run's stream; the step drawer; the run's actions by role; a timeline of attempts.

import { api, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { DagView } from "../dag.js";
import { between, clear, duration, h, json, section, short, statusBadge, time } from "../dom.js";
import { Drawer } from "../drawer.js";
import { follow } from "../sse.js";
import { timeline } from "../timeline.js";

const ENDED = ["succeeded", "failed", "cancelled"];

export async function render(main, [runId], query) {
  const [graph, first] = await Promise.all([api(`runs/${enc(runId)}/graph`), api(`runs/${enc(runId)}`, { query: { attempts: "true" } })]);
  let run = first;
  const header = h("div", { class: "run-head" });
  const live = h("span", { class: "live", "data-state": "connecting" }, "connecting");
  const canvas = h("div", { class: "canvas" });
  const tools = h("div", { class: "tools" }, [
    h("button", { type: "button", title: "zoom in", onclick: () => dag.zoom(1.25) }, "+"),
    h("button", { type: "button", title: "zoom out", onclick: () => dag.zoom(0.8) }, "−"),
    h("button", { type: "button", title: "fit", onclick: () => dag.fit() }, "fit"),
    live,
  ]);
  const stage = h("div", { class: "stage" }, [canvas, tools]);
  const gantt = h("div", {});
  const outputs = h("div", {});
  main.append(header, stage, section("timeline", gantt), outputs);

  const drawer = new Drawer(stage, {
    onClose: () => dag.select(null),
    onChanged: () => reload(),
  });
  const dag = new DagView(canvas, graph, {
    onSelect: (step) => {
      dag.select(step);
      drawer.open(runId, step, run);
      dag.reveal(step, drawer.el.offsetWidth);
    },
    childHref: (step) => {
      const view = run.steps?.[step] ?? latestVisit(run, step);
      return view?.child_run ? `#/runs/${enc(view.child_run)}` : null;
    },
  });
  canvas.dataset.drawn = String(dag.drawn());

  const paintHead = () => {
    clear(header).append(
      h("div", { class: "title" }, [
        h("h1", {}, [h("a", { href: `#/workflows/${enc(run.workflow)}` }, run.workflow), " ", statusBadge(run.status)]),
        h("p", { class: "muted mono" }, [
          `run ${run.run_id} · version ${short(run.version)} · started ${time(run.started_at || run.created_at)} · `,
          `took ${duration(between(run.started_at, run.finished_at))}`,
          run.started_by ? ` · by ${run.started_by}` : "",
          run.parent ? [" · parent ", h("a", { href: `#/runs/${enc(run.parent.run_id)}` }, short(run.parent.run_id))] : "",
        ]),
        run.error ? h("p", { class: "error-text" }, run.error) : null,
      ]),
      runActions(run, reload) ?? h("span", {}),
    );
    clear(outputs);
    if (run.outputs && Object.keys(run.outputs).length) outputs.append(section("outputs", json(run.outputs)));
    if (run.dead_letters?.length) {
      outputs.append(section("dead letters", h("ul", {}, run.dead_letters.map((d) => h("li", {}, [h("a", { href: `#/dlq/${enc(d.id)}` }, d.id), ` ${d.status}`])))));
    }
  };
  const paintGantt = () => clear(gantt).append(timeline(run, { width: (gantt.clientWidth || 900) - 4 }));
  const apply = (view) => {
    run = view;
    dag.update(run.steps);
    if (graph.kind === "machine") dag.path(run.transitions, run.state);
    paintHead();
  };

  let lastReload = 0; // how long the last full view took: a large run is reloaded less often
  async function reload() {
    const began = performance.now();
    apply(await api(`runs/${enc(runId)}`, { query: { attempts: "true" } }));
    // an ended run brought back (retry, skip, accept): its stream had closed; follow it again
    if (!ENDED.includes(run.status) && live.dataset.state === "ended") {
      stream.stop();
      followRun();
    }
    paintGantt();
    drawer.refresh(run);
    lastReload = performance.now() - began;
  }

  apply(first);
  paintGantt();
  const wanted = query.get("step");
  if (wanted) dag.options.onSelect(wanted);

  let ganttTimer = null;
  let stream = null;
  const followRun = () => {
    stream = follow(
      `/api/v1/runs/${enc(runId)}/stream`,
      {
        run: (view) => {
          // the full view (again, after a reconnect): attempts come from the next reload
          apply({ ...view, steps: { ...run.steps, ...view.steps } });
        },
        change: (change) => {
          const steps = { ...run.steps };
          for (const [name, view] of Object.entries(change.steps || {})) steps[name] = { ...steps[name], ...view };
          run = { ...run, ...change.run, steps };
          dag.update(change.steps);
          if (graph.kind === "machine" && change.run?.transitions) dag.path(run.transitions, run.state);
          paintHead();
          // the timeline, a machine's path and the open drawer follow with one full view, at most
          // one per interval (5x what the last one took), whatever the rate of changes
          ganttTimer ??= setTimeout(() => {
            ganttTimer = null;
            reload().catch((error) => console.warn("reload", error.message));
          }, Math.max(700, 5 * lastReload));
        },
        end: () => reload(),
      },
      {
        onState: (state) => {
          live.dataset.state = state;
          live.textContent = state === "live" ? "live" : state === "ended" ? "ended" : "reconnecting…";
        },
      },
    );
  };
  followRun();
  if (ENDED.includes(run.status)) live.textContent = "ended";
  return () => {
    stream.stop();
    clearTimeout(ganttTimer);
  };
}

function latestVisit(run, state) {
  let found = null;
  for (const [name, view] of Object.entries(run.steps || {})) if (name === state || name.startsWith(`${state}#`)) found = view;
  return found;
}

function runActions(run, reload) {
  const post = (what, body = {}) => api(`runs/${enc(run.run_id)}/${what}`, { method: "POST", body }).then(async (r) => (await reload(), r));
  const ended = ENDED.includes(run.status);
  return bar(
    !ended && run.status !== "paused" ? action("operator", "Pause", () => post("pause")) : null,
    run.status === "paused" ? action("operator", "Resume", () => post("resume")) : null,
    ["failed", "cancelled"].includes(run.status) ? action("operator", "Retry", () => post("retry")) : null,
    !ended ? action("operator", "Cancel", () => post("cancel"), { kind: "danger", confirm: `Cancel run ${run.run_id}?` }) : null,
  );
}
