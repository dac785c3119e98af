// A real Node.js gRPC client for Sluice's end-to-end tests (tests/e2e/test_e2e.py).
//
//   node chat.mjs TARGET ROUTE [PROMPT]      (an empty TARGET means $SLUICE_TARGET)
//
// With $SLUICE_CA_FILE it connects over TLS, verifying the server with that
// CA, and presents $SLUICE_CERT_FILE / $SLUICE_KEY_FILE when they are set.
//
// Loads ../../../protos at run time (no generated code), calls
// sluice.v1.GatewayService/Chat once and prints one JSON line per response
// message, {"message": {...}, "at_ms": ms since the call began}, then one
// {"status": {...}} line with the final code, details and the
// grpc-status-details-bin trailer (base64, or null). It exits 0 whenever it
// got a status, whatever the code; anything else exits non-zero.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const DEADLINE_MS = 10_000;

const [targetArg, route, prompt = "Say hello."] = process.argv.slice(2);
const target = targetArg || process.env.SLUICE_TARGET;
if (!target || !route) {
  console.error("usage: node chat.mjs TARGET ROUTE [PROMPT]   (or set SLUICE_TARGET)");
  process.exit(2);
}

const definition = protoLoader.loadSync("sluice/v1/gateway.proto", {
  includeDirs: [fileURLToPath(new URL("../../../protos", import.meta.url))],
  keepCase: true, // proto field names, which protobuf JSON parsers accept
  enums: String,
  longs: String,
});
const { GatewayService } = grpc.loadPackageDefinition(definition).sluice.v1;
const pemOf = (variable) => (process.env[variable] ? readFileSync(process.env[variable]) : null);
const credentials = process.env.SLUICE_CA_FILE
  ? grpc.credentials.createSsl(
      pemOf("SLUICE_CA_FILE"),
      pemOf("SLUICE_KEY_FILE"),
      pemOf("SLUICE_CERT_FILE"),
    )
  : grpc.credentials.createInsecure();
const client = new GatewayService(target, credentials);

const request = { route, messages: [{ role: "ROLE_USER", parts: [{ text: prompt }] }] };
const began = performance.now();
const call = client.Chat(request, { deadline: Date.now() + DEADLINE_MS });
// proto-loader gives a google.protobuf.Duration as {seconds, nanos}; protobuf
// JSON (what the Python side parses) writes it as "<seconds>s".
const durationAsJson = (key, value) =>
  key === "duration" && value !== null && typeof value === "object"
    ? `${Number(value.seconds ?? 0) + (value.nanos ?? 0) / 1e9}s`
    : value;
const print = (line) => process.stdout.write(JSON.stringify(line, durationAsJson) + "\n");

call.on("data", (message) => print({ message, at_ms: performance.now() - began }));
call.on("error", () => {}); // the final status arrives on "status" as well
call.on("status", ({ code, details, metadata }) => {
  const [statusDetails] = metadata.get("grpc-status-details-bin");
  print({
    status: { code, details, status_details_bin: statusDetails?.toString("base64") ?? null },
  });
  client.close();
});
