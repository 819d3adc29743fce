// The playground page: draw with mouse, finger or pen (Pointer Events), send the canvas to
// POST /predict while drawing (one request in flight at a time, the latest drawing always sent
// last), and show every stage's top three digits and the 28x28 input the server prepared.
// The page's state is also written into data attributes, so a test can read it from the DOM:
//   #draw[data-version]    the drawing's version (every stroke, clear or transform adds one)
//   #status[data-state]    idle | pending | ready | blank | error, and [data-version] answered
//   .stage[data-stage][data-top]   a stage's name and its most likely digit
"use strict";

(function () {
  const LINE_WIDTH = 20;      // pixels on the 280x280 canvas: a pen stroke about 2 MNIST pixels wide
  const NOISE_STEP = 0.1;     // each "+ noise" adds this standard deviation (pixels in [0, 1])
  const ROTATE_LIMIT = 360;   // the server accepts turns from -360 to 360 degrees
  const SHIFT_LIMIT = 28;

  const canvas = document.getElementById("draw");
  const context = canvas.getContext("2d");
  const inputCanvas = document.getElementById("input");
  const statusLine = document.getElementById("status");
  const stagesBox = document.getElementById("stages");
  const timing = document.getElementById("timing");
  const transformState = document.getElementById("transform-state");

  let version = 0;            // of the drawing and transform
  let inked = false;          // has anything been drawn since the last clear
  let inFlight = false;
  let transform = { shift: [0, 0], rotate: 0, noise: 0, seed: 0 };
  let last = null;            // the last point of the stroke being drawn, canvas pixels

  function clearCanvas() {
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
  }

  function setStatus(state, text, answered) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
    if (answered !== undefined) statusLine.dataset.version = String(answered);
  }

  function changed() {
    version += 1;
    canvas.dataset.version = String(version);
    if (!inked) {
      setStatus("idle", "draw a digit", version);
      stagesBox.querySelectorAll(".stage").forEach((card) => card.classList.add("stale"));
      return;
    }
    send();
  }

  // ---------------------------------------------------------------- drawing

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  }

  function strokeTo(next) {
    context.beginPath();
    context.moveTo(last[0], last[1]);
    context.lineTo(next[0], next[1]);
    context.stroke();
    last = next;
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    context.strokeStyle = "#fff";
    context.lineWidth = LINE_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    last = point(event);
    strokeTo(last);  // a dot for a tap
    inked = true;
    changed();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    (events.length ? events : [event]).forEach((one) => strokeTo(point(one)));
    changed();
  });

  function endStroke() {
    if (last !== null) {
      last = null;
      changed();
    }
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  document.getElementById("clear").addEventListener("click", () => {
    clearCanvas();
    inked = false;
    changed();
  });

  // ---------------------------------------------------------------- transforms

  function describeTransform() {
    const parts = [];
    const [dx, dy] = transform.shift;
    if (dx || dy) parts.push(`shifted ${dx} right, ${dy} down`);
    if (transform.rotate) parts.push(`turned ${transform.rotate}\u00b0`);
    if (transform.noise) parts.push(`noise ${transform.noise.toFixed(1)}`);
    transformState.textContent = parts.length ? parts.join(", ") : "no change";
    transformState.dataset.shift = transform.shift.join(",");
    transformState.dataset.rotate = String(transform.rotate);
    transformState.dataset.noise = String(transform.noise);
  }

  function clamp(value, limit) {
    return Math.max(-limit, Math.min(limit, value));
  }

  document.getElementById("transforms").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.shift) {
      const [dx, dy] = button.dataset.shift.split(",").map(Number);
      transform.shift = [clamp(transform.shift[0] + dx, SHIFT_LIMIT), clamp(transform.shift[1] + dy, SHIFT_LIMIT)];
    } else if (button.dataset.rotate) {
      transform.rotate = clamp(transform.rotate + Number(button.dataset.rotate), ROTATE_LIMIT);
    } else if (button.dataset.noise) {
      transform.noise = Math.min(1, Math.round((transform.noise + NOISE_STEP) * 10) / 10);
      transform.seed += 1;  // new noise each time, the same while drawing
    } else if (button.id === "reset-transform") {
      transform = { shift: [0, 0], rotate: 0, noise: 0, seed: 0 };
    }
    describeTransform();
    changed();
  });

  // ---------------------------------------------------------------- asking the server

  async function send() {
    if (inFlight) return;  // the answer's handler sends again if the drawing changed meanwhile
    inFlight = true;
    const asked = version;
    setStatus("pending", "reading\u2026");
    try {
      const response = await fetch("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: canvas.toDataURL("image/png"), transform: transform }),
      });
      const reply = await response.json();
      if (!inked) return;  // cleared meanwhile: the answer is about a drawing that is gone
      if (!response.ok) throw new Error(reply.error || `HTTP ${response.status}`);
      show(reply, asked);
    } catch (error) {
      if (inked) setStatus("error", `error: ${error.message}`, asked);
    } finally {
      inFlight = false;
    }
    if (version !== asked && inked) send();
  }

  function show(reply, asked) {
    timing.dataset.milliseconds = String(reply.milliseconds);
    if (reply.blank) {
      timing.textContent = `server time: ${reply.milliseconds.toFixed(1)} ms (a blank drawing)`;
      setStatus("blank", "no digit found: the drawing is blank", asked);
      return;
    }
    timing.textContent = `server time for one prediction by all ${reply.stages.length} stages: ` +
      `${reply.milliseconds.toFixed(1)} ms (decoding and preprocessing included; the aim is at most 100 ms)`;
    drawInput(reply.input);
    stagesBox.replaceChildren(...reply.stages.map(stageCard));
    setStatus("ready", "every stage's answer to your drawing", asked);
  }

  function stageCard(stage) {
    const order = stage.probabilities.map((p, digit) => [p, digit]).sort((a, b) => b[0] - a[0]);
    const card = document.createElement("article");
    card.className = "stage";
    card.dataset.stage = stage.name;
    card.dataset.top = String(order[0][1]);
    card.title = stage.adds;
    const name = document.createElement("h2");
    name.textContent = stage.name;
    const title = document.createElement("p");
    title.className = "title";
    title.textContent = stage.title;
    card.append(name, title);
    order.slice(0, 3).forEach(([p, digit], rank) => card.append(topRow(digit, p, rank + 1)));
    return card;
  }

  function topRow(digit, probability, rank) {
    const row = document.createElement("div");
    row.className = "top";
    row.dataset.rank = String(rank);
    const label = document.createElement("span");
    label.className = "digit";
    label.textContent = String(digit);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    bar.append(fill);
    const percent = document.createElement("span");
    percent.className = "percent";
    percent.textContent = `${(100 * probability).toFixed(1)} %`;
    row.append(label, bar, percent);
    return row;
  }

  function drawInput(pixels) {
    const side = 28;
    const small = document.createElement("canvas");
    small.width = side;
    small.height = side;
    const image = small.getContext("2d").createImageData(side, side);
    pixels.forEach((value, i) => {
      image.data.set([value, value, value, 255], 4 * i);
    });
    small.getContext("2d").putImageData(image, 0, 0);
    const target = inputCanvas.getContext("2d");
    target.imageSmoothingEnabled = false;  // show the pixels as pixels
    target.drawImage(small, 0, 0, inputCanvas.width, inputCanvas.height);
  }

  clearCanvas();
  describeTransform();
  canvas.dataset.version = "0";
  setStatus("idle", "draw a digit", 0);
})();
