// The page: keep a key, upload photos, follow their job's event stream, show and download models.
// Every request goes to this server with the key as a Bearer token; nothing else is contacted.

const KEY_STORAGE = "image2model.apiKey";
const FORMATS = [["glb", "GLB"], ["obj", "OBJ (zip)"], ["ply", "PLY"], ["stl", "STL"]];
const $ = (id) => document.getElementById(id);

/** Return the stored API key, or null. */
const storedKey = () => localStorage.getItem(KEY_STORAGE);

/** Fetch a path of this server with the key; throw an Error carrying the envelope's detail. */
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${storedKey()}` };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = { code: `HTTP_${response.status}`, message: response.statusText, details: {} };
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // not the JSON envelope (a proxy's page): keep the status line
    }
    const error = new Error(detail.message);
    error.detail = detail;
    error.status = response.status;
    throw error;
  }
  return response;
}

/** Show the key form or the upload form, as a key is stored or not. */
function showKeyState() {
  const haveKey = Boolean(storedKey());
  $("key-form").hidden = haveKey;
  $("key-status").hidden = !haveKey;
  $("upload-section").hidden = !haveKey;
  if (haveKey) loadGenerators();
}

/** Fill the generator list with the usable ones, the server's default chosen. */
async function loadGenerators() {
  const select = $("model-type");
  try {
    const generators = await (await api("/api/v1/models/available")).json();
    select.replaceChildren();
    for (const generator of generators.filter((g) => g.available)) {
      const option = new Option(`${generator.name} (${generator.type})`, generator.type);
      option.selected = generator.default;
      option.title = generator.description;
      select.append(option);
    }
    $("key-error").textContent = "";
  } catch (error) {
    $("key-error").textContent = `This key was not accepted: ${error.message}`;
    if (error.status === 401) forgetKey();
  }
}

/** Remove the key from this browser and ask for one again. */
function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  $("upload-section").hidden = true;
  $("key-form").hidden = false;
  $("key-status").hidden = true;
}

/** Return a human size: bytes, KB or MB. */
function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

let chosenFiles = [];

/** Show the chosen photos with a thumbnail, size and a place for the server's word on each. */
function showChosen(files) {
  chosenFiles = [...files];
  const list = $("chosen");
  list.replaceChildren();
  for (const file of chosenFiles) {
    const item = document.createElement("li");
    const thumb = document.createElement("img");
    thumb.src = URL.createObjectURL(file);
    thumb.alt = `Thumbnail of ${file.name}`;
    thumb.addEventListener("error", () => thumb.classList.add("broken"));
    const text = document.createElement("div");
    text.innerHTML = `<strong></strong> <span class="facts"></span><p class="error"></p>`;
    text.querySelector("strong").textContent = file.name;
    text.querySelector(".facts").textContent = humanSize(file.size);
    item.dataset.name = file.name;
    item.append(thumb, text);
    list.append(item);
  }
}

/** Put the server's message for each named file next to it. */
function showFileProblems(detail) {
  const problems = (detail.details && detail.details.files) || {};
  for (const item of $("chosen").children) {
    const problem = problems[item.dataset.name];
    item.querySelector(".error").textContent = problem === undefined ? "" : String(problem);
  }
}

async function startUpload(event) {
  event.preventDefault();
  $("upload-error").textContent = "";
  if (!chosenFiles.length) {
    $("upload-error").textContent = "Choose at least one photo first.";
    return;
  }
  const form = new FormData();
  for (const file of chosenFiles) form.append("files", file, file.name);
  form.append("model_type", $("model-type").value);
  if ($("face-limit").value) form.append("face_limit", $("face-limit").value);
  form.append("texture", $("texture").value);
  $("start").disabled = true;
  try {
    const body = await (await api("/api/v1/upload/", { method: "POST", body: form })).json();
    showFileProblems({});
    followJob(body);
  } catch (error) {
    $("upload-error").textContent = `${error.message} (${error.detail ? error.detail.code : "network"})`;
    if (error.detail) showFileProblems(error.detail);
  } finally {
    $("start").disabled = false;
  }
}

/** Return (creating it) the result card of one file. */
function cardFor(fileId, filename) {
  let card = document.querySelector(`[data-file-id="${CSS.escape(fileId)}"]`);
  if (card) return card;
  card = document.createElement("li");
  card.className = "result";
  card.dataset.fileId = fileId;
  card.innerHTML = `<h3></h3>
    <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><span></span></div>
    <p class="state"></p><p class="error" role="alert"></p>
    <details><summary>Log</summary><pre></pre></details><div class="model"></div>`;
  card.querySelector("h3").textContent = filename;
  card.querySelector(".bar").setAttribute("aria-label", `Progress of ${filename}`);
  $("results").append(card);
  return card;
}

/** Show one file's state from a progress event. */
function showFile(job, fileId, file) {
  const card = cardFor(fileId, file.filename);
  const percent = Math.round(file.progress || 0);
  card.querySelector(".bar").setAttribute("aria-valuenow", String(percent));
  card.querySelector(".bar > span").style.width = `${percent}%`;
  card.querySelector(".state").textContent = `${file.status}, ${percent}%${file.message ? `: ${file.message}` : ""}`;
  card.dataset.status = file.status;
  if (file.error) {
    card.querySelector(".error").textContent = `${file.error.message} (${file.error.code})`;
  }
  if (file.status === "completed" && file.model_url && !card.dataset.shown) {
    card.dataset.shown = "yes";
    showModel(card, job, fileId, file).catch((error) => {
      card.querySelector(".error").textContent = `The model could not be shown: ${error.message}`;
    });
  }
}

/** Fetch a path as a blob URL (the key cannot ride on a plain link). */
async function blobUrl(path) {
  return URL.createObjectURL(await (await api(path)).blob());
}

/** Put the 3D viewer, the model's facts and its downloads into a file's card. */
async function showModel(card, job, fileId, file) {
  const listing = await (await api(`/api/v1/download/${job.job_id}/all`)).json();
  const name = decodeURIComponent(file.model_url.split("/").pop());
  const entry = listing.files.find((f) => f.filename === name) || {};
  const viewer = document.createElement("model-viewer");
  viewer.setAttribute("camera-controls", "");
  viewer.setAttribute("auto-rotate", "");
  viewer.setAttribute("touch-action", "pan-y");
  viewer.setAttribute("loading", "eager");
  viewer.setAttribute("alt", `3D model made from ${file.filename}`);
  if (entry.rendered_image) viewer.setAttribute("poster", await blobUrl(entry.rendered_image));
  const facts = document.createElement("p");
  facts.className = "facts";
  const faces = /(\d+) faces/.exec(file.message || "");
  facts.textContent = [faces ? `${faces[1]} faces` : null, entry.size ? humanSize(entry.size) : null]
    .filter(Boolean).join(", ");
  const downloads = document.createElement("div");
  downloads.className = "downloads";
  for (const [format, label] of FORMATS) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Download ${label}`;
    button.addEventListener("click", () => download(job.job_id, fileId, format, button));
    downloads.append(button);
  }
  card.querySelector(".model").replaceChildren(viewer, facts, downloads);
  viewer.src = await blobUrl(file.model_url);
}

/** Download one format of a model through a blob, named as the server names it. */
async function download(jobId, fileId, format, button) {
  button.disabled = true;
  try {
    const response = await api(`/api/v1/models/download/${jobId}?format=${format}&file_id=${fileId}`);
    const disposition = response.headers.get("Content-Disposition") || "";
    const named = /filename="?([^";]+)"?/.exec(disposition);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = named ? named[1] : `model.${format}`;
    link.click();
  } catch (error) {
    button.closest(".result").querySelector(".error").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

/** Follow a job's event stream to its terminal event, reconnecting with Last-Event-ID. */
async function followJob(job) {
  $("progress-section").hidden = false;
  $("results").replaceChildren();
  const line = $("job-line");
  line.textContent = `Job ${job.job_id}: ${job.total_files} file(s) uploaded`;
  let lastId = null;
  let retryMs = 3000;
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await api(`/api/v1/status/tasks/${job.task_id}/stream`, { headers });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { data: [] };
          for (const field of block.split("\n")) {
            const [name, ...rest] = field.split(":");
            const text = rest.join(":").replace(/^ /, "");
            if (name === "id") lastId = text;
            else if (name === "retry") retryMs = Number(text) || retryMs;
            else if (name === "data") event.data.push(text);
          }
          if (!event.data.length) continue;
          if (handleEvent(job, JSON.parse(event.data.join("\n")))) return;
        }
      }
    } catch (error) {
      if (error.detail) {
        line.textContent = `The job's progress cannot be followed: ${error.message}`;
        return;
      }
    }
    line.textContent = `Connection lost; reconnecting in ${Math.round(retryMs / 1000)} s`;
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

/** Apply one stream event; return true when it is the job's last. */
function handleEvent(job, event) {
  if (event.type === "log") {
    const card = document.querySelector(`[data-file-id="${CSS.escape(event.file_id)}"]`);
    if (card) card.querySelector("pre").textContent += `${event.message}\n`;
    return false;
  }
  if (event.files) {
    for (const [fileId, file] of Object.entries(event.files)) showFile(job, fileId, file);
  }
  const counts = `${event.completed_files ?? 0} of ${event.total_files ?? "?"} done`;
  $("job-line").textContent = `Job ${job.job_id}: ${event.status}, ${counts}`;
  return event.type === "completed" || event.type === "error";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("api-key").value = "";
  showKeyState();
});
$("forget-key").addEventListener("click", forgetKey);
$("files").addEventListener("change", (event) => showChosen(event.target.files));
$("upload-form").addEventListener("submit", startUpload);
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  showChosen(event.dataTransfer.files);
});
showKeyState();
