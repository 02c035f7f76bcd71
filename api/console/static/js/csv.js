// CSV as the service reads it (RFC 4180: comma-separated, "quoted" fields with
// "" for a quote, a header row), parsed and written in the browser so the
// console can offer the header's columns and take the target out of a test file.

/** Parse CSV text into rows of strings. */
export function parseCsv(text) {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte-order mark
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    if (quoted) {
      if (char === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 1;
        } else {
          quoted = false;
        }
      } else {
        field += char;
      }
    } else if (char === '"' && field === "") {
      quoted = true;
    } else if (char === ",") {
      row.push(field);
      field = "";
    } else if (char === "\n" || char === "\r") {
      if (char === "\r" && text[i + 1] === "\n") i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else {
      field += char;
    }
    i += 1;
  }
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  // Blank lines before the header carry nothing, nor do blank lines in a wider file
  // (its row would be ","). In a file of one column a blank line is a row whose one
  // cell is missing, as the service reads it (and pandas writes a missing value):
  // dropped here, the rows after it met other rows' predictions.
  const blank = (r) => r.length === 1 && r[0] === "";
  while (rows.length && blank(rows[0])) rows.shift();
  if (rows.length && rows[0].length === 1) return rows;
  return rows.filter((r) => !blank(r));
}

function quote(value) {
  const text = String(value ?? "");
  return /[",\r\n]/.test(text) || /^\s|\s$/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Rows of strings back to CSV text. */
export function writeCsv(rows) {
  return rows.map((row) => row.map(quote).join(",")).join("\n") + "\n";
}

/** A parsed table: {columns, rows}; throws a readable Error when it is not one. */
export function readTable(text, name) {
  const [columns, ...rows] = parseCsv(text);
  if (!columns || !columns.length) throw new Error(`${name} is empty: it needs a header row.`);
  if (!rows.length) throw new Error(`${name} has a header but no rows.`);
  return { columns, rows };
}

/** The table without one column, and that column's values. */
export function splitColumn(table, column) {
  const index = table.columns.indexOf(column);
  if (index === -1) return { table, values: null };
  return {
    table: {
      columns: table.columns.filter((_, i) => i !== index),
      rows: table.rows.map((row) => row.filter((_, i) => i !== index)),
    },
    values: table.rows.map((row) => row[index] ?? ""),
  };
}
