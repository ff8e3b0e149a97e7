// Reverie dream studio: the page's side of the protocol in reverie/studio/session.py.
"use strict";

const $ = (id) => document.getElementById(id);

// A game's keys come from the server (info.keys: key -> action name, registered with the game's plug-in).
const ATARI_KEYS = new Set(["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", " "]);
const MAX_PENDING = 4; // steps in flight before further key presses are dropped (key auto-repeat)

const studio = { info: null, ws: null, pending: 0, done: true, started: false, held: new Set(), timer: null };

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  studio.ws = ws;
  ws.onopen = () => status("connected");
  ws.onclose = () => status("disconnected: reload the page to reconnect", true);
  ws.onmessage = (event) => receive(JSON.parse(event.data));
}

function send(message) {
  if (!studio.ws || studio.ws.readyState !== WebSocket.OPEN) return false;
  studio.ws.send(JSON.stringify(message));
  return true;
}

function receive(msg) {
  if (msg.type === "info") setup(msg);
  else if (msg.type === "frame") showFrame(msg);
  else if (msg.type === "saved") note(`recorded ${msg.episodes} episodes to ${msg.path}`);
  else if (msg.type === "error") {
    studio.pending = Math.max(0, studio.pending - 1);
    note(msg.message, true);
  }
}

// ------------------------------------------------------------------ setup from the info message
function setup(info) {
  studio.info = info;
  $("env").textContent = info.env;
  showStart(info.start, null);
  $("real").disabled = !info.has_real_env;
  buildScreen($("dream-screen"), info.obs);
  buildScreen($("real-screen"), info.obs);
  buildActions(info);
  $("keys").textContent = keyHelp(info);
  reset();
}

// The header says what seeds each dream: the real env, or a dataset (and, after a reset, which recorded steps).
function showStart(source, start) {
  let text = "start: model prior";
  if (source.source === "env") text = `start: real env (${studio.info.context} frames, random actions)`;
  else if (source.source === "dataset") {
    const name = source.path.split(/[\\/]/).filter(Boolean).pop() || source.path;
    text = `start: dataset ${name}`;
    if (start && start.source === "dataset") {
      text += `, episode ${start.episode}, steps ${start.start}-${start.start + start.context - 1}`;
    } else text += ` (${source.episodes} episodes)`;
  }
  $("start").textContent = text;
  $("start").title = source.source === "dataset" ? source.path : "";
  $("reset").title = `Esc: a new dream, seeded from the ${source.source === "dataset" ? "dataset" : source.source}`;
}

function buildScreen(screen, obs) {
  screen.replaceChildren();
  for (const [key, spec] of Object.entries(obs)) {
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `${key} ${JSON.stringify(spec.shape)}`;
    const view = document.createElement(spec.image ? "img" : "canvas");
    view.dataset.key = key;
    if (spec.image) view.alt = key;
    else Object.assign(view, { width: 256, height: 128 });
    screen.append(view, label);
  }
}

function buildActions(info) {
  const box = $("actions");
  box.replaceChildren();
  const act = info.action;
  if (act.discrete) {
    act.names.forEach((name, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${index}: ${name}`;
      button.onclick = () => step(index);
      box.append(button);
    });
    return;
  }
  act.low.forEach((low, i) => {
    const label = document.createElement("label");
    const slider = Object.assign(document.createElement("input"), {
      type: "range", min: low, max: act.high[i], step: (act.high[i] - low) / 100, value: (low + act.high[i]) / 2,
    });
    slider.className = "slider";
    const value = document.createElement("span");
    value.textContent = Number(slider.value).toFixed(2);
    slider.oninput = () => { value.textContent = Number(slider.value).toFixed(2); };
    label.append(`a[${i}]`, slider, value);
    box.append(label);
  });
  const button = Object.assign(document.createElement("button"), { type: "button", textContent: "step (Enter)" });
  button.onclick = () => step(sliderAction());
  box.append(button);
}

function keyHelp(info) {
  const common = "Esc: reset";
  if (!info.action.discrete) return `Enter or space: step with the slider values\n${common}`;
  if (info.keymap === "keys") {
    const label = (key) => (key === " " ? "space" : key);
    const pairs = Object.entries(info.keys).map(([key, name]) => `${label(key)}: ${name.replaceAll("_", " ")}`);
    const lines = [];
    for (let i = 0; i < pairs.length; i += 4) lines.push(pairs.slice(i, i + 4).join("   "));
    return `${lines.join("\n")}\n${common}`;
  }
  if (info.keymap === "atari") return `arrows: move   space: fire (hold arrows to combine)   n: noop\n${common}`;
  return `0-9: action by number (or click the buttons)\n${common}`;
}

// ------------------------------------------------------------------ keyboard
function keyAction(event) {
  const act = studio.info.action;
  if (!act.discrete) return event.key === "Enter" || event.key === " " ? sliderAction() : null;
  const names = act.names;
  if (studio.info.keymap === "keys") {
    const name = studio.info.keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    return name === undefined ? null : names.indexOf(name);
  }
  if (studio.info.keymap === "atari" && (ATARI_KEYS.has(event.key) || event.key === "n")) {
    return event.key === "n" ? names.indexOf("NOOP") : atariAction(names);
  }
  const digit = Number.parseInt(event.key, 10);
  return Number.isInteger(digit) && digit < act.n ? digit : null;
}

function atariAction(names) {
  const held = studio.held;
  const v = held.has("ArrowUp") ? "UP" : held.has("ArrowDown") ? "DOWN" : "";
  const h = held.has("ArrowRight") ? "RIGHT" : held.has("ArrowLeft") ? "LEFT" : "";
  const f = held.has(" ") ? "FIRE" : "";
  for (const name of [v + h + f, v + h, v + f, h + f, v, h, f]) {
    if (name && names.includes(name)) return names.indexOf(name);
  }
  return null;
}

function sliderAction() {
  return Array.from(document.querySelectorAll("#actions .slider"), (s) => Number(s.value));
}

document.addEventListener("keydown", (event) => {
  if (!studio.info || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.type === "range" && event.key.startsWith("Arrow")) return; // the slider moves
  if (event.key === "Escape") {
    event.preventDefault();
    reset();
    return;
  }
  studio.held.add(event.key);
  const action = keyAction(event);
  if (action === null || action === -1) return;
  event.preventDefault();
  step(action);
});
document.addEventListener("keyup", (event) => studio.held.delete(event.key));
window.addEventListener("blur", () => studio.held.clear());

// ------------------------------------------------------------------ actions
function step(action) {
  if (studio.done) {
    note(studio.started ? "the dream is over: press Esc or Reset" : "the dream is starting...", studio.started);
    return;
  }
  if (studio.pending >= MAX_PENDING) return;
  if (send({ type: "step", action })) studio.pending += 1;
}

function agentStep() {
  studio.timer = null;
  if (!$("agent").checked || studio.pending > 0) return;
  if (studio.done) reset();
  else if (send({ type: "step", agent: true })) studio.pending += 1;
}

function scheduleAgent() {
  if ($("agent").checked && studio.timer === null) {
    studio.timer = setTimeout(agentStep, 1000 / Number($("speed").value));
  }
}

// A new dream from the studio's start source (reverie studio --start): the server keeps it across resets.
function reset() {
  if (send({ type: "reset" })) studio.pending += 1;
}

$("reset").onclick = reset;
$("agent").onchange = scheduleAgent;
$("real").onchange = () => send({ type: "options", real: $("real").checked });
$("record").onchange = () => send({ type: "options", record: $("record").checked });
$("speed").oninput = () => { $("speed-text").textContent = $("speed").value; };

// ------------------------------------------------------------------ drawing
function showFrame(msg) {
  studio.pending = Math.max(0, studio.pending - 1);
  studio.started = true;
  studio.done = msg.terminated || msg.truncated;
  if (msg.start) showStart(studio.info.start, msg.start);
  draw($("dream-screen"), msg.frames, msg.vectors);
  $("real-view").hidden = msg.real === null;
  if (msg.real !== null) {
    draw($("real-screen"), msg.real.frames, msg.real.vectors);
    $("real-state").textContent = msg.real_done ? "(episode over)" : "";
  }
  $("step").textContent = msg.step;
  $("reward").textContent = fmt(msg.reward);
  $("return").textContent = fmt(msg.return);
  $("cont").value = msg.cont ?? 0;
  $("cont-text").textContent = fmt(msg.cont);
  $("uncertainty").textContent =
    msg.uncertainty === null || msg.uncertainty === undefined
      ? "n/a"
      : fmt(msg.uncertainty) + (msg.unknown ? " (the model does not know)" : "");
  $("real-reward").textContent = msg.real_reward === null ? "-" : fmt(msg.real_reward);
  $("dream-view").classList.toggle("over", studio.done);
  if (msg.terminated) note("the model predicts the episode ends (continue < 0.5): Esc resets");
  else if (msg.truncated) note(`truncated at ${msg.step} steps: Esc resets`);
  else note("");
  status(msg.recording ? "connected, recording" : "connected");
  scheduleAgent();
}

function draw(screen, frames, vectors) {
  for (const view of screen.querySelectorAll("[data-key]")) {
    const key = view.dataset.key;
    if (key in frames) view.src = frames[key];
    else if (key in vectors) bars(view, vectors[key]);
  }
}

// A vector as bars around a zero line, scaled by symlog so that large entries do not hide small ones.
function bars(canvas, values) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const scaled = values.map((v) => (v === null ? 0 : Math.sign(v) * Math.log1p(Math.abs(v))));
  const top = Math.max(1e-6, ...scaled.map(Math.abs));
  const w = width / Math.max(1, scaled.length);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = "#7cc4ff";
  scaled.forEach((v, i) => {
    const h = (v / top) * (height / 2 - 4);
    ctx.fillRect(i * w + 1, height / 2 - Math.max(h, 0), Math.max(1, w - 2), Math.abs(h));
  });
  ctx.fillStyle = "#9aa1ad";
  ctx.fillRect(0, height / 2, width, 1);
  if (values.length <= 8) {
    ctx.font = "11px monospace";
    values.forEach((v, i) => ctx.fillText(fmt(v), i * w + 2, height - 4));
  }
}

function fmt(x) {
  return x === null || x === undefined ? "-" : Number(x).toFixed(3);
}

function note(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

connect();
