// Drives the real Auth.js libraries for rotagate's interop tests: @auth/core (v5) and
// next-auth 4. Reads one JSON request on stdin, writes one JSON answer on stdout:
//   {"op":"v5-encode","secret":"…","salt":"authjs.session-token","token":{…},"maxAge":2592000} -> {"jwt":"…"}
//   {"op":"v5-decode","secret":["…"],"salt":"…","jwt":"…"}                                  -> {"payload":{…}|null}
//   {"op":"v4-encode","secret":"…","token":{…},"maxAge":2592000}                             -> {"jwt":"…"}
//   {"op":"v4-decode","secret":"…","jwt":"…"}                                                -> {"payload":{…}|null}
//   {"op":"v5-signout","secret":"…","origin":"https://…","cookie":"…"}                       -> {"status":302,"set_cookies":[…]}
// v5-signout runs @auth/core's own sign-out action (`Auth()` on POST /api/auth/signout,
// CSRF token fetched from /api/auth/csrf first, as the client does) on a request that
// carries `cookie`, and reports the response's status and Set-Cookie lines.
import { Auth } from "@auth/core";
import { encode as encodeV5, decode as decodeV5 } from "@auth/core/jwt";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { encode: encodeV4, decode: decodeV4 } = require("next-auth/jwt");

const input = JSON.parse(await new Promise((resolve) => {
  let s = "";
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
}));

try {
  let out;
  switch (input.op) {
    case "v5-encode":
      out = { jwt: await encodeV5({ token: input.token, secret: input.secret, salt: input.salt, maxAge: input.maxAge }) };
      break;
    case "v5-decode":
      out = { payload: await decodeV5({ token: input.jwt, secret: input.secret, salt: input.salt }) };
      break;
    case "v5-signout": {
      const config = { providers: [], secret: input.secret, trustHost: true, basePath: "/api/auth" };
      const csrf = await Auth(new Request(`${input.origin}/api/auth/csrf`), config);
      const { csrfToken } = await csrf.json();
      const csrfCookie = csrf.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
      const cookie = input.cookie ? `${csrfCookie}; ${input.cookie}` : csrfCookie;
      const res = await Auth(
        new Request(`${input.origin}/api/auth/signout`, {
          method: "POST",
          headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ csrfToken, callbackUrl: "/" }),
        }),
        config,
      );
      out = { status: res.status, location: res.headers.get("location"), set_cookies: res.headers.getSetCookie() };
      break;
    }
    case "v4-encode":
      out = { jwt: await encodeV4({ token: input.token, secret: input.secret, maxAge: input.maxAge }) };
      break;
    case "v4-decode":
      out = { payload: await decodeV4({ token: input.jwt, secret: input.secret }) };
      break;
    default:
      throw new Error(`unknown op ${input.op}`);
  }
  process.stdout.write(JSON.stringify(out));
} catch (e) {
  process.stdout.write(JSON.stringify({ error: `${e.name}: ${e.message}` }));
}
