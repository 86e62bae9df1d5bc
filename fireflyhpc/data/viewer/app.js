// fireflyhpc's bundled Firefly viewer: plain WebGL 1, no libraries.
//
// Reads ./datasets.json ({"datasets": [{"name", "path"}]}), then the chosen
// dataset's filenames.json, its settings ("options") file and every .ffly file,
// all with relative same-origin fetches, so it works behind the payload server's
// cookie and from any static host. State for tests: document.body.dataset.state
// is "loading", "ready" or "error"; window.fireflyViewer holds counts.
"use strict";

const DEFAULT_COLORS = [[1, 0.85, 0.6, 1], [0.35, 0.6, 1, 1], [1, 0.4, 0.4, 1],
  [0.5, 1, 0.5, 1], [1, 1, 0.4, 1], [0.8, 0.5, 1, 1]];
const BRIGHTNESS = 0.15; // per-particle weight of additive blending

const $ = (id) => document.getElementById(id);
const viewer = { gl: null, prog: null, groups: [], radius: 1, generation: 0,
  cam: { target: [0, 0, 0], dist: 10, yaw: 0, pitch: 0.5 }, home: null };
window.fireflyViewer = { particles: 0, expected: 0, groups: [], dataset: null, draws: 0 };

// ---------------------------------------------------------------- .ffly parsing

// Parse one .ffly file (Firefly "format 1", little endian). The header is read
// field by field; its leading size word is not trusted (Firefly's writer
// over-counts field names). Returns coordinates and, if present, RGBA colours.
function parseFfly(buffer) {
  const view = new DataView(buffer);
  let pos = 4; // skip the header size word
  const hasVel = view.getUint8(pos++), hasRgba = view.getUint8(pos++);
  const npart = view.getUint32(pos, true), nfields = view.getUint32(pos + 4, true);
  pos += 8;
  for (let i = 0; i < nfields; i++) pos += 4 + view.getUint32(pos, true); // field names
  pos += 3 * nfields; // filter, colormap and radius flags
  const floats = (count) => {
    if (pos + 4 * count > buffer.byteLength) throw new Error("truncated .ffly file");
    const out = new Float32Array(buffer.slice(pos, pos + 4 * count)); // copy: may be unaligned
    pos += 4 * count;
    return out;
  };
  const coords = floats(3 * npart);
  if (hasVel) pos += 12 * npart;
  const rgba = hasRgba ? floats(4 * npart) : null;
  return { npart, coords, rgba };
}

// Firefly's JSON particle files (before .ffly): flat (or nested) coordinate and
//  colour lists. Octree manifests are not particle files: skipped with a warning.
function parseJsonParticles(content, path) {
  if (!content || content.octree || !(content.Coordinates_flat || content.Coordinates)) {
    console.warn(`skipping ${path}: not a particle file the bundled viewer can read`);
    return null;
  }
  const coords = new Float32Array(content.Coordinates_flat || content.Coordinates.flat());
  const rgba = content.rgbaColors_flat ? new Float32Array(content.rgbaColors_flat) : null;
  return { npart: coords.length / 3, coords, rgba };
}

// Firefly's manifest paths read "<dataset dir name>/<file>"; drop the first
// component and resolve the rest against the dataset's own URL.
function fileUrl(datasetPath, entry) {
  const parts = String(entry).split("/").filter((p) => p && p !== "." && p !== "..");
  return datasetPath + (parts.length > 1 ? parts.slice(1) : parts).map(encodeURIComponent).join("/");
}

async function fetchOk(url, kind) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return kind === "json" ? response.json() : response.arrayBuffer();
}

// ---------------------------------------------------------------- WebGL

const VERTEX = `
attribute vec3 aPos; attribute vec4 aColor;
uniform mat4 uView, uProj; uniform float uSize;
varying vec4 vColor;
void main() {
  vec4 p = uView * vec4(aPos, 1.0);
  gl_Position = uProj * p;
  gl_PointSize = clamp(uSize / max(-p.z, 1e-6), 1.0, 48.0);
  vColor = aColor;
}`;
const FRAGMENT = `
precision mediump float;
uniform float uBrightness;
varying vec4 vColor;
void main() {
  vec2 c = gl_PointCoord - 0.5;
  float r2 = 4.0 * dot(c, c);
  if (r2 > 1.0) discard;
  gl_FragColor = vec4(vColor.rgb * vColor.a * uBrightness * (1.0 - r2), 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

function initGL(canvas) {
  const gl = canvas.getContext("webgl", { antialias: false, alpha: false });
  if (!gl) throw new Error("WebGL is not available in this browser");
  const prog = gl.createProgram();
  gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
  gl.bindAttribLocation(prog, 0, "aPos"); // attribute 0 must always be an enabled array
  gl.linkProgram(prog);
  if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
  gl.useProgram(prog);
  const loc = {};
  for (const n of ["uView", "uProj", "uSize", "uBrightness"]) loc[n] = gl.getUniformLocation(prog, n);
  for (const n of ["aPos", "aColor"]) loc[n] = gl.getAttribLocation(prog, n);
  gl.disable(gl.DEPTH_TEST);
  gl.enable(gl.BLEND);
  gl.blendFunc(gl.ONE, gl.ONE); // additive: dense regions glow
  viewer.gl = gl;
  viewer.loc = loc;
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
}

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const unit = (a) => { const l = Math.hypot(...a) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };

// Camera frame for the orbit camera: z is "up", yaw turns around it.
function cameraFrame() {
  const { target, dist, yaw, pitch } = viewer.cam;
  const back = [Math.cos(pitch) * Math.sin(yaw), -Math.cos(pitch) * Math.cos(yaw), Math.sin(pitch)];
  const eye = [target[0] + dist * back[0], target[1] + dist * back[1], target[2] + dist * back[2]];
  const right = unit(cross([0, 0, 1], back));
  const up = cross(back, right);
  return { eye, back, right, up };
}

function lookAt({ eye, back, right, up }) {
  return [right[0], up[0], back[0], 0, right[1], up[1], back[1], 0, right[2], up[2], back[2], 0,
    -dot(right, eye), -dot(up, eye), -dot(back, eye), 1];
}

let redrawPending = false;
function requestRedraw() {
  if (!redrawPending) { redrawPending = true; requestAnimationFrame(draw); }
}

function draw() {
  redrawPending = false;
  const { gl, loc } = viewer, canvas = gl.canvas;
  const w = Math.floor(canvas.clientWidth * devicePixelRatio), h = Math.floor(canvas.clientHeight * devicePixelRatio);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  gl.viewport(0, 0, w, h);
  gl.clearColor(0, 0, 0, 1);
  gl.clear(gl.COLOR_BUFFER_BIT);
  const fovy = Math.PI / 4, dist = viewer.cam.dist;
  gl.uniformMatrix4fv(loc.uProj, false, perspective(fovy, w / Math.max(h, 1), dist * 1e-3, dist + 50 * viewer.radius));
  gl.uniformMatrix4fv(loc.uView, false, lookAt(cameraFrame()));
  gl.uniform1f(loc.uBrightness, BRIGHTNESS);
  for (const group of viewer.groups) {
    if (!group.visible) continue;
    // Firefly's rule: a particle is 2000 * size multiplier / distance pixels across
    gl.uniform1f(loc.uSize, 2000 * group.size);
    for (const chunk of group.chunks) {
      gl.bindBuffer(gl.ARRAY_BUFFER, chunk.pos);
      gl.enableVertexAttribArray(loc.aPos);
      gl.vertexAttribPointer(loc.aPos, 3, gl.FLOAT, false, 0, 0);
      if (chunk.rgba) {
        gl.bindBuffer(gl.ARRAY_BUFFER, chunk.rgba);
        gl.enableVertexAttribArray(loc.aColor);
        gl.vertexAttribPointer(loc.aColor, 4, gl.FLOAT, false, 0, 0);
      } else {
        gl.disableVertexAttribArray(loc.aColor);
        gl.vertexAttrib4fv(loc.aColor, group.color);
      }
      gl.drawArrays(gl.POINTS, 0, chunk.count);
    }
  }
  window.fireflyViewer.draws++;
}

function upload(data) {
  const gl = viewer.gl, buffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
  gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
  return buffer;
}

function releaseGroups() {
  for (const group of viewer.groups) {
    for (const chunk of group.chunks) {
      viewer.gl.deleteBuffer(chunk.pos);
      if (chunk.rgba) viewer.gl.deleteBuffer(chunk.rgba);
    }
  }
  viewer.groups = [];
}

// ---------------------------------------------------------------- camera

// Centre and radius from a sample of the particles: per-axis medians and the
//  90th percentile distance, so a few far-flung particles don't shrink the view.
function frameData(samples) {
  if (!samples.length) return { center: [0, 0, 0], radius: 1 };
  const median = (k) => samples.map((p) => p[k]).sort((a, b) => a - b)[samples.length >> 1];
  const center = [median(0), median(1), median(2)];
  const dists = samples.map((p) => Math.hypot(...sub(p, center))).sort((a, b) => a - b);
  return { center, radius: dists[Math.floor(0.9 * (dists.length - 1))] || 1 };
}

function sampleOf(coords, wanted) {
  const n = coords.length / 3, step = Math.max(1, Math.floor(n / wanted)), out = [];
  for (let i = 0; i < n; i += step) out.push([coords[3 * i], coords[3 * i + 1], coords[3 * i + 2]]);
  return out;
}

function setHomeView(settings, samples) {
  const framed = frameData(samples);
  viewer.radius = framed.radius;
  const center = Array.isArray(settings.center) ? settings.center.map(Number) : framed.center;
  let cam = { target: center, dist: 3 * framed.radius, yaw: 0, pitch: 0.6 };
  if (Array.isArray(settings.camera) && settings.camera.length === 3) {
    const off = sub(settings.camera.map(Number), center), dist = Math.hypot(...off);
    if (dist > 0) {
      cam = { target: center, dist, yaw: Math.atan2(off[0], -off[1]),
        pitch: Math.asin(Math.max(-1, Math.min(1, off[2] / dist))) };
    }
  }
  viewer.home = cam;
  viewer.cam = { ...cam, target: [...cam.target] };
}

function initControls(canvas) {
  let drag = null;
  const touches = new Map(); // pointerId -> [x, y], for two-finger pinch zoom
  const spread = () => { const [a, b] = [...touches.values()]; return Math.hypot(a[0] - b[0], a[1] - b[1]); };
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    touches.set(e.pointerId, [e.clientX, e.clientY]);
    drag = touches.size === 1 ? { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey }
      : { pinch: spread() };
    canvas.setPointerCapture(e.pointerId);
  });
  const release = (e) => { touches.delete(e.pointerId); drag = null; };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("pointermove", (e) => {
    if (!drag || !touches.has(e.pointerId)) return;
    touches.set(e.pointerId, [e.clientX, e.clientY]);
    const cam = viewer.cam;
    if (drag.pinch !== undefined) {
      const now = spread();
      if (now > 0 && drag.pinch > 0) cam.dist *= drag.pinch / now;
      drag.pinch = now;
      requestRedraw();
      return;
    }
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) {
      const { right, up } = cameraFrame(), k = cam.dist / canvas.clientHeight;
      for (let i = 0; i < 3; i++) cam.target[i] += k * (-dx * right[i] + dy * up[i]);
    } else {
      cam.yaw -= dx * 0.005;
      cam.pitch = Math.max(-1.55, Math.min(1.55, cam.pitch + dy * 0.005));
    }
    requestRedraw();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    viewer.cam.dist *= Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.001)));
    requestRedraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => {
    if (viewer.home) viewer.cam = { ...viewer.home, target: [...viewer.home.target] };
    requestRedraw();
  });
  window.addEventListener("resize", requestRedraw);
}

// ---------------------------------------------------------------- UI and loading

function setState(state, text, fraction) {
  document.body.dataset.state = state;
  $("status").textContent = text;
  if (fraction !== undefined) $("progress").value = fraction;
}

function renderGroupList() {
  const list = $("groups");
  list.replaceChildren();
  for (const group of viewer.groups) {
    const item = document.createElement("li"), label = document.createElement("label");
    const box = document.createElement("input"), swatch = document.createElement("span");
    box.type = "checkbox";
    box.checked = group.visible;
    box.addEventListener("change", () => { group.visible = box.checked; requestRedraw(); });
    swatch.className = "swatch";
    swatch.style.background = `rgb(${group.color.slice(0, 3).map((c) => Math.round(255 * c)).join(",")})`;
    label.append(box, swatch, `${group.name} (${group.npart.toLocaleString()})`);
    item.append(label);
    list.append(item);
  }
  window.fireflyViewer.groups = viewer.groups.map((g) => ({ name: g.name, npart: g.npart, visible: g.visible }));
}

function groupStyle(settings, name, index) {
  const pick = (key) => (settings[key] && settings[key][name] != null ? settings[key][name] : undefined);
  const color = pick("partsColors");
  const size = Number(pick("partsSizeMultipliers"));
  return {
    color: Array.isArray(color) && color.length >= 3 ? [...color.slice(0, 3).map(Number), color.length > 3 ? Number(color[3]) : 1]
      : DEFAULT_COLORS[index % DEFAULT_COLORS.length],
    size: size > 0 ? size : 0.1, // Firefly's default
    visible: pick("showParts") !== false,
  };
}

// Load one dataset; a newer choice (or a failure) bumps viewer.generation, which
//  cancels this load: its late files are dropped and its errors ignored.
async function loadDataset(entry) {
  const generation = ++viewer.generation;
  const current = () => generation === viewer.generation;
  try {
    await loadFiles(entry, current);
  } catch (err) {
    if (current()) throw err;
  }
}

async function loadFiles(entry, current) {
  releaseGroups();
  renderGroupList();
  Object.assign(window.fireflyViewer, { dataset: entry.name, particles: 0, expected: 0 });
  setState("loading", `loading ${entry.name}…`, 0);
  const manifest = await fetchOk(entry.path + "filenames.json", "json");
  const options = manifest.options && manifest.options[0];
  const settings = options ? await fetchOk(fileUrl(entry.path, options[0]), "json") : {};
  if (!current()) return;
  if (settings.title) $("title").textContent = settings.title;
  const jobs = [];
  let loaded = 0, expected = 0, samples = [];
  Object.keys(manifest).filter((k) => k !== "options" && k !== "tweenParams").forEach((name, index) => {
    const files = manifest[name].map((f) => (Array.isArray(f) ? f : [f, 0]));
    const group = { name, chunks: [], npart: 0, ...groupStyle(settings, name, index) };
    viewer.groups.push(group);
    for (const [path, count] of files) {
      const kind = String(path).toLowerCase().endsWith(".ffly") ? "buffer" : "json";
      expected += Number(count) || 0;
      jobs.push(fetchOk(fileUrl(entry.path, path), kind).then((content) => {
        if (!current()) return;
        const part = kind === "buffer" ? parseFfly(content) : parseJsonParticles(content, path);
        if (!part) return;
        group.chunks.push({ pos: upload(part.coords), rgba: part.rgba && upload(part.rgba), count: part.npart });
        group.npart += part.npart;
        loaded += part.npart;
        samples = samples.concat(sampleOf(part.coords, 2000));
        window.fireflyViewer.particles = loaded;
        setState("loading", `${loaded.toLocaleString()} of ${expected.toLocaleString()} particles`,
          expected ? loaded / expected : 0);
      }));
    }
  });
  window.fireflyViewer.expected = expected;
  renderGroupList();
  await Promise.all(jobs); // every file is requested at once, like Firefly does
  if (!current()) return;
  setHomeView(settings, samples);
  renderGroupList();
  setState("ready", `${loaded.toLocaleString()} particles in ${viewer.groups.length} groups`, 1);
  requestRedraw();
}

function fail(err) {
  viewer.generation++; // files still arriving belong to a failed load: ignore them
  console.error("fireflyhpc viewer:", err.message || err);
  setState("error", String(err.message || err));
}

async function main() {
  try {
    initGL($("scene"));
    initControls($("scene"));
    const index = await fetchOk("./datasets.json", "json");
    const datasets = Array.isArray(index.datasets) ? index.datasets : [];
    if (!datasets.length) throw new Error("no datasets are being served");
    const select = $("dataset");
    for (const d of datasets) select.append(new Option(d.name, d.name));
    const wanted = decodeURIComponent(location.hash.slice(1));
    const first = datasets.find((d) => d.name === wanted) || datasets[0];
    select.value = first.name;
    select.addEventListener("change", () => {
      const entry = datasets.find((d) => d.name === select.value);
      history.replaceState(null, "", "#" + encodeURIComponent(entry.name));
      loadDataset(entry).catch(fail);
    });
    await loadDataset(first);
  } catch (err) {
    fail(err);
  }
}

main();
