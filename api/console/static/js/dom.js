// Building the page with DOM APIs only. Every string becomes a text node or an
// attribute value, never markup: column names, labels and error messages from
// users and the API can hold anything, "<img onerror=...>" included.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function apply(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name === "class") {
      node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("p", {class: "x"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  apply(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element, built the same way. */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, attrs);
  append(node, children);
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

let uid = 0;
/** A fresh id for label/for and aria pairs. */
export function newId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control: the label's `for` names the control. */
export function field(label, control, hint) {
  const id = control.id || newId();
  control.id = id;
  const hintNode = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintNode);
}

/** A <select> with options given as [value, text] pairs or plain strings. */
export function select(options, attrs = {}) {
  const node = h("select", attrs);
  for (const option of options) {
    const [value, text] = Array.isArray(option) ? option : [option, option];
    node.append(h("option", { value }, text));
  }
  if (attrs.value !== undefined) node.value = attrs.value;
  return node;
}

/** A table from a header and rows of cells (strings or nodes). */
export function table(caption, headers, rows, attrs = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      caption ? h("caption", null, caption) : null,
      h("thead", null, h("tr", null, headers.map((name) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        null,
        rows.map((cells) => h("tr", null, cells.map((cell) => h("td", null, cell)))),
      ),
    ),
  );
}
