// A filterable list of (name, sha256) rows that stays responsive at any length: only the rows in
// view exist in the page (a virtual list); the rest is one tall spacer.
import { copyButton, el, name } from "./dom.js";

const ROW_HEIGHT = 32;
const VISIBLE = 15;
const OVERSCAN = 8;

export function subjectList(rows, { total, what }) {
  let shown = rows;
  const count = el("span", { className: "muted count" });
  const filter = el("input", {
    type: "search",
    className: "filter",
    placeholder: `Filter ${what} by name or digest`,
    "aria-label": `Filter ${what}`,
  });
  const spacer = el("div", { className: "spacer" });
  const viewport = el("div", { className: "viewport", role: "list", tabindex: "0" }, spacer);

  function describe() {
    const listed = total > rows.length ? ` (the first ${rows.length.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} are listed)` : "";
    const of = shown.length === rows.length ? "" : ` of ${rows.length.toLocaleString("en-US")}`;
    count.textContent = `${shown.length.toLocaleString("en-US")}${of} ${what}${listed}`;
  }

  function draw() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(shown.length, first + VISIBLE + 2 * OVERSCAN);
    const nodes = [];
    for (let index = first; index < last; index += 1) {
      const row = shown[index];
      const digest = `sha256:${row.sha256}`;
      const item = el("div", { className: "row", role: "listitem" },
        name(row.name), el("code", { className: "digest", title: digest, text: digest }), copyButton(digest, `the digest of ${row.name}`));
      item.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
      nodes.push(item);
    }
    spacer.replaceChildren(...nodes);
  }

  function apply() {
    const wanted = filter.value.trim().toLowerCase().replace(/^sha256:/, "");
    shown = wanted ? rows.filter((r) => r.name.toLowerCase().includes(wanted) || r.sha256.startsWith(wanted)) : rows;
    spacer.style.height = `${shown.length * ROW_HEIGHT}px`;
    viewport.style.height = `${Math.min(Math.max(shown.length, 1), VISIBLE) * ROW_HEIGHT + 2}px`;
    viewport.scrollTop = 0;
    describe();
    draw();
  }

  let pending = 0;
  viewport.addEventListener("scroll", () => {
    if (!pending) pending = requestAnimationFrame(() => { pending = 0; draw(); });
  });
  let typing = 0;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(apply, 80);
  });
  apply();
  return el("div", { className: "subjects" }, el("div", { className: "toolbar" }, filter, count), viewport);
}
