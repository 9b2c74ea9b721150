// The only way the tab builds the page: elements and text nodes, never HTML. File names, refs, key
// ids and server answers come from the pipeline and are untrusted, so they are only ever textContent.

const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value ?? "";
    else if (key === "onClick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

// A link only for http(s) addresses; anything else (javascript:, data:) stays text.
export function link(url, label) {
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== "https:" && parsed.protocol !== "http:")) {
    return el("span", { className: "value", text: label || url });
  }
  const anchor = el("a", { className: "value", target: "_blank", rel: "noopener noreferrer", text: label || url });
  anchor.href = parsed.href;
  return anchor;
}

// A name shown verbatim, isolated so that a right-to-left override inside cannot reorder the page
// around it, and flagged, since such a name can be made to read as another.
export function name(value, className = "name") {
  const shown = el("span", { className, dir: "ltr", text: value });
  if (!BIDI_CONTROLS.test(value)) return shown;
  return el("span", { className: "flagged" }, shown, el("span", {
    className: "badge warning",
    title: "This name holds bidirectional control characters: what it displays may not be what it is",
    text: "bidi",
  }));
}

export function copyButton(value, what) {
  const button = el("button", { type: "button", className: "copy", title: `Copy ${what}`, "aria-label": `Copy ${what}`, text: "Copy" });
  button.addEventListener("click", async () => {
    button.textContent = (await copy(value)) ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

async function copy(value) {
  try {
    await navigator.clipboard.writeText(value);
    return true;
  } catch {
    // The host's frame may not grant clipboard-write: the selection fallback still works there.
    const area = el("textarea", { readonly: "", className: "offscreen" });
    area.value = value;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }
}

// A two-column list of facts: [label, value node or string] pairs; empty values are left out.
export function facts(rows) {
  return el("dl", { className: "facts" }, rows
    .filter(([, value]) => value !== "" && value !== null && value !== undefined)
    .map(([label, value]) => [el("dt", { text: label }), el("dd", {}, typeof value === "string" ? el("span", { className: "value", text: value }) : value)]));
}

export function section(title, ...children) {
  return el("section", { className: "section" }, el("h3", { text: title }), ...children);
}
