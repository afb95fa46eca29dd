// sa-engine annotation page: click / box prompts on the server's model, brush and eraser,
// accept / delete / undo, next image. Masks travel as COCO RLE (rle.js); images by key only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [128, 0, 0], [170, 255, 195],
    [128, 128, 0],
  ];
  const CURRENT = [0, 229, 255];
  const DRAG_PIXELS = 6; // screen pixels of movement that turn a click into a box
  const MAX_REPORT_SECONDS = 3600; // idle time counted at most once per report

  const imageCanvas = $("image");
  const overlay = $("overlay");
  const imageCtx = imageCanvas.getContext("2d");
  const overlayCtx = overlay.getContext("2d");

  const S = {
    annotator: "", key: null, width: 0, height: 0,
    saved: [], selected: null, savedLayer: null,
    cur: emptyCurrent(), undo: [],
    tool: "points", radius: 8,
    lastReport: performance.now(),
    queue: Promise.resolve(), seq: 0,
    ready: false, decodeMs: null, roundTripMs: null, renderPending: false,
    pointer: null, // {x, y, sx, sy, button, shift, dragging, painting, last}
  };

  function emptyCurrent() {
    return {
      points: [], labels: [], box: null,
      proposals: null, scores: [], handle: null, choice: 0,
      edited: null, clicks: 0, strokes: 0, start: null, replaces: null,
    };
  }

  function snapshot(c) {
    return {
      ...c, points: c.points.slice(), labels: c.labels.slice(),
      edited: c.edited ? c.edited.slice() : null,
    };
  }

  // ---- server --------------------------------------------------------------------------

  async function api(path, body) {
    const options = body === undefined
      ? { method: "GET", credentials: "same-origin" }
      : {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      };
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
      throw new Error(`${response.status}: ${detail || response.statusText}`);
    }
    return data;
  }

  function say(text, isError) {
    const el = $("message");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  function imageSeconds() {
    const now = performance.now();
    const seconds = Math.min((now - S.lastReport) / 1000, MAX_REPORT_SECONDS);
    S.lastReport = now;
    return seconds;
  }

  // ---- images ----------------------------------------------------------------------------

  async function claimNext() {
    const { key } = await api("api/claim", { annotator: S.annotator });
    if (!key) {
      S.key = null;
      say("No image left for you in this round. Thank you!");
      return;
    }
    await openImage(key);
  }

  async function openImage(key) {
    S.ready = false;
    S.key = key;
    say(`Loading ${key}…`);
    const state = await api(`api/images/${key}`);
    const img = new Image();
    img.src = `api/images/${key}/image`;
    await img.decode();
    S.width = state.width;
    S.height = state.height;
    for (const canvas of [imageCanvas, overlay]) {
      canvas.width = S.width;
      canvas.height = S.height;
    }
    imageCtx.drawImage(img, 0, 0);
    fitCanvas();
    S.cur = emptyCurrent();
    S.undo = [];
    S.selected = null;
    setSaved(state.masks);
    $("image-key").textContent = key;
    S.lastReport = performance.now();
    const embed = await api(`api/images/${key}/embed`, {});
    S.ready = true;
    const took = embed.seconds == null ? "" : ` (embedding ${(embed.seconds * 1000).toFixed(0)} ms)`;
    say(`Ready${took}. Click an object.`);
    refreshProgress();
  }

  async function refreshProgress() {
    const info = await api("api/round");
    $("progress").textContent = `${info.images_done} / ${info.target_images} images done`;
    $("round").textContent = `${info.prefix} · ${info.stage} · model ${info.preset}`;
  }

  function setSaved(masks) {
    S.saved = masks.map((m) => ({
      id: m.id, provenance: m.provenance || {}, bitmap: RLE.decode(m.segmentation),
    }));
    if (!S.saved.some((m) => m.id === S.selected)) S.selected = null;
    fillParentChoices();
    rebuildSavedLayer();
    scheduleRender();
  }

  function fillParentChoices() {
    // "Part of": none, or one of the saved masks (the server checks it exists)
    const select = $("parent");
    const keep = select.value;
    select.replaceChildren(new Option("–", ""));
    S.saved.forEach((m) => select.add(new Option(`mask ${m.id}`, String(m.id))));
    select.value = S.saved.some((m) => String(m.id) === keep) ? keep : "";
  }

  // ---- prompts -----------------------------------------------------------------------------

  function startTimer() {
    if (S.cur.start === null) S.cur.start = performance.now();
  }

  function addPoint(x, y, label) {
    S.undo.push(snapshot(S.cur));
    startTimer();
    S.cur.points.push([x, y]);
    S.cur.labels.push(label);
    S.cur.clicks++;
    requestDecode();
  }

  function setBox(x0, y0, x1, y1) {
    S.undo.push(snapshot(S.cur));
    startTimer();
    S.cur.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    S.cur.clicks++;
    requestDecode();
  }

  function requestDecode() {
    const seq = ++S.seq;
    const key = S.key;
    scheduleRender();
    S.queue = S.queue.then(async () => {
      if (seq !== S.seq || key !== S.key) return; // a newer prompt supersedes this one
      const c = S.cur;
      const prompts = c.points.length + (c.box ? 1 : 0);
      if (prompts === 0) return;
      const body = {
        points: c.points, labels: c.labels, box: c.box,
        multimask: prompts === 1 && !c.box,
        mask_input: c.handle ? { handle: c.handle, index: c.choice } : null,
      };
      const started = performance.now();
      try {
        const result = await api(`api/images/${key}/decode`, body);
        if (key !== S.key || c !== S.cur) return;
        S.roundTripMs = performance.now() - started;
        S.decodeMs = result.decode_ms;
        c.proposals = result.masks.map((m) => RLE.decode(m));
        c.scores = result.scores;
        c.handle = result.handle;
        c.choice = result.scores.indexOf(Math.max(...result.scores));
        c.edited = null;
        scheduleRender();
      } catch (err) {
        say(`Decode failed: ${err.message}`, true);
      }
    });
  }

  function currentMask() {
    const c = S.cur;
    if (c.edited) return c.edited;
    return c.proposals ? c.proposals[c.choice] : null;
  }

  function choose(index) {
    const c = S.cur;
    if (!c.proposals || index >= c.proposals.length || (index === c.choice && !c.edited)) return;
    S.undo.push(snapshot(c));
    c.choice = index;
    c.edited = null;
    scheduleRender();
  }

  // ---- brush -------------------------------------------------------------------------------

  function startStroke(p) {
    S.undo.push(snapshot(S.cur));
    startTimer();
    const base = currentMask();
    S.cur.edited = base ? base.slice() : new Uint8Array(S.width * S.height);
    S.cur.strokes++;
    Draw.paint(S.cur.edited, S.width, S.height, p.x, p.y, S.radius, S.tool === "brush" ? 1 : 0);
    scheduleRender();
  }

  // ---- saved masks ---------------------------------------------------------------------------

  async function accept() {
    await S.queue;
    const mask = currentMask();
    if (!mask || !mask.some((v) => v)) {
      say("Nothing to accept: click an object first.", true);
      return;
    }
    const c = S.cur;
    const positive = c.points.find((_, i) => c.labels[i] === 1);
    const body = {
      annotator: S.annotator,
      mask: RLE.encode(mask, S.height, S.width),
      proposal: c.handle ? { handle: c.handle, index: c.choice } : null,
      replaces: c.replaces,
      clicks: c.clicks,
      brush_strokes: c.strokes,
      seconds: c.start === null ? 0 : (performance.now() - c.start) / 1000,
      image_seconds: imageSeconds(),
      point_coords: positive ? [positive] : [],
      granularity: $("granularity").value,
      parent_id: $("parent").value === "" ? null : Number($("parent").value),
    };
    try {
      const state = await api(`api/images/${S.key}/accept`, body);
      S.cur = emptyCurrent();
      S.undo = [];
      setSaved(state.masks);
      say(`Saved mask ${state.masks[state.masks.length - 1].id}.`);
    } catch (err) {
      say(`Not saved: ${err.message}`, true);
    }
  }

  async function removeMask(id) {
    try {
      const state = await api(`api/images/${S.key}/delete`, {
        annotator: S.annotator, mask_id: id, image_seconds: imageSeconds(),
      });
      setSaved(state.masks);
      say(`Deleted mask ${id}.`);
    } catch (err) {
      say(`Not deleted: ${err.message}`, true);
    }
  }

  function editMask(id) {
    const mask = S.saved.find((m) => m.id === id);
    if (!mask) return;
    S.undo.push(snapshot(S.cur));
    S.cur = emptyCurrent();
    S.cur.edited = mask.bitmap.slice();
    S.cur.replaces = id;
    startTimer();
    setTool("brush");
    say(`Editing mask ${id}: brush / eraser, then Enter.`);
    scheduleRender();
  }

  async function undo() {
    if (S.undo.length) {
      S.cur = S.undo.pop();
      scheduleRender();
      return;
    }
    try {
      const state = await api(`api/images/${S.key}/undo`, { annotator: S.annotator });
      setSaved(state.masks);
      say(state.undone ? "Undone." : "Nothing to undo.");
    } catch (err) {
      say(`Undo failed: ${err.message}`, true);
    }
  }

  function discard() {
    if (S.cur.start !== null || S.cur.proposals) {
      S.undo.push(snapshot(S.cur));
      S.cur = emptyCurrent();
    }
    S.selected = null;
    rebuildSavedLayer();
    scheduleRender();
  }

  async function nextImage() {
    if (currentMask()) {
      say("Accept (Enter) or discard (Esc) the current mask first.", true);
      return;
    }
    try {
      const result = await api(`api/images/${S.key}/finish`, {
        annotator: S.annotator, image_seconds: imageSeconds(),
      });
      if (result.next) await openImage(result.next);
      else {
        S.key = null;
        say("Round finished for you: no image left. Thank you!");
      }
      refreshProgress();
    } catch (err) {
      say(`Could not finish: ${err.message}`, true);
    }
  }

  // ---- drawing ---------------------------------------------------------------------------------

  // Show the image as large as the window allows (small images are scaled up).
  function fitCanvas() {
    if (!S.width) return;
    const stage = $("stage").parentElement;
    const availableWidth = stage.clientWidth - $("panel").offsetWidth - 32;
    const availableHeight = window.innerHeight - stage.offsetTop - 16;
    const scale = Math.max(0.05, Math.min(availableWidth / S.width, availableHeight / S.height));
    imageCanvas.style.width = `${Math.floor(S.width * scale)}px`;
    imageCanvas.style.height = `${Math.floor(S.height * scale)}px`;
    scheduleRender();
  }

  function rebuildSavedLayer() {
    const layer = new ImageData(Math.max(1, S.width), Math.max(1, S.height));
    for (const m of S.saved) {
      const [r, g, b] = PALETTE[m.id % PALETTE.length];
      const alpha = m.id === S.selected ? 170 : 95;
      Draw.fill(layer.data, m.bitmap, S.width, S.height, [r, g, b], alpha);
    }
    S.savedLayer = layer;
  }

  function scheduleRender() {
    if (S.renderPending) return;
    S.renderPending = true;
    requestAnimationFrame(() => {
      S.renderPending = false;
      render();
    });
  }

  function render() {
    if (!S.savedLayer || S.savedLayer.width !== S.width) return;
    const frame = new ImageData(new Uint8ClampedArray(S.savedLayer.data), S.width, S.height);
    const mask = currentMask();
    if (mask) Draw.fill(frame.data, mask, S.width, S.height, CURRENT, 140);
    overlayCtx.putImageData(frame, 0, 0);
    const scale = S.width / overlay.getBoundingClientRect().width || 1;
    const c = S.cur;
    if (c.box) Draw.box(overlayCtx, c.box, "#00e5ff", scale);
    const p = S.pointer;
    if (p && p.dragging) Draw.box(overlayCtx, [p.sx, p.sy, p.x, p.y], "#ffffff", scale);
    c.points.forEach(([x, y], i) => Draw.point(overlayCtx, x, y, c.labels[i] === 1, scale));
    updatePanel();
  }

  function updatePanel() {
    const c = S.cur;
    const list = $("proposals");
    list.replaceChildren();
    (c.proposals || []).forEach((_, i) => {
      const button = document.createElement("button");
      button.textContent = `${i + 1}: IoU ${c.scores[i].toFixed(2)}`;
      button.className = i === c.choice && !c.edited ? "chosen" : "";
      button.addEventListener("click", () => choose(i));
      list.append(button);
    });
    $("clicks").textContent = c.clicks;
    $("strokes").textContent = c.strokes;
    $("latency").textContent = S.decodeMs == null ? "–"
      : `${S.decodeMs.toFixed(0)} ms (round trip ${S.roundTripMs.toFixed(0)} ms)`;
    const saved = $("mask-list");
    saved.replaceChildren();
    for (const m of S.saved) {
      const item = document.createElement("li");
      const [r, g, b] = PALETTE[m.id % PALETTE.length];
      item.style.borderLeftColor = `rgb(${r},${g},${b})`;
      item.className = m.id === S.selected ? "selected" : "";
      const prov = m.provenance;
      const label = document.createElement("span");
      label.textContent = `#${m.id} ${prov.source === "model" ? "pre-filled" : "annotator"}`
        + (prov.source === "model" ? "" : ` · ${prov.clicks} clicks · ${Number(prov.seconds).toFixed(1)} s`)
        + (prov.hand_fixed ? " · brush" : "");
      label.addEventListener("click", () => select(m.id));
      const edit = document.createElement("button");
      edit.textContent = "edit";
      edit.addEventListener("click", () => editMask(m.id));
      const del = document.createElement("button");
      del.textContent = "✕";
      del.title = "delete";
      del.addEventListener("click", () => removeMask(m.id));
      item.append(label, edit, del);
      saved.append(item);
    }
    for (const name of ["points", "brush", "eraser"]) {
      $(`tool-${name}`).classList.toggle("chosen", S.tool === name);
    }
  }

  function tick() {
    const c = S.cur;
    $("timer").textContent = c.start === null ? "0.0 s"
      : `${((performance.now() - c.start) / 1000).toFixed(1)} s`;
  }

  function select(id) {
    S.selected = S.selected === id ? null : id;
    rebuildSavedLayer();
    scheduleRender();
  }

  function setTool(name) {
    S.tool = name;
    overlay.style.cursor = name === "points" ? "crosshair" : "cell";
    scheduleRender();
  }

  // ---- input -----------------------------------------------------------------------------------

  function toImage(event) {
    const rect = overlay.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * S.width) / rect.width;
    const y = ((event.clientY - rect.top) * S.height) / rect.height;
    return {
      x: Math.min(Math.max(x, 0), S.width), y: Math.min(Math.max(y, 0), S.height),
      screenX: event.clientX, screenY: event.clientY,
    };
  }

  function savedAt(x, y) {
    const p = Math.min(Math.floor(y), S.height - 1) * S.width + Math.min(Math.floor(x), S.width - 1);
    const hits = S.saved.filter((m) => m.bitmap[p]);
    return hits.length ? hits[hits.length - 1].id : null;
  }

  window.addEventListener("resize", fitCanvas);
  overlay.addEventListener("contextmenu", (event) => event.preventDefault());

  overlay.addEventListener("mousedown", (event) => {
    if (!S.key) return;
    event.preventDefault();
    const p = toImage(event);
    if (event.altKey) {
      const id = savedAt(p.x, p.y);
      if (id !== null) select(id);
      return;
    }
    S.pointer = {
      ...p, sx: p.x, sy: p.y, button: event.button, shift: event.shiftKey,
      dragging: false, painting: S.tool !== "points", last: p,
    };
    if (S.pointer.painting) startStroke(p);
  });

  window.addEventListener("mousemove", (event) => {
    const ptr = S.pointer;
    if (!ptr) return;
    const p = toImage(event);
    if (ptr.painting) {
      const value = S.tool === "brush" ? 1 : 0;
      Draw.paintLine(S.cur.edited, S.width, S.height, ptr.last, p, S.radius, value);
      ptr.last = p;
      scheduleRender();
      return;
    }
    const moved = Math.hypot(p.screenX - ptr.screenX, p.screenY - ptr.screenY);
    if (ptr.button === 0 && moved > DRAG_PIXELS) ptr.dragging = true;
    Object.assign(ptr, { x: p.x, y: p.y });
    if (ptr.dragging) scheduleRender();
  });

  window.addEventListener("mouseup", (event) => {
    const ptr = S.pointer;
    if (!ptr) return;
    S.pointer = null;
    if (ptr.painting) {
      scheduleRender();
      return;
    }
    const p = toImage(event);
    if (ptr.dragging) setBox(ptr.sx, ptr.sy, p.x, p.y);
    else addPoint(ptr.sx, ptr.sy, ptr.button === 2 || ptr.shift ? 0 : 1);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || !S.key) return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") undo();
    else if (event.ctrlKey || event.metaKey || event.altKey) return;
    else if (key === "1" || key === "2" || key === "3") choose(Number(key) - 1);
    else if (key === "Enter") accept();
    else if (key === "Delete" || key === "Backspace") {
      if (S.selected !== null) removeMask(S.selected);
      else discard();
    } else if (key === "Escape") discard();
    else if (key === "n" || key === "N") nextImage();
    else if (key === "b") setTool("brush");
    else if (key === "e") setTool("eraser");
    else if (key === "p") setTool("points");
    else if (key === "[") S.radius = Math.max(1, S.radius - 2);
    else if (key === "]") S.radius = Math.min(200, S.radius + 2);
    else return;
    event.preventDefault();
  });

  $("accept").addEventListener("click", accept);
  $("undo").addEventListener("click", undo);
  $("discard").addEventListener("click", discard);
  $("next").addEventListener("click", nextImage);
  for (const name of ["points", "brush", "eraser"]) {
    $(`tool-${name}`).addEventListener("click", () => setTool(name));
  }
  $("annotator").addEventListener("change", async (event) => {
    const name = event.target.value.trim();
    if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(name)) {
      say("Annotator names use letters, digits and _ . @ - (up to 64).", true);
      return;
    }
    S.annotator = name;
    localStorage.setItem("sa-annotator", name);
    await claimNext();
  });

  function annotatorName() {
    const fromUrl = new URLSearchParams(location.search).get("annotator");
    const stored = localStorage.getItem("sa-annotator");
    const name = fromUrl || stored || `annotator-${Math.random().toString(36).slice(2, 8)}`;
    localStorage.setItem("sa-annotator", name);
    return name;
  }

  // For tests and the curious: read-only views of the page state.
  window.saTool = {
    state: S,
    ready: () => S.ready,
    pending: () => S.seq,
    currentArea: () => {
      const mask = currentMask();
      return mask ? mask.reduce((n, v) => n + v, 0) : 0;
    },
    overlayOpaquePixels: () => {
      const data = overlayCtx.getImageData(0, 0, S.width, S.height).data;
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
      return n;
    },
    settled: () => S.queue.then(() => true),
  };

  setInterval(tick, 200);
  S.annotator = annotatorName();
  $("annotator").value = S.annotator;
  setTool("points");
  refreshProgress()
    .then(claimNext)
    .catch((err) => say(`Cannot start: ${err.message}`, true));
})();
