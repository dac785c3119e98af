// The paced upstream: the bench's OpenAI chat stream with its tokens spaced in
// time, as a real model sends them (nginx can only send a file at once).
//
//   node bench/paced_upstream.js PORT BODY_JSON SPACING_MS
//
// BODY_JSON holds {"head": ..., "tokens": [...], "tail": ...}: the role chunk,
// one SSE event a token, and the finish and usage chunks with `data: [DONE]`.
// Every POST gets the head and the first token at once, token i at
// start + i * SPACING_MS (scheduled from the start, so timer lateness does not
// add up), the tail with the last one. Plain `http`, no packages: one event
// loop serves thousands of streams at a small fraction of a core.
//
// GET /stats answers {"active", "peak", "served", "late", "max_late_ms"}: the
// streams open now and at most at once, the streams served, and the tokens
// sent more than LATE_MS after their due time (the upstream's own lateness:
// when it is not ~0, the upstream, not the gateway, spaced the tokens).
"use strict";

const fs = require("fs");
const http = require("http");

const LATE_MS = 5;
const [port, bodyPath, spacingText] = process.argv.slice(2);
const spacing = Number(spacingText);
const body = JSON.parse(fs.readFileSync(bodyPath, "utf8"));
const head = Buffer.from(body.head);
const tokens = body.tokens.map((token) => Buffer.from(token));
const tail = Buffer.from(body.tail);
const length = head.length + tail.length + tokens.reduce((sum, t) => sum + t.length, 0);
const stats = { active: 0, peak: 0, served: 0, late: 0, max_late_ms: 0 };

function stream(response) {
  const start = performance.now();
  let next = 1;
  let timer = null;
  stats.active += 1;
  stats.peak = Math.max(stats.peak, stats.active);
  response.writeHead(200, {
    "content-type": "text/event-stream",
    "content-length": String(length),
  });
  response.write(Buffer.concat([head, tokens[0]]));
  const finish = () => {
    stats.active -= 1;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  // A gateway that cancels closes the connection: stop sending at once.
  response.on("close", () => {
    if (timer !== null) finish();
  });
  const send = () => {
    const late = performance.now() - (start + next * spacing);
    if (late > LATE_MS) stats.late += 1;
    stats.max_late_ms = Math.max(stats.max_late_ms, late);
    if (next === tokens.length - 1) {
      timer = null;
      stats.active -= 1;
      stats.served += 1;
      response.end(Buffer.concat([tokens[next], tail]));
      return;
    }
    response.write(tokens[next]);
    next += 1;
    timer = setTimeout(send, start + next * spacing - performance.now());
  };
  timer = setTimeout(send, spacing);
}

const server = http.createServer((request, response) => {
  if (request.method === "GET" && request.url === "/stats") {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify(stats));
    return;
  }
  request.resume(); // the request body is not needed, only its end
  request.on("end", () => stream(response));
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.requestTimeout = 0;
// Thousands of connections may arrive at once (the RSS row): a deep backlog.
server.listen(Number(port), "127.0.0.1", 4096);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
