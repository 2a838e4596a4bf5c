// The Console tab: asks the API for a single-use ticket, then opens the console gateway's WebSocket
// with it: noVNC draws the VNC console, xterm.js the serial line. Everything is served by the site.
const root = document.getElementById("console");
const kind = root.dataset.kind;
const statusLine = document.getElementById("console-status");
const connectButton = document.getElementById("console-connect");
const disconnectButton = document.getElementById("console-disconnect");
let socket = null;
let vncClient = null;
let terminal = null;
const SHIFT_L = 0xffe1;
const SHIFTED = '~!@#$%^&*()_+{}|:"<>?';

// Milestones in ms since this page's navigation began (data-*-ms), for bench/console.py.
function mark(name) {
  root.dataset[name] = String(Math.round(performance.now()));
}

function setState(state, message) {
  root.dataset.state = state;
  statusLine.textContent = message;
  connectButton.disabled = state === "connecting" || state === "connected";
  disconnectButton.disabled = state !== "connected";
  for (const id of ["console-ctrl-alt-del", "console-paste-send"]) {
    const button = document.getElementById(id);
    if (button) button.disabled = state !== "connected";
  }
}

async function ticket() {
  const answer = await fetch(root.dataset.ticketUrl, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": root.dataset.csrf},
    body: JSON.stringify({kind: kind}),
  });
  const body = await answer.json().catch(() => ({}));
  mark("ticketMs");
  if (!answer.ok) throw new Error(body.detail || "the console could not be opened (" + answer.status + ")");
  return body;
}

function openSocket(url) {
  const opened = new WebSocket(url);
  opened.binaryType = "arraybuffer";
  opened.addEventListener("open", () => mark("openMs"));
  opened.addEventListener("close", (event) => {
    if (socket !== opened) return;
    socket = null;
    setState("closed", "Disconnected" + (event.reason ? ": " + event.reason : "."));
  });
  socket = opened;
  return opened;
}

// The first frame: the canvas shows something other than black.
function watchFirstFrame(canvasHolder) {
  function look() {
    const canvas = canvasHolder.querySelector("canvas");
    if (root.dataset.state !== "connected" && root.dataset.state !== "connecting") return;
    if (canvas && canvas.width > 0 && canvas.height > 0) {
      const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (let index = 0; index < pixels.length; index += 4) {
        if (pixels[index] || pixels[index + 1] || pixels[index + 2]) {
          mark("firstFrameMs");
          return;
        }
      }
    }
    requestAnimationFrame(look);
  }
  requestAnimationFrame(look);
}

async function connectVnc() {
  const [{default: RFB}, {default: keysyms}, issued] = await Promise.all([
    import(root.dataset.novnc), import(root.dataset.keysyms), ticket()]);
  const screen = document.getElementById("console-screen");
  screen.replaceChildren();
  const client = new RFB(screen, openSocket(issued.url), {credentials: {password: issued.vnc_password}});
  client.scaleViewport = true;
  client.addEventListener("connect", () => { mark("connectedMs"); setState("connected", "Connected (VNC)."); });
  client.addEventListener("credentialsrequired", () => client.sendCredentials({password: issued.vnc_password}));
  client.addEventListener("securityfailure", (event) => setState("closed", "Refused: " + (event.detail.reason || "VNC authentication failed")));
  vncClient = client;
  watchFirstFrame(screen);
  document.getElementById("console-ctrl-alt-del").onclick = () => client.sendCtrlAltDel();
  document.getElementById("console-paste-send").onclick = () => {
    const text = document.getElementById("console-paste").value;
    for (const character of text) {
      const keysym = character === "\n" ? 0xff0d : keysyms.lookup(character.codePointAt(0));
      // qemu turns a keysym into a key of its keymap (US by default): shifted characters need Shift held.
      const shifted = SHIFTED.includes(character) || (character !== character.toLowerCase());
      if (shifted) client.sendKey(SHIFT_L, "ShiftLeft", true);
      client.sendKey(keysym, null);
      if (shifted) client.sendKey(SHIFT_L, "ShiftLeft", false);
    }
    client.focus();
  };
}

async function connectSerial() {
  const issued = await ticket();
  const holder = document.getElementById("console-terminal");
  if (!terminal) {
    terminal = new window.Terminal({cursorBlink: true, convertEol: false, scrollback: 5000});
    terminal.open(holder);
    const encoder = new TextEncoder();
    terminal.onData((data) => { if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  }
  const opened = openSocket(issued.url);
  opened.addEventListener("open", () => {
    setState("connected", "Connected (serial). Press Enter for a prompt.");
    terminal.focus();
  });
  opened.addEventListener("message", (event) => terminal.write(new Uint8Array(event.data)));
}

async function connect() {
  mark("scriptMs");
  setState("connecting", "Connecting…");
  try {
    await (kind === "vnc" ? connectVnc() : connectSerial());
  } catch (error) {
    setState("closed", String(error.message || error));
  }
}

connectButton.addEventListener("click", connect);
disconnectButton.addEventListener("click", () => {
  if (vncClient) { vncClient.disconnect(); vncClient = null; }
  if (socket) socket.close(1000, "closed by the user");
});
connect();
