"use strict";
// Renders /api/openapi.json as a list of routes and their parameters (no CDN, no Swagger UI).
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
fetch("/api/openapi.json", {credentials: "same-origin"}).then(r => r.json()).then(doc => {
  const main = document.getElementById("docs");
  main.replaceChildren();
  main.append(el("p", "Every request needs a token: Authorization: Bearer <token>, or the session cookie of a login. JSON by default; add ?format=csv for rows as CSV.", "muted"));
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", null, "card");
      const h = el("h2");
      h.append(el("span", method.toUpperCase() + " ", "method"), el("code", path));
      card.append(h, el("p", op.summary || ""));
      const params = op.parameters || [];
      if (params.length) {
        const table = el("table");
        const head = el("tr");
        ["parameter", "type", "description"].forEach(t => head.append(el("th", t)));
        table.append(head);
        for (const p of params) {
          const row = el("tr");
          const s = p.schema || {};
          const type = s.enum ? s.enum.join(" | ") : (s.type || (s.anyOf || []).map(a => a.type || a.format).filter(Boolean).join(" | "));
          row.append(el("td", p.name), el("td", type), el("td", p.description || ""));
          table.append(row);
        }
        card.append(table);
      }
      main.append(card);
    }
  }
});
