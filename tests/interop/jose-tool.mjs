// Drives the real `jose` library for rotagate's interop tests.
// Reads one JSON request on stdin, writes one JSON answer on stdout:
//   {"op":"sign","alg":"ES256","kid":"k1","key":{"pem":"-----BEGIN PRIVATE KEY-----..."} | {"secret":"..."},"claims":{...}}
//     -> {"token":"..."}
//   {"op":"verify","alg":"ES256","key":{"pem":"-----BEGIN PUBLIC KEY-----..."} | {"secret":"..."},"token":"...","now":1793491800}
//     -> {"header":{...},"claims":{...}}   (or {"error":"..."})
import * as jose from "jose";

const input = JSON.parse(await new Promise((resolve) => {
  let s = "";
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
}));

async function key(op, alg, k) {
  if (k.secret !== undefined) return new TextEncoder().encode(k.secret);
  return op === "sign" ? jose.importPKCS8(k.pem, alg) : jose.importSPKI(k.pem, alg);
}

try {
  const k = await key(input.op, input.alg, input.key);
  if (input.op === "sign") {
    const header = { alg: input.alg, typ: "JWT" };
    if (input.kid) header.kid = input.kid;
    const token = await new jose.SignJWT(input.claims).setProtectedHeader(header).sign(k);
    process.stdout.write(JSON.stringify({ token }));
  } else {
    const { payload, protectedHeader } = await jose.jwtVerify(input.token, k, {
      algorithms: [input.alg],
      currentDate: new Date(input.now * 1000),
    });
    process.stdout.write(JSON.stringify({ header: protectedHeader, claims: payload }));
  }
} catch (e) {
  process.stdout.write(JSON.stringify({ error: `${e.code || e.name}: ${e.message}` }));
}
