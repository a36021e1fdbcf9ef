// Generates the checked-in differential corpus of matcher decisions
// (tests/data/matcher_corpus.json) with the real path-to-regexp@6.3.0 and Next's
// wrapping of middleware matchers, and the fuzzer's seeds from it
// (fuzz/corpus/{matcher_compile,regex_differential}/). Run once when the sources or
// paths below change, and commit the output:
//
//   npm ci --prefix tests/interop && node tests/interop/matcher-corpus.mjs
//
// tests/matcher_differential.rs compares rotagate's matcher with every decision.

import { parse, tokensToRegexp } from "path-to-regexp";
import { writeFileSync, mkdirSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// Next 16.4.6, dist/build/analysis/get-page-static-info.js (getMiddlewareMatchers)
// and dist/lib/try-to-parse-path.js (tryToParsePath, safeTokensToRegexp), with
// dist/lib/route-pattern-normalizer.js (normalizeTokensForRegexp): the same steps,
// written out here because Next ships them only inside its 130 MB package.
const APP_ROUTE_TRANSPORT_SUFFIX_MATCHER = "\\.rsc|\\.segments/.+\\.segment\\.rsc";
const ROOT_APP_ROUTE_TRANSPORT_MATCHER = `/?index(?:${APP_ROUTE_TRANSPORT_SUFFIX_MATCHER})`;
const MIDDLEWARE_DATA_SUFFIX_MATCHER = `\\.json|${APP_ROUTE_TRANSPORT_SUFFIX_MATCHER}`;
const OPTIONAL_MIDDLEWARE_NEXT_DATA_PREFIX = "/:nextData(_next/data/[^/]{1,})?";

function wrap(source, { basePath, locales }, locale = true) {
  const isRoot = source === "/";
  const i18n = locales.length > 0;
  if (i18n && locale !== false) {
    source = `/:nextInternalLocale((?!_next/)[^/.]{1,})${isRoot ? "" : source}`;
  }
  const sourceSuffix = isRoot
    ? `(${i18n ? "|\\.json|" : ""}/?index|/?index\\.json|${ROOT_APP_ROUTE_TRANSPORT_MATCHER})?`
    : `{(${MIDDLEWARE_DATA_SUFFIX_MATCHER})}?`;
  source = `${OPTIONAL_MIDDLEWARE_NEXT_DATA_PREFIX}${source}${sourceSuffix}`;
  if (basePath) source = `${basePath}${source}`;
  return source;
}

function normalizeTokensForRegexp(tokens) {
  return tokens.map((t) =>
    typeof t === "object" &&
    (t.modifier === "*" || t.modifier === "+") &&
    t.prefix === "" &&
    t.suffix === ""
      ? { ...t, prefix: "/" }
      : t,
  );
}

function tryToParsePath(route) {
  const tokens = parse(route);
  try {
    return tokensToRegexp(tokens).source;
  } catch {
    return tokensToRegexp(normalizeTokensForRegexp(tokens)).source;
  }
}

/** The regex Next compiles a matcher source to, or the error it refuses it with. */
function compile(source, opts) {
  // Next's SourceSchema: a string starting with "/" of at most 4096 characters
  if (!source.startsWith("/")) return { error: "`source` does not start with /" };
  if (source.length > 4096) return { error: "exceeds max built length" };
  try {
    // Next checks the source on its own before wrapping (checkCustomRoutes)
    parse(source);
    return { regexp: tryToParsePath(wrap(source, opts)) };
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

// Sources: Next's middleware docs, path-to-regexp 6's README and tests, and the
// shapes that matter at an edge (negative lookaheads, custom groups, optional and
// repeated params, unicode classes).
const SOURCES = [
  "/",
  "/about",
  "/about/:path*",
  "/about/:path+",
  "/about/:path?",
  "/dashboard/:path*",
  "/premium/:path*",
  "/post/:id(\\d+)",
  "/post/:id(\\d+)/edit",
  "/user/:name(\\w+)",
  "/space/:s(\\s+)",
  "/word\\b",
  "/(.*)",
  "/:path*",
  "/((?!api|_next/static|_next/image|favicon.ico).*)",
  "/((?!_next|.*\\..*).*)",
  "/((?!api|_next|_vercel|.*\\..*).*)",
  "/(uk|en)/:path*",
  "/files/:file.:ext",
  "/shop/:a-:b",
  "/:locale(en|de)/about",
  "/api/:version(v1|v2)/:rest*",
  "/blog{/:slug}?",
  "/a{-:b}*",
  "/docs/(.*)",
  "/:a/:b",
  "/icons/:name.svg",
  "/x/(.)",
  "/x/(.+)",
  "/(premium|paid)/:path*",
  // refused by path-to-regexp 6.3.0 (or accepted by Next's fallback)
  "/:id*-x",
  "/x-:slug*",
  "/(foo)*",
  "/:a:b",
  "/((?!a)",
  "/(?:x)",
  "/:",
  "/\\",
  "no-slash",
];

const PATHS = [
  "/",
  "/index",
  "/index.json",
  "/index.rsc",
  "/index.segments/x.segment.rsc",
  "/about",
  "/about/",
  "/about/a",
  "/about/a/b",
  "/about.json",
  "/about.rsc",
  "/about/a.rsc",
  "/about.segments/a/b.segment.rsc",
  "/aboutx",
  "/About",
  "/dashboard",
  "/dashboard/x",
  "/premium",
  "/premium/",
  "/premium/x",
  "/premium/x/y.json",
  "/paid/1",
  "/post/123",
  "/post/123/edit",
  "/post/abc",
  "/post/١٢٣",
  "/post/１２",
  "/user/bob",
  "/user/bob_1",
  "/user/été",
  "/space/ ",
  "/space/\u00a0",
  "/space/\u2003",
  "/word",
  "/x/a",
  "/x/\u2028",
  "/x/\r",
  "/x/ab",
  "/api",
  "/api/users",
  "/apiary",
  "/api/v1/things",
  "/api/v3/things",
  "/_next/static/chunk.js",
  "/_next/image",
  "/_next/data/build-1/about.json",
  "/_next/data/build-1/premium/x.json",
  "/_next/data/build-1/index.json",
  "/favicon.ico",
  "/en",
  "/en/about",
  "/de/premium/x",
  "/uk/a",
  "/fr/about",
  "/files/report.pdf",
  "/files/report",
  "/shop/a-b",
  "/icons/star.svg",
  "/blog",
  "/blog/hello",
  "/a-b-c",
  "/a",
  "/a/b",
  "/docs",
  "/docs/",
  "/docs/about",
  "/docs/premium/x",
  "/docs/_next/data/b/about.json",
  "/docs/en/about",
  "/x/y#z",
  "/x/y?",
  "/about//",
  "/pré/mium",
];

const OPTIONS = [
  { basePath: "", locales: [] },
  { basePath: "/docs", locales: [] },
  { basePath: "", locales: ["en", "de"] },
];

const cases = [];
for (const opts of OPTIONS) {
  for (const source of SOURCES) {
    const c = compile(source, opts);
    if (c.error !== undefined) {
      cases.push({ source, ...opts, error: c.error });
      continue;
    }
    const re = new RegExp(c.regexp);
    const matches = PATHS.filter((p) => re.test(p));
    const misses = PATHS.filter((p) => !re.test(p));
    cases.push({ source, ...opts, regexp: c.regexp, matches, misses });
  }
}

mkdirSync(join(root, "tests", "data"), { recursive: true });
writeFileSync(
  join(root, "tests", "data", "matcher_corpus.json"),
  JSON.stringify(
    {
      generated_by: "tests/interop/matcher-corpus.mjs",
      path_to_regexp: "6.3.0",
      next_wrapping: "16.4.6 getMiddlewareMatchers",
      cases,
    },
    null,
    1,
  ) + "\n",
);

// fuzzer seeds: `source\tpath`, one file per source and a path it matches
for (const target of ["matcher_compile", "regex_differential"]) {
  const dir = join(root, "fuzz", "corpus", target);
  mkdirSync(dir, { recursive: true });
  for (const c of cases.filter((c) => c.basePath === "" && c.locales.length === 0)) {
    const seed = `${c.source}\t${(c.matches && c.matches[0]) || "/"}`;
    const name = "corpus-" + createHash("sha1").update(seed).digest("hex").slice(0, 12);
    writeFileSync(join(dir, name), seed);
  }
}
const n = cases.reduce((a, c) => a + (c.error ? 1 : PATHS.length), 0);
console.log(`${cases.length} sources × options, ${n} decisions`);
