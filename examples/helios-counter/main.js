// The Helios counter: a ring that fills over the composition and the frame number it is given.
import { Helios } from "./node_modules/@helios-project/core/dist/index.js";

const helios = new Helios({
  width: 1280,
  height: 720,
  fps: 30,
  duration: 4,
  // Props given to the render (helios batch rows, RenderConfig.props) arrive as window.__HELIOS_PROPS__.
  inputProps: { title: "Coming from Helios", ...(window.__HELIOS_PROPS__ || {}) },
});

const canvas = document.getElementById("stage");
const ctx = canvas.getContext("2d");

function draw({ currentFrame, fps, duration, inputProps, width, height }) {
  const progress = currentFrame / (duration * fps);
  ctx.fillStyle = "#0b1020";
  ctx.fillRect(0, 0, width, height);

  const cx = width / 2;
  const cy = height / 2 + 30;
  const radius = 180;
  ctx.lineWidth = 28;
  ctx.strokeStyle = "#1f2a4a";
  ctx.beginPath();
  ctx.arc(cx, cy, radius, 0, Math.PI * 2);
  ctx.stroke();
  ctx.strokeStyle = `hsl(${200 + 120 * progress}, 90%, 60%)`;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.arc(cx, cy, radius, -Math.PI / 2, -Math.PI / 2 + Math.PI * 2 * progress);
  ctx.stroke();

  ctx.fillStyle = "#ffffff";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.font = "bold 120px DejaVu Sans, sans-serif";
  ctx.fillText(String(currentFrame), cx, cy);
  ctx.font = "28px DejaVu Sans, sans-serif";
  ctx.fillStyle = "#9fb0d8";
  ctx.fillText(`${(currentFrame / fps).toFixed(2)} s`, cx, cy + 90);
  ctx.font = "bold 48px DejaVu Sans, sans-serif";
  ctx.fillStyle = "#ffffff";
  ctx.fillText(inputProps.title, cx, 90);
}

helios.subscribe(draw);
helios.bindToDocumentTimeline();
window.helios = helios;
