// Tollgate's dashboard: the little each page does in the browser. Every
// request goes to the REST API through /app/api, as the signed-in session,
// with the page's CSRF token.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

/** A request of the API; resolves to {status, body} (body parsed as JSON when it is). */
async function api(method, path, body, extraHeaders) {
  const headers = { "X-CSRF-Token": csrf(), ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/app/api" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) {
    // The session ended: sign in again rather than act on nothing.
    window.location = "/sign-in";
  }
  const text = await response.text();
  if (response.redirected || !(response.headers.get("Content-Type") || "").includes("json")) {
    return { status: response.ok ? 502 : response.status, body: { error: { message: `unexpected answer from the server (${response.status})` } } };
  }
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (_) {
    parsed = { error: { message: text } };
  }
  return { status: response.status, body: parsed };
}

function errorOf(answer) {
  return (answer.body && answer.body.error && answer.body.error.message) || `the server answered ${answer.status}`;
}

function showError(element, message) {
  if (!element) return;
  element.textContent = message;
  element.hidden = !message;
}

function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// ---- the pipeline board: drag a deal to move it ----

function setUpBoard(board) {
  const error = document.getElementById("board-error");
  let dragged = null;
  board.addEventListener("dragstart", (event) => {
    const deal = event.target.closest(".deal");
    if (!deal) return;
    dragged = deal;
    deal.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", deal.dataset.deal);
  });
  board.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
  });
  board.addEventListener("dragover", (event) => {
    if (event.target.closest(".column")) event.preventDefault();
  });
  board.addEventListener("drop", async (event) => {
    const column = event.target.closest(".column");
    if (!column || !dragged) return;
    event.preventDefault();
    const list = column.querySelector(".deals");
    // The position is where the drop landed among the column's other deals.
    const others = Array.from(list.querySelectorAll(".deal")).filter((deal) => deal !== dragged);
    let position = others.length;
    for (let index = 0; index < others.length; index++) {
      const box = others[index].getBoundingClientRect();
      if (event.clientY < box.top + box.height / 2) {
        position = index;
        break;
      }
    }
    const deal = dragged;
    const from = deal.parentNode;
    const nextBefore = deal.nextSibling;
    list.insertBefore(deal, others[position] || null);
    recount(board);
    const answer = await api(
      "POST",
      `/deals/${deal.dataset.deal}/move`,
      { stage: Number(column.dataset.stage), position },
      { "Idempotency-Key": "board-" + randomKey() },
    );
    if (answer.status >= 400) {
      showError(error, `The deal did not move: ${errorOf(answer)}`);
      from.insertBefore(deal, nextBefore);
      recount(board);
    } else {
      showError(error, "");
      board.dataset.moves = String(Number(board.dataset.moves || 0) + 1);
    }
  });
}

function recount(board) {
  for (const column of board.querySelectorAll(".column")) {
    column.querySelector(".count").textContent = column.querySelectorAll(".deal").length;
  }
}

// ---- CSV import: map the columns, then send the rows in chunks ----

/** Splits CSV text into records (each its raw text and the line it starts on), minding quotes. */
function csvRecords(text) {
  const records = [];
  let start = 0;
  let line = 1;
  let startLine = 1;
  let quoted = false;
  for (let index = 0; index < text.length; index++) {
    const c = text[index];
    const previous = index === 0 ? "\n" : text[index - 1];
    // As the csv crate reads it: a quote opens quoting only at a field's
    // start, and inside quotes "" is a quote.
    if (c === '"' && (quoted || previous === "," || previous === "\n" || previous === "\r")) quoted = !quoted;
    else if (c === "\n") {
      if (!quoted) {
        const raw = text.slice(start, index).replace(/\r$/, "");
        if (raw.length > 0) records.push({ raw, line: startLine });
        start = index + 1;
        startLine = line + 1;
      }
      line++;
    }
  }
  const rest = text.slice(start).replace(/\r$/, "");
  if (rest.length > 0) records.push({ raw: rest, line: startLine });
  return records;
}

/** The fields of one CSV record. */
function csvFields(raw) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let index = 0; index < raw.length; index++) {
    const c = raw[index];
    if (quoted) {
      if (c === '"' && raw[index + 1] === '"') {
        field += '"';
        index++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === "") quoted = true;
    else if (c === ",") {
      fields.push(field);
      field = "";
    } else field += c;
  }
  fields.push(field);
  return fields;
}

const IMPORT_CHUNK_ROWS = 1000;

function setUpImport(box) {
  const fileInput = document.getElementById("csv-file");
  const fileError = document.getElementById("file-error");
  const mappingBox = document.getElementById("mapping");
  const rowsBody = document.getElementById("mapping-rows");
  let records = [];
  let header = [];

  fileInput.addEventListener("change", async () => {
    showError(fileError, "");
    mappingBox.hidden = true;
    document.getElementById("import-report").hidden = true;
    const file = fileInput.files[0];
    if (!file) return;
    const text = await file.text();
    records = csvRecords(text);
    if (records.length < 2) {
      showError(fileError, "This file has no rows below its header.");
      return;
    }
    header = csvFields(records[0].raw);
    const answer = await api("POST", "/leads/import/mapping", { columns: header });
    if (answer.status >= 400) {
      showError(fileError, errorOf(answer));
      return;
    }
    const first = csvFields(records[1].raw);
    rowsBody.replaceChildren();
    header.forEach((column, index) => {
      const select = el("select", { "data-column": column, "aria-label": `Where ${column} goes` });
      const targets = answer.body.targets.slice();
      const custom = "custom." + column.trim().toLowerCase().replace(/[^a-z0-9]+/g, "_");
      if (!targets.includes(custom)) targets.push(custom);
      for (const target of targets) {
        const option = el("option", { value: target, text: target === "ignore" ? "nowhere (ignore)" : target });
        if (answer.body.mapping[column] === target) option.selected = true;
        select.append(option);
      }
      rowsBody.append(el("tr", {}, el("td", { text: column }), el("td", { text: first[index] || "" }), el("td", {}, select)));
    });
    mappingBox.hidden = false;
  });

  document.getElementById("start-import").addEventListener("click", async () => {
    const mapping = {};
    for (const select of rowsBody.querySelectorAll("select")) mapping[select.dataset.column] = select.value;
    const tags = document
      .getElementById("import-tags")
      .value.split(",")
      .map((tag) => tag.trim())
      .filter((tag) => tag);
    const rows = records.slice(1);
    const headerLines = records[0].raw.split("\n").length;
    const progress = document.getElementById("import-progress");
    const status = document.getElementById("import-status");
    document.getElementById("progress-box").hidden = false;
    mappingBox.hidden = true;
    const total = { rows: 0, created: 0, updated: 0, skipped: 0, skips: [] };
    for (let offset = 0; offset < rows.length; offset += IMPORT_CHUNK_ROWS) {
      const chunk = rows.slice(offset, offset + IMPORT_CHUNK_ROWS);
      const csv = [records[0].raw, ...chunk.map((record) => record.raw)].join("\n") + "\n";
      // Where each row starts in the chunk, to give skips the file's lines.
      const starts = [];
      let at = headerLines + 1;
      for (const record of chunk) {
        starts.push(at);
        at += record.raw.split("\n").length;
      }
      status.textContent = `Importing rows ${offset + 1} to ${offset + chunk.length} of ${rows.length}…`;
      const answer = await api("POST", "/leads/import", { csv, mapping, tags });
      if (answer.status >= 400) {
        status.textContent = `Stopped after ${offset} rows: ${errorOf(answer)}`;
        break;
      }
      const report = answer.body;
      total.rows += report.rows;
      total.created += report.created;
      total.updated += report.updated;
      total.skipped += report.skipped;
      for (const skip of report.skips) {
        // The chunk's line, back to the file's (blank lines were left out of the chunk).
        let index = starts.length - 1;
        while (index > 0 && starts[index] > skip.line) index--;
        const line = chunk[index].line + (skip.line - starts[index]);
        total.skips.push({ line, reason: skip.reason });
      }
      progress.value = Math.round(((offset + chunk.length) / rows.length) * 100);
    }
    if (progress.value === 100) status.textContent = `Imported ${rows.length} rows.`;
    document.getElementById("import-summary").textContent =
      `${total.rows} rows: ${total.created} created, ${total.updated} updated, ${total.skipped} skipped.`;
    const skips = document.getElementById("import-skips");
    skips.replaceChildren(...total.skips.slice(0, 200).map((skip) => el("li", { text: `line ${skip.line}: ${skip.reason}` })));
    document.getElementById("import-report").hidden = false;
  });
}

// ---- the sequence editor ----

const STEP_KINDS = {
  email: "Email",
  linkedin_connect: "LinkedIn connection request",
  linkedin_message: "LinkedIn message",
  message: "Message",
  task: "Task",
  wait: "Wait",
  condition: "Condition",
};
const SENDING = ["email", "linkedin_connect", "linkedin_message", "message"];
const DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function newStep(kind, mailboxes) {
  if (SENDING.includes(kind)) {
    const variant = { body: "Hi {{ lead.first_name }}," };
    if (kind === "email") variant.subject = "Hello {{ lead.first_name }}";
    return { kind, mailbox: mailboxes.length ? mailboxes[0].id : 0, variants: [variant] };
  }
  if (kind === "task") return { kind, title: "Call {{ lead.first_name }}", task: "call" };
  if (kind === "wait") return { kind, business_days: 2 };
  return { kind, if: { engaged: "opened" }, else: "end" };
}

function labelled(label, input) {
  const id = "f-" + randomKey().slice(0, 8);
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
}

function setUpEditor(box) {
  const sequence = JSON.parse(box.dataset.sequence);
  const mailboxes = JSON.parse(box.dataset.mailboxes || "[]");
  const editable = box.dataset.editable === "yes";
  const isNew = !sequence.id;
  const steps = (sequence.steps || []).map((step) => {
    const copy = { ...step };
    delete copy.id;
    delete copy.number;
    return copy;
  });
  const list = document.getElementById("steps");
  const fields = {
    name: document.getElementById("seq-name"),
    zone: document.getElementById("seq-zone"),
    start: document.getElementById("seq-start"),
    end: document.getElementById("seq-end"),
    tracking: document.getElementById("seq-tracking"),
    active: document.getElementById("seq-active"),
  };
  fields.name.value = sequence.name || "";
  fields.zone.value = sequence.time_zone || "UTC";
  fields.start.value = (sequence.window && sequence.window.start) || "09:00";
  fields.end.value = (sequence.window && sequence.window.end) || "17:00";
  fields.tracking.checked = !!sequence.tracking;
  fields.active.checked = sequence.status === "active";
  for (const input of Object.values(fields)) input.disabled = !editable;

  function render() {
    list.replaceChildren();
    steps.forEach((step, index) => list.append(stepCard(step, index)));
  }

  function stepCard(step, index) {
    const card = el("li", { class: "step", "data-kind": step.kind });
    const heading = el("div", { class: "step-head" }, el("strong", { text: `${index + 1}. ${STEP_KINDS[step.kind] || step.kind}` }));
    if (editable) {
      const up = el("button", { type: "button", class: "secondary small", text: "↑", "aria-label": "Move up", disabled: index === 0 });
      up.onclick = () => {
        [steps[index - 1], steps[index]] = [steps[index], steps[index - 1]];
        render();
      };
      const remove = el("button", { type: "button", class: "secondary small", text: "Remove" });
      remove.onclick = () => {
        steps.splice(index, 1);
        render();
      };
      heading.append(up, remove);
    }
    card.append(heading, el("p", { class: "field-error step-error", role: "alert", hidden: true }));
    const bind = (input, get, set) => {
      input.value = get();
      input.disabled = !editable;
      input.addEventListener("input", () => set(input.value));
      return input;
    };
    if (SENDING.includes(step.kind)) {
      const select = el("select");
      for (const mailbox of mailboxes) select.append(el("option", { value: mailbox.id, text: `${mailbox.name || mailbox.address} (${mailbox.plugin})` }));
      card.append(labelled("Mailbox", bind(select, () => step.mailbox, (value) => (step.mailbox = Number(value)))));
      step.variants.forEach((variant, number) => {
        const group = el("fieldset", { class: "variant" }, el("legend", { text: `Variant ${String.fromCharCode(65 + number)}` }));
        if (step.kind === "email") {
          group.append(labelled("Subject", bind(el("input"), () => variant.subject || "", (value) => (variant.subject = value))));
        }
        group.append(labelled("Body (a template: {{ lead.first_name }}, {{ lead.company }}…)", bind(el("textarea", { rows: 4 }), () => variant.body || "", (value) => (variant.body = value))));
        group.append(labelled("Weight", bind(el("input", { inputmode: "numeric", size: 3 }), () => variant.weight || 1, (value) => (variant.weight = Number(value)))));
        card.append(group);
      });
      if (editable) {
        const add = el("button", { type: "button", class: "secondary small", text: "Add an A/B variant" });
        add.onclick = () => {
          step.variants.push({ ...step.variants[0] });
          render();
        };
        card.append(add);
      }
    } else if (step.kind === "task") {
      card.append(labelled("Title", bind(el("input"), () => step.title, (value) => (step.title = value))));
      const kind = el("select");
      for (const name of ["call", "email", "linkedin", "todo"]) kind.append(el("option", { value: name, text: name }));
      card.append(labelled("Kind", bind(kind, () => step.task || "call", (value) => (step.task = value))));
    } else if (step.kind === "wait") {
      card.append(labelled("Business days", bind(el("input", { inputmode: "numeric", size: 3 }), () => step.business_days, (value) => (step.business_days = Number(value)))));
    } else if (step.kind === "condition") {
      const test = el("select");
      for (const name of ["opened", "clicked"]) test.append(el("option", { value: name, text: `the lead ${name} an earlier step` }));
      card.append(labelled("If", bind(test, () => (step.if && step.if.engaged) || "opened", (value) => (step.if = { engaged: value }))));
      const goto = (value) => (value === "" ? undefined : value === "end" ? "end" : Number(value));
      card.append(labelled("Then go to step (empty: the next)", bind(el("input", { size: 4 }), () => step.then ?? "", (value) => (step.then = goto(value)))));
      card.append(labelled("Else go to step (or end)", bind(el("input", { size: 4 }), () => step.else ?? "", (value) => (step.else = goto(value)))));
    }
    return card;
  }

  render();
  if (!editable) return;
  document.getElementById("add-step").onclick = () => {
    steps.push(newStep(document.getElementById("new-step-kind").value, mailboxes));
    render();
  };
  const save = document.getElementById("save-sequence");
  save.onclick = async () => {
    if (save.disabled) return;
    save.disabled = true;
    try {
      await saveSequence();
    } finally {
      save.disabled = false;
    }
  };
  async function saveSequence() {
    const error = document.getElementById("editor-error");
    const status = document.getElementById("editor-status");
    showError(error, "");
    for (const node of list.querySelectorAll(".step-error")) showError(node, "");
    const body = {
      name: fields.name.value,
      time_zone: fields.zone.value,
      window: { start: fields.start.value, end: fields.end.value, days: (sequence.window && sequence.window.days) || DAY_NAMES.slice(0, 5) },
      tracking: fields.tracking.checked,
      active: fields.active.checked,
      steps,
    };
    const answer = isNew ? await api("POST", "/sequences", body) : await api("PUT", `/sequences/${sequence.id}`, body);
    if (answer.status >= 400) {
      const message = errorOf(answer);
      // "steps[2]..." or "step 3: ..." names the step; show it there.
      const match = message.match(/steps?\[(\d+)\]|step (\d+)/);
      const index = match ? (match[1] !== undefined ? Number(match[1]) : Number(match[2]) - 1) : -1;
      const target = index >= 0 ? list.querySelectorAll(".step-error")[index] : null;
      showError(target || error, message);
      return;
    }
    if (isNew) {
      window.location = `/app/sequences/${answer.body.sequence.id}`;
      return;
    }
    status.textContent = `Saved as version ${answer.body.sequence.version}.`;
  }
}

// ---- plugins: enable with settings, disable, install and upgrade ----

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setUpPlugins() {
  for (const form of document.querySelectorAll(".enable-form")) {
    const error = form.querySelector(".field-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const settings = {};
      for (const input of form.querySelectorAll("input[name]")) if (input.value !== "") settings[input.name] = input.value;
      const answer = await api("PUT", `/plugins/${form.dataset.plugin}/enablement`, { settings });
      if (answer.status >= 400) showError(error, errorOf(answer));
      else window.location.reload();
    });
    const disable = form.querySelector(".disable-plugin");
    if (disable)
      disable.addEventListener("click", async () => {
        const answer = await api("DELETE", `/plugins/${form.dataset.plugin}/enablement`);
        if (answer.status >= 400) showError(error, errorOf(answer));
        else window.location.reload();
      });
  }
  for (const form of document.querySelectorAll(".install-form, .upgrade-form")) {
    const error = form.querySelector(".field-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const component = form.querySelector('input[name="component"]').files[0];
      const manifest = form.querySelector('input[name="manifest"]').files[0];
      if (!component || !manifest) {
        showError(error, "Choose the component (.wasm) and its manifest (.toml).");
        return;
      }
      const approved = form.querySelector('input[name="approved_hosts"]').value.split(",").map((host) => host.trim()).filter((host) => host);
      const body = { manifest: await manifest.text(), wasm_base64: await fileBase64(component), approved_hosts: approved };
      const path = form.dataset.plugin ? `/plugins/${form.dataset.plugin}/versions` : "/plugins";
      const answer = await api("POST", path, body);
      if (answer.status >= 400) showError(error, errorOf(answer));
      else window.location.reload();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  // A form sent once is not sent again by a second click while it loads.
  for (const form of document.querySelectorAll('form[method="post"]')) {
    form.addEventListener("submit", () => {
      for (const button of form.querySelectorAll('button[type="submit"]')) button.disabled = true;
    });
  }
  const board = document.getElementById("board");
  if (board) setUpBoard(board);
  const importBox = document.getElementById("import");
  if (importBox) setUpImport(importBox);
  const editor = document.getElementById("editor");
  if (editor) setUpEditor(editor);
  setUpPlugins();
});
