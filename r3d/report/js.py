"""The pages' own scripts (r3d's code; the 3D library itself is the vendored three.js).

``VIEWER_JS`` (an ES module): every ``.mesh[data-glb]`` cell holds a base64 GLB and a 2D canvas; one
shared WebGL renderer draws each scene on demand and copies it into the cell's canvas (a page may hold
dozens of meshes, more than the browser's limit of live WebGL contexts). OrbitControls on each canvas:
drag rotates, wheel / pinch zooms, right-drag pans; cells with the same ``data-group`` (one sample at
the start and now) turn together. ``MOTION_JS`` (a classic script): every ``.motion[data-joints]``
cell plays its skeleton (joints (T, 22, 3) in metres, y up, HumanML3D's kinematic chains) on a 2D
canvas at ``data-fps``; dragging sideways turns the view about the vertical axis.
"""

VIEWER_JS = r"""
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

const cells = [...document.querySelectorAll(".mesh[data-glb]")];
const renderer = cells.length ? new THREE.WebGLRenderer({ antialias: true }) : null;
const loader = new GLTFLoader();
const views = [];
let syncing = false;

function draw(view) {
  const canvas = view.canvas;
  const w = canvas.width, h = canvas.height;
  renderer.setSize(w, h, false);
  view.camera.aspect = w / h;
  view.camera.updateProjectionMatrix();
  renderer.render(view.scene, view.camera);
  view.ctx.drawImage(renderer.domElement, 0, 0, w, h);
}

function follow(source) {
  if (syncing) return;
  syncing = true;
  const offset = source.camera.position.clone().sub(source.controls.target).divideScalar(source.radius);
  for (const other of views) {
    if (other === source || !source.group || other.group !== source.group) continue;
    other.camera.position.copy(other.controls.target).addScaledVector(offset, other.radius);
    other.camera.lookAt(other.controls.target);
    other.controls.update();
    draw(other);
  }
  syncing = false;
}

function decode(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

for (const el of cells) {
  const canvas = el.querySelector("canvas");
  loader.parse(decode(el.dataset.glb), "", (gltf) => {
    const scene = new THREE.Scene();
    scene.background = new THREE.Color(0xf4f5f7);
    scene.add(new THREE.HemisphereLight(0xffffff, 0x8090a0, 1.6));
    const material = new THREE.MeshStandardMaterial({
      color: 0x5b8fd0, roughness: 0.55, metalness: 0.0, flatShading: true, side: THREE.DoubleSide,
    });
    gltf.scene.traverse((o) => { if (o.isMesh) o.material = material; });
    scene.add(gltf.scene);
    const sphere = new THREE.Box3().setFromObject(gltf.scene).getBoundingSphere(new THREE.Sphere());
    const radius = Math.max(sphere.radius, 1e-3);
    const camera = new THREE.PerspectiveCamera(35, 1, radius / 100, radius * 100);
    const light = new THREE.DirectionalLight(0xffffff, 1.8);
    light.position.set(1, 2, 1.5);
    camera.add(light);
    scene.add(camera);
    camera.position.copy(sphere.center).add(new THREE.Vector3(1.2, 0.9, 1.6).normalize().multiplyScalar(radius * 3.4));
    const controls = new OrbitControls(camera, canvas);
    controls.target.copy(sphere.center);
    controls.update();
    const view = { canvas, ctx: canvas.getContext("2d"), scene, camera, controls, radius, group: el.dataset.group };
    views.push(view);
    controls.addEventListener("change", () => { draw(view); follow(view); });
    draw(view);
    el.dataset.ready = "1";
  }, (error) => {
    el.dataset.ready = "error";
    el.querySelector(".note").textContent = "could not read this mesh";
    console.error("r3d report: mesh", el.dataset.name, error);
  });
}
"""

MOTION_JS = r"""
(function () {
  const CHAINS = [[0, 2, 5, 8, 11], [0, 1, 4, 7, 10], [0, 3, 6, 9, 12, 15], [9, 14, 17, 19, 21], [9, 13, 16, 18, 20]];
  const COLORS = ["#dd5a37", "#d69e00", "#3a6fb0", "#ff6d00", "#2a9d8f"];
  const players = [];
  for (const el of document.querySelectorAll(".motion[data-joints]")) {
    const canvas = el.querySelector("canvas");
    const data = JSON.parse(el.dataset.joints);
    const frames = data.length / 66;
    let cx = 0, cz = 0, ymin = Infinity, ymax = -Infinity;
    for (let t = 0; t < frames; t++) { cx += data[t * 66]; cz += data[t * 66 + 2]; }
    cx /= frames; cz /= frames;
    let reach = 0;
    for (let i = 0; i < data.length; i += 3) {
      ymin = Math.min(ymin, data[i + 1]); ymax = Math.max(ymax, data[i + 1]);
      reach = Math.max(reach, Math.hypot(data[i] - cx, data[i + 2] - cz));
    }
    const player = { canvas, ctx: canvas.getContext("2d"), data, frames, fps: Number(el.dataset.fps) || 20,
                     cx, cz, ymin, ymax, reach, yaw: 0.6 };
    let dragX = null;
    canvas.addEventListener("pointerdown", (e) => { dragX = e.clientX; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointermove", (e) => {
      if (dragX === null) return;
      player.yaw += (e.clientX - dragX) * 0.01; dragX = e.clientX;
    });
    canvas.addEventListener("pointerup", () => { dragX = null; });
    players.push(player);
  }

  function project(p, x, y, z) {
    const dx = x - p.cx, dz = z - p.cz, c = Math.cos(p.yaw), s = Math.sin(p.yaw);
    const rx = c * dx + s * dz, rz = -s * dx + c * dz;
    const w = p.canvas.width, h = p.canvas.height;
    const span = Math.max(2 * p.reach, p.ymax - p.ymin, 0.5) * 1.15;
    const k = Math.min(w, h) / span;
    const mid = (p.ymin + p.ymax) / 2;
    return [w / 2 + k * rx, h / 2 - k * ((y - mid) + 0.25 * rz)];
  }

  function render(p, t) {
    const ctx = p.ctx, d = p.data, f = Math.floor(t * p.fps) % p.frames, o = f * 66;
    ctx.fillStyle = "#f4f5f7";
    ctx.fillRect(0, 0, p.canvas.width, p.canvas.height);
    ctx.strokeStyle = "#c9ced6"; ctx.lineWidth = 1; ctx.beginPath();
    for (let g = -1; g <= 1; g += 0.5) {
      const a = project(p, p.cx + g * p.reach, p.ymin, p.cz - p.reach), b = project(p, p.cx + g * p.reach, p.ymin, p.cz + p.reach);
      const c = project(p, p.cx - p.reach, p.ymin, p.cz + g * p.reach), e = project(p, p.cx + p.reach, p.ymin, p.cz + g * p.reach);
      ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.moveTo(c[0], c[1]); ctx.lineTo(e[0], e[1]);
    }
    ctx.stroke();
    ctx.strokeStyle = "#9aa3ad"; ctx.beginPath();
    for (let s = 0; s <= f; s++) {
      const q = project(p, d[s * 66], p.ymin, d[s * 66 + 2]);
      if (s === 0) ctx.moveTo(q[0], q[1]); else ctx.lineTo(q[0], q[1]);
    }
    ctx.stroke();
    ctx.lineWidth = 5; ctx.lineCap = "round"; ctx.lineJoin = "round";
    CHAINS.forEach((chain, i) => {
      ctx.strokeStyle = COLORS[i]; ctx.beginPath();
      chain.forEach((j, n) => {
        const q = project(p, d[o + 3 * j], d[o + 3 * j + 1], d[o + 3 * j + 2]);
        if (n === 0) ctx.moveTo(q[0], q[1]); else ctx.lineTo(q[0], q[1]);
      });
      ctx.stroke();
    });
    ctx.fillStyle = "#555"; ctx.font = "22px sans-serif";
    ctx.fillText(`${(f / p.fps).toFixed(1)} s`, 10, p.canvas.height - 12);
  }

  function loop(ms) {
    for (const p of players) render(p, ms / 1000);
    requestAnimationFrame(loop);
  }
  if (players.length) requestAnimationFrame(loop);
})();
"""
