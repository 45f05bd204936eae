// Front end of stlib.webcam.WebcamStylizer (anywidget ES module). The protocol is described in stlib/webcam.py.
//
// Browser source: getUserMedia -> visible <video> -> canvas at the chosen resolution -> JPEG -> custom message
// {type: "frame", id, t, w, h} with the JPEG as a binary buffer (or as base64 text in `b64`). The kernel answers
// {type: "result", id, ...} with the stylised JPEG, or {type: "dropped", id}. At most `max_in_flight` frames
// wait for an answer at any time. Kernel sources (opencv, file): the kernel pushes results and we answer
// {type: "ack", id} once a frame is drawn.

const STALE_MS = 8000; // an unanswered frame older than this is forgotten (lost message)
const MIN_INTERVAL_MS = 30; // capture at most ~33 frames per second

function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function inVSCode() {
  return (
    typeof acquireVsCodeApi === "function" ||
    document.body?.dataset?.vscodeThemeKind !== undefined ||
    /vscode/i.test(location.protocol + location.host)
  );
}

// A clear sentence for every way the camera can be unavailable.
function cameraProblem(error) {
  if (!window.isSecureContext) {
    return (
      "The browser hides cameras from pages that are not a secure context: open Jupyter at http://localhost " +
      "or over https, or use the file source."
    );
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    if (inVSCode()) return "VS Code does not give notebook outputs access to the camera: use the file source, or JupyterLab.";
    return "This front end gives the notebook no camera access (navigator.mediaDevices is missing): use the file source.";
  }
  if (!error) return "";
  const name = error.name || "";
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return inVSCode()
      ? "VS Code blocked the camera: use the file source, or open the notebook in JupyterLab."
      : "Camera access was denied: allow the camera for this site (address bar) and press Start, or use the file source.";
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return "No camera was found: plug one in and press Start, or use the file source.";
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return "The camera is busy or failed to start (another app or tab may be using it): close it, or use the file source.";
  }
  return `The camera could not be started (${name || "error"}: ${error.message || error}): use the file source.`;
}

function parseResolution(text) {
  const [w, h] = String(text).split("x").map((v) => parseInt(v, 10));
  return [w || 320, h || 240];
}

function render({ model, el }) {
  // ---- DOM -------------------------------------------------------------------------------------------
  const modelSelect = h("select", { class: "stlib-webcam-model", title: "style network (checkpoints/*.safetensors)" });
  const resolutionSelect = h("select", { class: "stlib-webcam-resolution", title: "resolution the network sees" });
  const sourceSelect = h("select", { class: "stlib-webcam-source", title: "where frames come from" });
  for (const [value, label] of [
    ["browser", "camera (browser)"],
    ["opencv", "camera (kernel, OpenCV)"],
    ["file", "video file / scene"],
  ]) {
    sourceSelect.append(h("option", { value, text: label }));
  }
  const mirrorBox = h("input", { type: "checkbox", class: "stlib-webcam-mirror" });
  const strengthSlider = h("input", {
    type: "range",
    min: "0",
    max: "1",
    step: "0.05",
    class: "stlib-webcam-strength",
    title: "style strength (blend with the original frame)",
  });
  const strengthValue = h("span", { class: "stlib-webcam-strength-value" });
  const smoothSlider = h("input", {
    type: "range",
    min: "0",
    max: "1",
    step: "0.05",
    class: "stlib-webcam-smooth",
    title: "less flicker: blend with the previous frame moved along the motion (0: off)",
  });
  const smoothValue = h("span", { class: "stlib-webcam-smooth-value" });
  const startButton = h("button", { class: "stlib-webcam-start", text: "Start" });
  const snapshotButton = h("button", { class: "stlib-webcam-snapshot", text: "Snapshot", title: "save to outputs/" });
  const controls = h("div", { class: "stlib-webcam-controls" }, [
    h("label", {}, ["style ", modelSelect]),
    h("label", {}, ["size ", resolutionSelect]),
    h("label", {}, ["source ", sourceSelect]),
    h("label", {}, [mirrorBox, " mirror"]),
    h("label", {}, ["strength ", strengthSlider, strengthValue]),
    h("label", {}, ["smooth ", smoothSlider, smoothValue]),
    startButton,
    snapshotButton,
  ]);

  const output = h("canvas", { class: "stlib-webcam-output", width: 320, height: 240 });
  const overlay = h("div", { class: "stlib-webcam-overlay", text: "stopped" });
  const stage = h("div", { class: "stlib-webcam-stage" }, [output, overlay]);
  // The camera preview must stay visible: Chromium delivers black frames from a hidden <video>.
  const video = h("video", { class: "stlib-webcam-video", muted: true, playsInline: true, autoplay: true });
  video.setAttribute("playsinline", "");
  const previewBox = h("div", { class: "stlib-webcam-preview" }, [video, h("div", { text: "camera" })]);
  const messageText = h("span", { class: "stlib-webcam-error-text" });
  const fileButton = h("button", { class: "stlib-webcam-use-file", text: "Use the file source" });
  const message = h("div", { class: "stlib-webcam-error" }, [messageText, fileButton]);
  const status = h("div", { class: "stlib-webcam-status" });
  const root = h("div", { class: "stlib-webcam" }, [controls, h("div", { class: "stlib-webcam-row" }, [stage, previewBox]), message, status]);
  el.append(root);

  const capture = document.createElement("canvas");
  const captureContext = capture.getContext("2d");
  const outputContext = output.getContext("2d");

  // ---- state -----------------------------------------------------------------------------------------
  let stream = null;
  let capturing = false;
  let starting = false;
  let cameraFailed = false; // the last error came from the browser's camera
  let pumping = false;
  let alive = true;
  let nextId = 1;
  let lastCapture = 0;
  const inflight = new Map(); // browser frame id -> performance.now() when captured
  const lastDrawn = { browser: 0, kernel: 0 };
  let base64Mode = model.get("transport") === "base64";
  let gotResult = false;
  let lost = 0;
  let frames = 0;
  let latency = 0;
  const shownAt = [];
  let statsTimer = null;

  // ---- controls <-> traits ---------------------------------------------------------------------------
  function fillSelect(select, entries, value) {
    const signature = JSON.stringify(entries);
    if (select.dataset.options !== signature) {
      // Rebuilt only when the choices change, so an open drop-down is not closed by other updates.
      select.replaceChildren(...entries.map(([label, key]) => h("option", { value: key, text: label })));
      select.dataset.options = signature;
    }
    select.value = value;
  }
  function syncFromModel() {
    fillSelect(modelSelect, model.get("models"), model.get("model_key"));
    fillSelect(resolutionSelect, model.get("resolutions").map((r) => [r.replace("x", "×"), r]), model.get("resolution"));
    sourceSelect.value = model.get("source");
    mirrorBox.checked = model.get("mirror");
    strengthSlider.value = String(model.get("strength"));
    strengthValue.textContent = Number(model.get("strength")).toFixed(2);
    smoothSlider.value = String(model.get("smooth"));
    smoothValue.textContent = Number(model.get("smooth")) > 0 ? Number(model.get("smooth")).toFixed(2) : "off";
    root.dataset.smooth = String(model.get("smooth"));
    startButton.textContent = model.get("running") ? "Stop" : "Start";
    video.style.transform = model.get("mirror") ? "scaleX(-1)" : "";
    previewBox.style.display = model.get("source") === "browser" ? "" : "none";
    const error = model.get("error");
    messageText.textContent = error;
    message.style.display = error ? "" : "none";
    const cameraTrouble = cameraFailed || model.get("source") === "opencv";
    fileButton.style.display = error && cameraTrouble && model.get("source") !== "file" ? "" : "none";
    status.textContent = model.get("status");
    root.dataset.model = model.get("model_key");
    root.dataset.source = model.get("source");
    root.dataset.error = error;
    root.dataset.running = String(model.get("running"));
  }
  function setTraits(values) {
    for (const [key, value] of Object.entries(values)) model.set(key, value);
    model.save_changes();
  }
  modelSelect.addEventListener("change", () => setTraits({ model_key: modelSelect.value, error: "" }));
  resolutionSelect.addEventListener("change", () => setTraits({ resolution: resolutionSelect.value }));
  sourceSelect.addEventListener("change", () => setTraits({ source: sourceSelect.value, error: "" }));
  mirrorBox.addEventListener("change", () => setTraits({ mirror: mirrorBox.checked }));
  strengthSlider.addEventListener("input", () => setTraits({ strength: parseFloat(strengthSlider.value) }));
  smoothSlider.addEventListener("input", () => setTraits({ smooth: parseFloat(smoothSlider.value) }));
  startButton.addEventListener("click", () => {
    cameraFailed = false;
    setTraits({ running: !model.get("running"), error: "" });
  });
  snapshotButton.addEventListener("click", () => model.send({ type: "snapshot" }));
  fileButton.addEventListener("click", () => {
    cameraFailed = false;
    setTraits({ source: "file", error: "", running: true });
  });

  // ---- the browser camera ----------------------------------------------------------------------------
  async function startCamera() {
    if (capturing || starting) return;
    const early = cameraProblem(null);
    if (early) return fail(early);
    const [width, height] = parseResolution(model.get("resolution"));
    starting = true;
    root.dataset.state = "starting";
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: width }, height: { ideal: height } },
        audio: false,
      });
    } catch (error) {
      stream = null;
      return fail(cameraProblem(error));
    } finally {
      starting = false;
    }
    if (!alive || !model.get("running") || model.get("source") !== "browser") return stopCamera();
    video.srcObject = stream;
    try {
      await video.play();
    } catch (error) {
      // autoplay of a muted video is always allowed; ignore spurious interruptions
    }
    capturing = true;
    root.dataset.state = "capturing";
    pump();
  }

  function stopCamera() {
    capturing = false;
    inflight.clear();
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.srcObject = null;
    root.dataset.state = "stopped";
  }

  function fail(text) {
    stopCamera();
    cameraFailed = true;
    root.dataset.state = "failed";
    setTraits({ running: false, error: text });
  }

  function expireStale(now) {
    for (const [id, sentAt] of inflight) {
      if (now - sentAt > STALE_MS) {
        inflight.delete(id);
        lost += 1;
        // Binary buffers never came back: fall back to base64 text (some front ends drop buffers).
        if (!gotResult && !base64Mode && lost >= 2 && model.get("transport") === "auto") {
          base64Mode = true;
          root.dataset.fallbacks = String(+(root.dataset.fallbacks || 0) + 1);
          model.send({ type: "transport", mode: "base64" });
        }
      }
    }
  }

  async function pump() {
    if (pumping || !capturing || !alive) return;
    pumping = true;
    try {
      const now = performance.now();
      expireStale(now);
      const limit = model.get("max_in_flight") || 2;
      if (inflight.size >= limit || video.readyState < 2 || now - lastCapture < MIN_INTERVAL_MS) {
        setTimeout(pump, inflight.size >= limit ? 20 : MIN_INTERVAL_MS);
        return;
      }
      lastCapture = now;
      const [width, height] = parseResolution(model.get("resolution"));
      capture.width = width;
      capture.height = height;
      // Scale the camera image to cover the frame, centred (no black bars, no distortion).
      const vw = video.videoWidth;
      const vh = video.videoHeight;
      const scale = Math.max(width / vw, height / vh);
      const sw = width / scale;
      const sh = height / scale;
      captureContext.drawImage(video, (vw - sw) / 2, (vh - sh) / 2, sw, sh, 0, 0, width, height);
      const id = nextId++;
      inflight.set(id, now);
      const quality = (model.get("quality") || 80) / 100;
      const blob = await new Promise((resolve) => capture.toBlob(resolve, "image/jpeg", quality));
      if (!blob || !capturing) {
        inflight.delete(id);
      } else {
        const buffer = await blob.arrayBuffer();
        const content = { type: "frame", id, t: now, w: width, h: height };
        if (base64Mode) model.send({ ...content, b64: toBase64(buffer), reply: "base64" });
        else model.send(content, undefined, [buffer]);
      }
      setTimeout(pump, 0);
    } finally {
      pumping = false;
    }
  }

  // ---- results from the kernel -----------------------------------------------------------------------
  async function onMessage(msg, buffers) {
    if (!alive || !msg) return;
    if (msg.type === "dropped") {
      inflight.delete(msg.id);
      pump();
      return;
    }
    if (msg.type === "transport") {
      base64Mode = msg.mode === "base64";
      return;
    }
    if (msg.type === "snapshot") {
      root.dataset.snapshot = msg.path;
      return;
    }
    if (msg.type !== "result") return;
    const kind = msg.source === "browser" ? "browser" : "kernel";
    const hasBuffer = Boolean(buffers && buffers.length && buffers[0].byteLength > 0);
    if (hasBuffer && base64Mode && model.get("transport") === "auto") {
      // Binary buffers do arrive: the earlier silence was a busy kernel (e.g. running other cells), not lost
      // buffers. Go back to binary, for good: a late reply to an expired frame counts too (under load the first
      // replies after a stall are often for frames already given up on).
      base64Mode = false;
      lost = 0;
      gotResult = true;
    }
    const sentAt = inflight.get(msg.id);
    if (kind === "browser") {
      if (sentAt === undefined) return; // another view's frame, or a stale one
      inflight.delete(msg.id);
    }
    let bytes = null;
    if (hasBuffer) bytes = buffers[0];
    else if (typeof msg.b64 === "string") bytes = fromBase64(msg.b64);
    if (bytes === null) {
      // The reply's buffer was lost on the way: ask for base64 replies from now on.
      base64Mode = true;
      model.send({ type: "transport", mode: "base64" });
      pump();
      return;
    }
    gotResult = true;
    if (kind === "browser") pump(); // capture the next frame while this one is drawn
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }));
    } catch (error) {
      if (kind === "kernel") model.send({ type: "ack", id: msg.id });
      return;
    }
    if (msg.id <= lastDrawn[kind] || !alive) {
      bitmap.close();
    } else {
      lastDrawn[kind] = msg.id;
      if (output.width !== bitmap.width || output.height !== bitmap.height) {
        output.width = bitmap.width;
        output.height = bitmap.height;
      }
      outputContext.drawImage(bitmap, 0, 0);
      bitmap.close();
      const now = performance.now();
      frames += 1;
      latency = kind === "browser" ? now - sentAt : msg.age_ms || 0;
      shownAt.push(now);
      while (shownAt.length > 2 && now - shownAt[0] > 5000) shownAt.shift(); // last 5 s, at least 2 frames
      const fps = shownAt.length > 1 ? ((shownAt.length - 1) * 1000) / (now - shownAt[0]) : 0;
      const network = msg.network_ms !== undefined ? ` · net ${msg.network_ms.toFixed(0)} ms` : "";
      overlay.textContent =
        `${fps.toFixed(1)} fps · latency ${latency.toFixed(0)} ms${network} · ${base64Mode ? "base64" : "binary"}`;
      root.dataset.frames = String(frames);
      root.dataset.fps = fps.toFixed(2);
      root.dataset.latency = latency.toFixed(0);
      root.dataset.transport = base64Mode ? "base64" : "binary";
    }
    if (kind === "kernel") model.send({ type: "ack", id: msg.id });
  }
  model.on("msg:custom", onMessage);

  function reportStats() {
    if (!alive || !model.get("running")) return;
    const fps = parseFloat(root.dataset.fps || "0");
    setTraits({ frames, fps, latency_ms: latency });
  }
  statsTimer = setInterval(reportStats, 1000);

  // ---- reacting to trait changes ---------------------------------------------------------------------
  function update() {
    syncFromModel();
    const running = model.get("running");
    const source = model.get("source");
    if (running && source === "browser") startCamera();
    else if (capturing || stream || starting) stopCamera();
    if (!running) overlay.textContent = frames ? `stopped · ${frames} frames` : "stopped";
    else if (source !== "browser" && !frames) overlay.textContent = "waiting for the kernel…";
  }
  const names = ["models", "model_key", "source", "resolution", "mirror", "strength", "smooth", "running", "status", "error"];
  for (const name of names) model.on(`change:${name}`, update);
  function onTransport() {
    base64Mode = model.get("transport") === "base64"; // "auto" starts again with binary buffers
    lost = 0;
  }
  model.on("change:transport", onTransport);
  root.dataset.frames = "0";
  root.dataset.state = "stopped";
  update();

  return () => {
    alive = false;
    clearInterval(statsTimer);
    stopCamera();
    model.off("msg:custom", onMessage);
    for (const name of names) model.off(`change:${name}`, update);
    model.off("change:transport", onTransport);
  };
}

export default { render };
